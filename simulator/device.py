"""A simulated thermostat: thermal model + sensor + the shared control logic, and its MQTT link.

``SimDevice`` is transport-free (advance time, produce a reading, handle a command); ``MqttLink`` carries one
device (with its own last will) or many devices over one connection, publishing at QoS 1 with back-pressure:
at most ``window`` unacknowledged messages, so a backfill runs as fast as the broker acknowledges and no faster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import orjson
import paho.mqtt.client as mqtt

from simulator.model import DeviceParams, Sensor, ThermalModel
from simulator.schedule import SetpointChange
from thermolog import contract
from thermolog.control import SetpointSchedule, Thermostat
from thermolog.mqttclient import connect, make_client
from thermolog.settings import Settings, get_settings

log = logging.getLogger(__name__)

try:
    FIRMWARE = f"sim-{version('thermolog')}"
except PackageNotFoundError:  # running from a source tree that was never installed
    FIRMWARE = "sim-dev"
MODE = contract.MODE_HEAT
MODE_OFF = contract.MODE_OFF
CONTROL_STEP_S = 15.0
"""The control loop runs at least this often (simulated s) even when readings are published less often."""
REPLAY_MEMORY = 256
"""How many recent request ids a device remembers to answer replays without applying them twice."""


@dataclass(frozen=True)
class AppliedChange:
    """A setpoint change the device applied (scheduled or commanded), for the parameters file."""

    t: float
    device_id: str
    target_c: float
    source: str
    request_id: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form with an ISO timestamp."""
        ts = contract.format_timestamp(datetime.fromtimestamp(self.t, UTC))
        out: dict[str, object] = {"device_id": self.device_id, "ts": ts, "target_temp": self.target_c,
                                  "source": self.source}
        if self.request_id:
            out["request_id"] = self.request_id
        return out


