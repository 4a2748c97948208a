"""Edge module ``thermostat_reader``: the bridge between the thermostats' MQTT broker and edgeHub.

- Subscribes to ``{prefix}/+/telemetry`` on the local broker (TLS via ``THERMOLOG_MQTT_URL=mqtts://...`` and
  ``THERMOLOG_MQTT_CA_FILE``), validates each reading with ``thermolog.contract`` and sends it to output
  ``telemetry`` as UTF-8 JSON with the thermostat id as application property ``device_id``.
- Direct method ``setTargetTemp`` ``{"device_id": "...", "target_temp": 21.5}`` (optional ``issued_by`` and
  ``request_id``, which the IoT Hub transport sets so one id names the command end to end): validated like every command
  (``thermolog.commands``), published as ``cmd``; answers 200 with the device's ack, 400 for an invalid request,
  504 when the device does not answer within ``THERMOLOG_COMMAND_TIMEOUT_S``.
- The original edge module's direct methods too: ``set`` (payload ``{"target_temp": 22}``), ``increase`` and
  ``decrease`` (±1 °C from the target in the device's latest reading); ``device_id`` may be left out while the
  module has seen readings from one thermostat only, as in the original single-device setup.
- Twin desired properties ``interval_s``, ``topic_prefix``, ``setpoint_min_c``, ``setpoint_max_c`` and
  ``setpoint_step_c`` change the running module; the values in force are reported back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from azure.iot.device import IoTHubModuleClient, MethodRequest, MethodResponse
from pydantic import ValidationError

from edge_modules import common
from thermolog import commands, contract
from thermolog.mqttclient import connect, make_client
from thermolog.settings import Settings, get_settings

log = logging.getLogger("edge_modules.thermostat_reader")

OUTPUT = "telemetry"
METHOD_SET_TARGET = "setTargetTemp"
METHOD_SET = "set"
METHOD_INCREASE = "increase"
METHOD_DECREASE = "decrease"
STEPS = {METHOD_INCREASE: 1.0, METHOD_DECREASE: -1.0}
"""The original firmware's increase/decrease step (°C)."""
METHODS = (METHOD_SET_TARGET, METHOD_SET, METHOD_INCREASE, METHOD_DECREASE)
STATUS_OK = 200
STATUS_BAD_REQUEST = 400
STATUS_NOT_FOUND = 404
STATUS_TIMEOUT = 504

TWIN_FIELDS: dict[str, common.TwinField] = {
    "interval_s": common.number_field(0, 86_400),
    "topic_prefix": common.topic_prefix_field,
    "setpoint_min_c": common.number_field(-60, 120),
    "setpoint_max_c": common.number_field(-60, 120),
    "setpoint_step_c": common.number_field(0.01, 10),
}


