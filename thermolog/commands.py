"""Setpoint commands: validation against the settings, and the MQTT transport (publish ``cmd``, await ``cmd/ack``).

The app, the edge module ``thermostat_reader`` and the CLI all validate and send through here; the device
validates again with the same rules (``thermolog.control.Thermostat.check_target``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from thermolog import contract
from thermolog.control import Thermostat
from thermolog.mqttclient import connect, make_client
from thermolog.settings import Settings, get_settings

log = logging.getLogger(__name__)

OUTCOME_OK = "ok"
OUTCOME_REFUSED = "refused"
OUTCOME_TIMEOUT = "timeout"


class InvalidCommand(ValueError):
    """A command refused before it reaches any device; the message says which rule it broke."""


@dataclass(frozen=True)
class CommandResult:
    """What happened to one command: ``ok``, ``refused`` by the device (with its reason) or ``timeout``."""

    request_id: str
    device_id: str
    target_temp: float
    outcome: str
    error: str | None = None
    ack: contract.CommandAck | None = None


def validate_setpoint(value: object, settings: Settings | None = None) -> float:
    """Return the setpoint as float if within the configured range and step, else raise InvalidCommand."""
    settings = settings or get_settings()
    if isinstance(value, str):
        try:
            value = float(value.strip().replace(",", "."))
        except ValueError:
            raise InvalidCommand(f"{value!r} is not a number") from None
    limits = Thermostat(
        target=settings.setpoint_min_c,
        min_target=settings.setpoint_min_c,
        max_target=settings.setpoint_max_c,
        step=settings.setpoint_step_c,
    )
    try:
        return limits.check_target(value)
    except ValueError as exc:
        raise InvalidCommand(str(exc)) from None


def new_request_id() -> str:
    """A fresh request id (32 hex characters)."""
    return uuid.uuid4().hex


def build_command(device_id: str, target: object, issued_by: str | None, settings: Settings | None = None,
                  request_id: str | None = None) -> contract.Command:
    """A validated command model; raises InvalidCommand for a bad device id or setpoint."""
    try:
        contract.check_device_id(device_id)
    except contract.ContractError as exc:
        raise InvalidCommand(exc.reason) from None
    return contract.Command(
        request_id=request_id or new_request_id(),
        target_temp=validate_setpoint(target, settings),
        issued_by=issued_by,
    )


def send_mqtt_command(device_id: str, target: object, issued_by: str | None = None,
                      settings: Settings | None = None, timeout_s: float | None = None,
                      client: mqtt.Client | None = None, request_id: str | None = None) -> CommandResult:
    """Validate, publish ``cmd`` at QoS 1 and wait for the ``cmd/ack`` carrying the same ``request_id``.

    Pass a connected ``client`` to reuse a connection; otherwise one is opened and closed for this command.
    ``request_id`` keeps an id chosen upstream (the IoT Hub transport's), else a new one is made.
    """
    settings = settings or get_settings()
    command = build_command(device_id, target, issued_by, settings, request_id)
    timeout = settings.command_timeout_s if timeout_s is None else timeout_s
    ack_topic = contract.topic(device_id, contract.CMD_ACK, settings.topic_prefix)
    got_ack = threading.Event()
    holder: dict[str, contract.CommandAck] = {}

    def on_ack(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            ack = contract.parse_ack(message.payload)
        except contract.ContractError as exc:
            log.warning("ignoring malformed ack on %s: %s", message.topic, exc.reason)
            return
        if ack.request_id == command.request_id:
            holder["ack"] = ack
            got_ack.set()

    own_client = client is None
    if own_client:
        client = make_client(f"thermolog-cmd-{command.request_id[:12]}", settings)
        connect(client, settings)
    assert client is not None
    client.message_callback_add(ack_topic, on_ack)
    try:
        client.subscribe(ack_topic, qos=contract.QOS[contract.CMD_ACK])
        info = client.publish(
            contract.topic(device_id, contract.CMD, settings.topic_prefix),
            contract.dumps(command),
            qos=contract.QOS[contract.CMD],
            retain=False,
        )
        info.wait_for_publish(timeout)
        log.info("sent command %s to %s: target %.1f °C by %s", command.request_id, device_id,
                 command.target_temp, issued_by or "unknown")
        if not got_ack.wait(timeout):
            return CommandResult(command.request_id, device_id, command.target_temp, OUTCOME_TIMEOUT,
                                 f"no answer from {device_id} within {timeout:.0f} s: is it online?")
        ack = holder["ack"]
        if ack.ok:
            return CommandResult(command.request_id, device_id, command.target_temp, OUTCOME_OK, None, ack)
        return CommandResult(command.request_id, device_id, command.target_temp, OUTCOME_REFUSED,
                             ack.error or "refused without a reason", ack)
    finally:
        client.message_callback_remove(ack_topic)
        client.unsubscribe(ack_topic)
        if own_client:
            client.disconnect()
            client.loop_stop()


class RateLimiter:
    """At most ``limit`` events per key in any sliding window of ``window_s`` seconds (thread-safe)."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Count one event for ``key`` and return 0, or return the seconds to wait (nothing counted)."""
        if self.limit <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window_s:
                events.popleft()
            if len(events) >= self.limit:
                return events[0] + self.window_s - now
            events.append(now)
            return 0.0


_limiters: dict[int, RateLimiter] = {}
_limiters_lock = threading.Lock()


def command_limiter(settings: Settings) -> RateLimiter:
    """The process-wide limiter for ``command_rate_limit_per_min`` (one per configured limit)."""
    with _limiters_lock:
        return _limiters.setdefault(settings.command_rate_limit_per_min,
                                    RateLimiter(settings.command_rate_limit_per_min))


_audit_limiters: dict[int, RateLimiter] = {}


def publish_refusal(device_id: str, issued_by: str | None, reason: str, target: object,
                    settings: Settings) -> bool:
    """Publish the refusal on ``cmd/refused`` so the ingest worker records it in ``commands``; best effort.

    Only with the MQTT transport and a valid device id; at most ``command_rate_limit_per_min`` records per user
    per minute, so hammering the app cannot turn into a flood of audit connections. False when not published.
    """
    if settings.command_transport != "mqtt":
        return False
    try:
        topic_name = contract.topic(device_id, contract.CMD_REFUSED, settings.topic_prefix)
    except contract.ContractError:
        return False  # no per-device topic for an id that breaks the contract: the log line is the record
    with _limiters_lock:
        audit = _audit_limiters.setdefault(settings.command_rate_limit_per_min,
                                           RateLimiter(settings.command_rate_limit_per_min))
    if audit.acquire(issued_by or "unknown") > 0:
        return False
    number = target if isinstance(target, int | float) and not isinstance(target, bool) else None
    record = contract.CommandRefusal(
        request_id=new_request_id(), issued_by=issued_by, error=reason[:500],
        target_temp=float(number) if number is not None and math.isfinite(number) else None,
    )
    client = make_client(f"thermolog-audit-{record.request_id[:12]}", settings)
    try:
        connect(client, settings, timeout=5)
        info = client.publish(topic_name, contract.dumps(record), qos=contract.QOS[contract.CMD_REFUSED])
        info.wait_for_publish(5)
        client.disconnect()
        return info.is_published()
    except (ConnectionError, OSError, ValueError, RuntimeError) as exc:
        log.warning("could not publish the refusal audit record for %s: %s", device_id, exc)
        return False
    finally:
        client.loop_stop()


def refuse(device_id: str, issued_by: str | None, reason: str, target: object = None,
           settings: Settings | None = None) -> InvalidCommand:
    """Record a refused command (a structured log record, and ``cmd/refused`` when ``settings`` are given) and
    return the InvalidCommand to raise."""
    log.warning("command refused for %s by %s: %s", device_id, issued_by or "unknown", reason,
                extra={"event": "command_refused", "device_id": device_id, "issued_by": issued_by,
                       "target": target, "reason": reason})
    if settings is not None:
        publish_refusal(device_id, issued_by, reason, target, settings)
    return InvalidCommand(reason)


def send_command(device_id: str, target: object, issued_by: str | None = None,
                 settings: Settings | None = None) -> CommandResult:
    """Send a setpoint over the configured transport (``THERMOLOG_COMMAND_TRANSPORT``: mqtt or iothub).

    Raises InvalidCommand for a bad device id or setpoint, or when ``issued_by`` has sent
    ``command_rate_limit_per_min`` commands in the last 60 s; the refusal is logged (``command_refused``) and
    published on ``cmd/refused`` for the ``commands`` audit table.
    """
    settings = settings or get_settings()
    try:
        build_command(device_id, target, issued_by, settings)
    except InvalidCommand as exc:
        raise refuse(device_id, issued_by, str(exc), target, settings) from None
    wait_s = command_limiter(settings).acquire(issued_by or "unknown")
    if wait_s > 0:
        raise refuse(device_id, issued_by, f"rate limit: at most {settings.command_rate_limit_per_min} commands "
                     f"per minute per user; try again in {math.ceil(wait_s)} s", target, settings)
    if settings.command_transport == "iothub":
        from thermolog.iothub_transport import send_iothub_command  # azure-iot-hub is only needed for this path

        return send_iothub_command(device_id, target, issued_by, settings)
    return send_mqtt_command(device_id, target, issued_by, settings)