class SimDevice:
    """One simulated thermostat. Thread-safe: commands arrive on the network thread, time advances on another."""

    def __init__(self, params: DeviceParams, seed: int, t0: float, settings: Settings | None = None) -> None:
        settings = settings or get_settings()
        self.params = params
        self.device_id = params.device_id
        self.seed = seed
        self.model = ThermalModel(params, t0)
        self.sensor = Sensor(params, seed)
        self.thermostat = Thermostat(
            target=params.initial_target_c,
            hysteresis=params.hysteresis_c,
            min_on_s=params.min_on_s,
            min_off_s=params.min_off_s,
            min_target=settings.setpoint_min_c,
            max_target=settings.setpoint_max_c,
            step=settings.setpoint_step_c,
        )
        self.lock = threading.Lock()
        self.schedule: list[SetpointChange] = []
        self.state_changed = False
        """A setpoint changed since ``take_state_change`` last looked (the retained ``state`` is out of date)."""
        self.follower = SetpointSchedule()
        """The server's change points (``schedule/points``), followed as the firmware follows them."""
        self.changes: list[AppliedChange] = []
        self._acks: OrderedDict[str, contract.CommandAck] = OrderedDict()
        self._measured = self.sensor.temperature(self.model.temperature)
        self.mode = MODE
        """``heat`` or ``off`` (off: the heater stays off whatever the target; the firmware's rule)."""
        self.heating = self.thermostat.update(t0, self._measured, t0)

    @property
    def t(self) -> float:
        """Current simulated time (epoch seconds)."""
        return self.model.t

    def _control_to(self, t: float) -> None:
        while self.model.t < t:
            step_end = min(t, self.model.t + CONTROL_STEP_S)
            self.model.advance(step_end, self.heating)
            self._measured = self.sensor.temperature(self.model.temperature)
            self._decide(step_end)

    def _decide(self, now: float) -> None:
        if self.mode == contract.MODE_OFF:
            self.heating = self.thermostat.force_off(now)
        else:
            self.heating = self.thermostat.update(now, self._measured, now)

    def advance(self, t: float) -> None:
        """Run physics and control up to epoch seconds ``t``, applying scheduled setpoint changes on the way:
        the simulator's own schedule (backfill) and the server's change points."""
        with self.lock:
            while self.schedule and self.schedule[0].t <= t:
                change = self.schedule.pop(0)
                if change.t > self.model.t:
                    self._follow_points_to(change.t)
                self._apply_target(change.target_c, "schedule:" + change.label)
            self._follow_points_to(t)

    def _follow_points_to(self, t: float) -> None:
        while True:
            target = self.follower.due(int(self.model.t))
            if target is not None:
                try:
                    self._apply_target(target, "schedule")
                except ValueError as exc:
                    log.warning("%s: ignoring scheduled target: %s", self.device_id, exc)
            point = self.follower.next_change(int(self.model.t))
            if point is None or point[0] > t:
                break
            self._control_to(point[0])
        self._control_to(t)

    def take_state_change(self) -> bool:
        """True once after the setpoint changed (scheduled or commanded)."""
        with self.lock:
            changed, self.state_changed = self.state_changed, False
            return changed

    def load_points(self, payload: bytes) -> int:
        """Take the server's ``schedule/points``; returns how many points. Raises ContractError when invalid."""
        points = contract.parse_points(payload).points
        with self.lock:
            return self.follower.load([list(p) for p in points])

    def _apply_target(self, target: float, source: str, request_id: str | None = None) -> None:
        self.thermostat.set_target(target)
        self.state_changed = True
        self.changes.append(AppliedChange(self.model.t, self.device_id, self.thermostat.target, source, request_id))

    def reading(self) -> contract.Telemetry:
        """The telemetry message for the current time: last sensor reading, target and heater state."""
        with self.lock:
            return contract.Telemetry(
                temperature=round(self._measured, 2),
                timestamp=datetime.fromtimestamp(self.model.t, UTC),
                humidity=round(self.sensor.humidity(self.model.temperature, self.model.t), 1),
                target_temp=self.thermostat.target,
                device_id=self.device_id,
                heating=contract.HEATING_ON if self.heating else contract.HEATING_OFF,
            )

    def state(self) -> contract.DeviceState:
        """The retained settings, with the true simulation parameters under ``sim`` for checking analytics."""
        with self.lock:
            return contract.DeviceState(
                target_temp=self.thermostat.target,
                mode=self.mode,
                hysteresis=self.thermostat.hysteresis,
                firmware=FIRMWARE,
                sim={"seed": self.seed, **self.params.to_dict()},
            )

    def handle_command(self, payload: bytes) -> tuple[contract.CommandAck | None, bool]:
        """Validate and apply a ``cmd`` payload; returns ``(ack, changed)``.

        A replayed ``request_id`` gets its first answer again and changes nothing. A payload without a usable
        request id cannot be answered: ``(None, False)``.
        """
        try:
            command = contract.parse_command(payload)
        except contract.ContractError as exc:
            request_id = _request_id_of(payload)
            if request_id is None:
                log.warning("%s: dropping command without a usable request_id: %s", self.device_id, exc.reason)
                return None, False
            with self.lock:
                ack = self._acks.get(request_id) or contract.CommandAck(request_id=request_id, ok=False,
                                                                        error=exc.reason)
                return self._remember(ack), False
        with self.lock:
            previous = self._acks.get(command.request_id)
            if previous is not None:
                log.info("%s: replayed request %s, answering again without applying", self.device_id,
                         command.request_id)
                return previous, False
            target = self.thermostat.target
            if command.target_temp is not None:
                try:
                    target = self.thermostat.check_target(command.target_temp)
                except ValueError as exc:
                    ack = contract.CommandAck(request_id=command.request_id, ok=False, error=str(exc))
                    return self._remember(ack), False
            changed = target != self.thermostat.target or (command.mode or self.mode) != self.mode
            if command.target_temp is not None:
                self._apply_target(target, "command", command.request_id)
            if command.mode is not None:
                self.mode = command.mode
                self._decide(self.model.t)  # mode off: the heater goes off at once
            ack = contract.CommandAck(request_id=command.request_id, ok=True, target_temp=target, mode=self.mode)
            log.info("%s: target %.1f °C, mode %s by request %s", self.device_id, target, self.mode,
                     command.request_id)
            return self._remember(ack), changed or command.target_temp is not None

    def _remember(self, ack: contract.CommandAck) -> contract.CommandAck:
        self._acks[ack.request_id] = ack
        while len(self._acks) > REPLAY_MEMORY:
            self._acks.popitem(last=False)
        return ack