class ThermostatReader:
    """Forwards validated telemetry to edgeHub and answers ``setTargetTemp`` over the thermostats' MQTT."""

    def __init__(self, client: IoTHubModuleClient, settings: Settings | None = None,
                 mqtt_client_id: str | None = None) -> None:
        self.client = client
        self.settings = settings or get_settings()
        mqtt_client_id = mqtt_client_id or (
            f"{self.settings.mqtt_client_id_prefix}-edge-{common.safe_host_name()}-thermostat-reader")
        self.interval_s = self.settings.edge_forward_interval_s
        # A persistent session: readings published while the module restarts wait for it at the broker.
        self.mqtt = make_client(mqtt_client_id, self.settings, clean_session=False)
        self.mqtt.on_connect = self._on_mqtt_connect
        self.mqtt.message_callback_add(self._telemetry_filter(), self.on_telemetry_received)
        self.outbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.stop_event = threading.Event()
        self._last_sent: dict[str, float] = {}
        self.targets: dict[str, float] = {}
        """Each thermostat's target in its latest reading (for ``increase``/``decrease``)."""
        self._command_lock = threading.Lock()
        self._sender: threading.Thread | None = None
        self.forwarded = 0
        self.rejected = 0

    # --- telemetry: broker -> output "telemetry" --------------------------------------------------------------

    def _telemetry_filter(self, prefix: str | None = None) -> str:
        return f"{prefix or self.settings.topic_prefix}/+/{contract.TELEMETRY}"

    def _on_mqtt_connect(self, client: mqtt.Client, _u: object, _flags: dict, rc: int) -> None:
        if rc == 0:  # (re)subscribe on every connect: the filter may have changed through the twin
            client.subscribe(self._telemetry_filter(), qos=contract.QOS[contract.TELEMETRY])

    def on_telemetry_received(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        """Validate a reading; a good one is queued for output ``telemetry``, a bad one logged and counted."""
        try:
            device_id, _kind = contract.parse_topic(message.topic, self.settings.topic_prefix)
            reading = contract.parse_telemetry(message.payload, device_id)
        except contract.ContractError as exc:
            self.rejected += 1
            log.warning("rejected %s (%d bytes): %s", message.topic, len(message.payload), exc.reason)
            return
        self.targets[device_id] = reading.target_temp
        now = time.monotonic()
        if self.interval_s > 0 and now - self._last_sent.get(device_id, -1e18) < self.interval_s:
            return
        self._last_sent[device_id] = now
        self.outbox.put((device_id, contract.dumps(reading)))

    def _send_loop(self) -> None:
        backoff = common.Backoff()
        while not self.stop_event.is_set():
            try:
                device_id, body = self.outbox.get(timeout=0.5)
            except queue.Empty:
                continue
            message = common.json_message(
                body, {common.PROP_DEVICE_ID: device_id, common.PROP_KIND: common.KIND_TELEMETRY}
            )
            if common.send_until_delivered(self.client, message, OUTPUT, self.stop_event, backoff):
                backoff.reset()
                self.forwarded += 1

    # --- direct method setTargetTemp -----------------------------------------------------------------------

    def _request_target(self, method: str, body: dict[str, Any]) -> tuple[str, object] | str:
        """(device_id, target) a request asks for, or the error to answer 400 with."""
        device_id = body.get("device_id")
        if device_id is None and len(self.targets) == 1:
            device_id = next(iter(self.targets))  # the original setup: one thermostat per module
        if not isinstance(device_id, str):
            return "payload needs device_id (more than one thermostat, or none yet, seen by this module)"
        if method in STEPS:
            if device_id not in self.targets:
                return f"no reading from {device_id} yet: its current target is unknown"
            return device_id, self.targets[device_id] + STEPS[method]
        if "target_temp" not in body:
            return 'payload must be {"device_id": "...", "target_temp": <number>}'
        return device_id, body["target_temp"]

    def handle_method(self, request: MethodRequest) -> tuple[int, dict[str, Any]]:
        """Status and payload answering one direct method request."""
        if request.name not in METHODS:
            return STATUS_NOT_FOUND, {"error": f"unknown method {request.name!r}; use {', '.join(METHODS)}"}
        body = request.payload if request.payload is not None else {}
        if not isinstance(body, dict):
            return STATUS_BAD_REQUEST, {"error": 'payload must be {"device_id": "...", "target_temp": <number>}'}
        wanted = self._request_target(request.name, body)
        if isinstance(wanted, str):
            return STATUS_BAD_REQUEST, {"error": wanted}
        device_id, target = wanted
        issued_by, request_id = body.get("issued_by"), body.get("request_id")
        for name, value in (("issued_by", issued_by), ("request_id", request_id)):
            if value is not None and not isinstance(value, str):
                return STATUS_BAD_REQUEST, {"error": f"{name} must be a string"}
        settings = self.settings
        try:
            command = commands.build_command(device_id, target, issued_by, settings, request_id)
        except commands.InvalidCommand as exc:
            return STATUS_BAD_REQUEST, {"error": str(exc)}
        except ValidationError as exc:  # e.g. a request_id longer than the contract allows
            return STATUS_BAD_REQUEST, {"error": "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                           for e in exc.errors(include_url=False))}
        with self._command_lock:  # one command at a time: they share the ack subscription machinery
            result = commands.send_mqtt_command(device_id, target, issued_by, settings, client=self.mqtt,
                                                request_id=command.request_id)
        if result.outcome == commands.OUTCOME_TIMEOUT:
            return STATUS_TIMEOUT, {"request_id": result.request_id, "error": result.error}
        assert result.ack is not None
        return STATUS_OK, result.ack.model_dump(exclude_none=True)

    def on_method_request_received(self, request: MethodRequest) -> None:
        """Library callback: answer every request, whatever happens inside."""
        try:
            status, payload = self.handle_method(request)
        except Exception as exc:  # noqa: BLE001 - the caller must get an answer, not a hub-side timeout
            log.exception("method %s failed", request.name)
            status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
        log.info("method %s -> %d %s", request.name, status, payload)
        self.client.send_method_response(MethodResponse.create_from_method_request(request, status, payload))

    # --- twin ------------------------------------------------------------------------------------------------

    def apply_twin(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Twin hook: new interval, topic prefix (resubscribes) and setpoint limits (checked together)."""
        limits = {k: v for k, v in changes.items() if k.startswith("setpoint_")}
        updates: dict[str, Any] = dict(limits)
        if "topic_prefix" in changes:
            updates["topic_prefix"] = changes["topic_prefix"]
        # Building a Settings runs its validators, so min < max is checked in one place.
        try:
            new_settings = Settings.model_validate({**self.settings.model_dump(), **updates})
        except ValidationError as exc:
            raise ValueError("; ".join(e["msg"] for e in exc.errors(include_url=False))) from None
        old_filter = self._telemetry_filter()
        self.settings = new_settings
        if "interval_s" in changes:
            self.interval_s = changes["interval_s"]
        new_filter = self._telemetry_filter()
        if new_filter != old_filter:
            self.mqtt.message_callback_remove(old_filter)
            self.mqtt.unsubscribe(old_filter)
            self.mqtt.message_callback_add(new_filter, self.on_telemetry_received)
            self.mqtt.subscribe(new_filter, qos=contract.QOS[contract.TELEMETRY])
        return {
            "interval_s": self.interval_s,
            "topic_prefix": self.settings.topic_prefix,
            "setpoint_min_c": self.settings.setpoint_min_c,
            "setpoint_max_c": self.settings.setpoint_max_c,
            "setpoint_step_c": self.settings.setpoint_step_c,
        }

    # --- life cycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to edgeHub and the broker, apply the twin, start forwarding and answering methods."""
        self.client.on_method_request_received = self.on_method_request_received
        self.client.connect()
        common.TwinSettings(self.client, TWIN_FIELDS, self.apply_twin).start()
        self._sender = threading.Thread(target=self._send_loop, name="thermostat-reader-send", daemon=True)
        self._sender.start()
        connect(self.mqtt, self.settings)
        log.info("thermostat_reader started: %s -> output %s", self._telemetry_filter(), OUTPUT)

    def stop(self) -> None:
        """Disconnect from the broker, stop sending and close the module client."""
        self.mqtt.disconnect()
        self.mqtt.loop_stop()
        self.stop_event.set()
        if self._sender:
            self._sender.join(5)
        self.client.shutdown()


def main() -> int:
    """Run until SIGTERM."""
    return common.run_module(ThermostatReader)


if __name__ == "__main__":
    raise SystemExit(main())