def _request_id_of(payload: bytes) -> str | None:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    value = data.get("request_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


def ha_discovery(device: SimDevice, topic_prefix: str, settings: Settings) -> tuple[str, bytes]:
    """Home Assistant's retained discovery topic and config for ``device``, from the firmware's own code
    (``firmware/ha.py``): a simulated thermostat appears in Home Assistant exactly as a real one does."""
    from firmware import ha  # the firmware package puts its folder on sys.path; ha imports its contract mirror

    limits = device.thermostat
    config = ha.discovery_payload(device.device_id, f"Simulated {device.device_id}", topic_prefix,
                                  limits.min_target, limits.max_target, limits.step, FIRMWARE)
    return ha.discovery_topic(device.device_id, settings.ha_discovery_prefix), config


class MqttLink:
    """One MQTT connection carrying ``devices``: status, state, telemetry out; commands in, acks out.

    With a single device the connection's last will is that device's retained ``offline``; a shared connection
    has no per-device will (MQTT allows one will per connection), so only a clean stop marks its devices offline.
    """

    def __init__(self, devices: Iterable[SimDevice], client_id: str, settings: Settings | None = None,
                 topic_prefix: str | None = None, window: int = 1000, inflight: int = 100,
                 on_change: Callable[[SimDevice], None] | None = None) -> None:
        self.settings = settings or get_settings()
        self.prefix = topic_prefix or self.settings.topic_prefix
        self.devices = {d.device_id: d for d in devices}
        self.on_change = on_change
        will = None
        if len(self.devices) == 1:
            only = next(iter(self.devices))
            will = (self._topic(only, contract.STATUS), contract.STATUS_OFFLINE.encode(),
                    contract.QOS[contract.STATUS], True)
        self.client = make_client(client_id, self.settings, will=will)
        self.client.max_inflight_messages_set(inflight)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self._window_size = window
        self._window = threading.Semaphore(window)
        self._untracked: set[int] = set()
        self._announced = threading.Event()
        self.published = 0

    def _topic(self, device_id: str, kind: str) -> str:
        return contract.topic(device_id, kind, self.prefix)

    def start(self) -> None:
        """Connect, subscribe to every device's ``cmd`` and announce status and state (again on reconnect)."""
        connect(self.client, self.settings)
        if not self._announced.wait(10):
            raise ConnectionError("connected but the device announcement did not complete")

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: dict, rc: int) -> None:
        if rc != 0:
            return
        topics = [(self._topic(d, kind), contract.QOS[kind]) for d in self.devices
                  for kind in (contract.CMD, contract.SCHEDULE_POINTS)]
        for i in range(0, len(topics), 500):  # keep each SUBSCRIBE packet a sane size
            client.subscribe(topics[i:i + 500])
        for device in self.devices.values():
            if self.settings.sim_ha_discovery:
                topic, config = ha_discovery(device, self.prefix, self.settings)
                self._untracked.add(client.publish(topic, config, qos=1, retain=True).mid)
            self._publish_untracked(self._topic(device.device_id, contract.STATUS), contract.STATUS_ONLINE.encode(),
                                    contract.STATUS)
            self._publish_untracked(self._topic(device.device_id, contract.STATE), contract.dumps(device.state()),
                                    contract.STATE)
        self._announced.set()
        log.info("connected: %d simulated device(s) online under %s/", len(self.devices), self.prefix)

    def _publish_untracked(self, topic: str, payload: bytes, kind: str) -> None:
        # Called on the network thread, which must never wait for acknowledgements it alone can process.
        info = self.client.publish(topic, payload, qos=contract.QOS[kind], retain=contract.RETAIN[kind])
        self._untracked.add(info.mid)

    def _on_publish(self, _client: mqtt.Client, _userdata: object, mid: int) -> None:
        if mid in self._untracked:
            self._untracked.discard(mid)
        else:
            self._window.release()

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            device_id, kind = contract.parse_topic(message.topic, self.prefix)
        except contract.ContractError:
            return
        device = self.devices.get(device_id)
        if device is not None and kind == contract.SCHEDULE_POINTS:
            try:
                log.info("%s: following %d schedule points", device_id, device.load_points(message.payload))
            except contract.ContractError as exc:
                log.warning("%s: ignoring schedule points: %s", device_id, exc.reason)
            return
        if device is None or kind != contract.CMD:
            return
        ack, changed = device.handle_command(message.payload)
        if ack is not None:
            self._publish_untracked(self._topic(device_id, contract.CMD_ACK), contract.dumps(ack), contract.CMD_ACK)
        if changed:
            self._publish_untracked(self._topic(device_id, contract.STATE), contract.dumps(device.state()),
                                    contract.STATE)
            if self.on_change is not None:
                self.on_change(device)

    def publish(self, topic: str, payload: bytes, kind: str, timeout: float | None = None) -> bool:
        """Publish with back-pressure: waits while ``window`` messages are unacknowledged. False on timeout."""
        if not self._window.acquire(timeout=timeout):
            return False
        try:
            self.client.publish(topic, payload, qos=contract.QOS[kind], retain=contract.RETAIN[kind])
        except Exception:
            self._window.release()
            raise
        self.published += 1
        return True

    def publish_reading(self, device: SimDevice, timeout: float | None = None) -> bool:
        """Publish the device's current reading on its telemetry topic."""
        return self.publish(self._topic(device.device_id, contract.TELEMETRY), contract.dumps(device.reading()),
                            contract.TELEMETRY, timeout)

    def publish_state(self, device: SimDevice) -> None:
        """Publish the device's retained state (after a scheduled change, for example)."""
        self.publish(self._topic(device.device_id, contract.STATE), contract.dumps(device.state()), contract.STATE)

    def drain(self, timeout: float) -> bool:
        """Wait until every tracked publish is acknowledged; False if some are still pending after ``timeout``."""
        taken = 0
        deadline = time.monotonic() + timeout
        try:
            while taken < self._window_size:
                if not self._window.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    return False
                taken += 1
            return True
        finally:
            for _ in range(taken):
                self._window.release()

    def stop(self, timeout: float = 10.0) -> None:
        """Mark every device offline (retained), wait for acknowledgements and disconnect cleanly."""
        for device_id in self.devices:
            self.publish(self._topic(device_id, contract.STATUS), contract.STATUS_OFFLINE.encode(), contract.STATUS,
                         timeout=timeout)
        if not self.drain(timeout):
            log.warning("some messages were not acknowledged before disconnecting")
        self.client.disconnect()
        self.client.loop_stop()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT, as a crash would: the broker publishes the last will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
