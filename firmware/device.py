"""The thermostat's main loop, with every piece of hardware and network passed in.

``Device.step()`` is one loop iteration: feed the watchdog, read the sensor when due, decide the heater with the
shared control logic, keep Wi-Fi and MQTT up, answer commands, send buffered readings, refresh the LCD and
collect garbage. The board (``main.py``), the PC (``host_run.py``) and the tests build the same ``Device`` with
real, simulated or fake parts.

What people rely on:
- Control runs locally whatever the network does; the relay is driven only by the control decision, so
  losing or regaining Wi-Fi or the broker never switches it.
- Readings are stamped when taken and kept in a bounded buffer until the broker acknowledges them (QoS 1),
  then sent oldest first; when the buffer is full the oldest reading is dropped and counted.
- A command is applied only when every field is valid; otherwise the device answers ``ok: false`` with the
  reason. A request id seen recently is ignored (replay).
- The target and mode survive a reboot (``state_file``), and so does the schedule.
- The schedule: the server sends the weekly program expanded into UTC change points (retained
  ``schedule/points``); the device applies each point when its time comes (``control.SetpointSchedule``), with
  or without the network, once the clock has been set.
"""

import gc
import json

import contract
import control
import ha
import store
from clock import iso_utc
from mqttlink import MqttLink
from ringbuf import RingBuffer

FIRMWARE_VERSION = "0.1.0"
MAX_PENDING_COMMANDS = 4
"""Commands received but not yet handled (they arrive inside umqtt's callback and are answered after it)."""
RECENT_REQUEST_IDS = 16
"""How many request ids are remembered to ignore replays."""


class Device:
    """One thermostat; see the module docstring. ``clock`` is a ``clock.Clock``; ``log`` takes one string."""

    def __init__(self, cfg, sensor, relay, clock, mqtt_factory, wifi=None, display=None, watchdog=None, log=None,
                 collect=None):
        self.cfg = cfg
        self.sensor = sensor
        self.relay = relay
        self.clock = clock
        self.wifi = wifi
        self.display = display
        self.watchdog = watchdog
        self._log = log or print
        self._collect = collect or gc.collect  # CPython tests pass a cheaper one: a full collection there is slow
        self.device_id = contract.check_device_id(cfg["device_id"])
        prefix = cfg["mqtt"]["topic_prefix"]
        self.topics = {}
        for kind in (contract.TELEMETRY, contract.STATUS, contract.STATE, contract.CMD, contract.CMD_ACK,
                     contract.SCHEDULE_POINTS):
            self.topics[kind] = contract.topic(self.device_id, kind, prefix)
        self._cmd_topic = self.topics[contract.CMD].encode()
        self._points_topic = self.topics[contract.SCHEDULE_POINTS].encode()
        self.schedule = control.SetpointSchedule()
        self._points_payload = None  # the newest schedule received, parsed in the loop
        ctl = cfg["control"]
        self.thermostat = control.Thermostat(
            target=ctl["target"], hysteresis=ctl["hysteresis"], min_on_s=ctl["min_on_s"],
            min_off_s=ctl["min_off_s"], stale_after_s=cfg["sensor"]["stale_after_s"],
            min_target=ctl["min_target"], max_target=ctl["max_target"], step=ctl["step"])
        self.mode = contract.MODE_HEAT
        self._restore()
        intervals = cfg["intervals"]
        self.read_s = intervals["read_s"]
        self.publish_s = intervals["publish_s"]
        self.drain_per_loop = intervals["drain_per_loop"]
        self.buffer = RingBuffer(cfg["buffer"]["max_readings"])
        mqtt = cfg["mqtt"]
        self.link = MqttLink(mqtt_factory, self.topics[contract.STATUS], contract.STATUS_OFFLINE.encode(),
                             self._on_connected, self._on_message, keepalive_s=mqtt["keepalive_s"],
                             backoff_min_s=mqtt["backoff_min_s"], backoff_max_s=mqtt["backoff_max_s"], log=self._log)
        self.pending = []
        self.recent_ids = []
        self.temperature = None
        self.humidity = None
        self.read_at = None  # monotonic time of the last good reading
        self.sensor_errors = 0
        self.published = 0
        self.loops = 0
        self._state_dirty = False
        self._next_read = 0.0
        self._next_publish = 0.0

    # --- persistence --------------------------------------------------------------------------------
    def _restore(self):
        saved = store.load(self.cfg["state_file"])
        if "target_temp" in saved:
            try:
                self.thermostat.set_target(saved["target_temp"])
            except ValueError as exc:
                self._log("state: ignoring saved target: %s" % exc)
        if saved.get("mode") in contract.MODES:
            self.mode = saved["mode"]
        try:
            self.schedule.load(saved.get("schedule") or [])
        except ValueError as exc:
            self._log("state: ignoring saved schedule: %s" % exc)

    def _save(self):
        try:
            store.save(self.cfg["state_file"], {"target_temp": self.thermostat.target, "mode": self.mode,
                                                "schedule": [list(p) for p in self.schedule.points]})
        except OSError as exc:  # a full or failing flash must not stop the heating control
            self._log("state: cannot save %s: %s" % (self.cfg["state_file"], exc))

    # --- the loop -----------------------------------------------------------------------------------
    def feed(self):
        """Feed the watchdog (also called between slow network operations)."""
        if self.watchdog is not None:
            self.watchdog.feed()

    def step(self):
        """One loop iteration."""
        now_ms = self.clock.monotonic_ms()
        now = now_ms / 1000
        self.feed()
        if now >= self._next_read:
            self._next_read = now + self.read_s
            self._read_and_control(now, now_ms)
        self._network(now)
        self._show(now)
        self.loops += 1
        self._collect()

    def _read_and_control(self, now, now_ms):
        fresh = False
        try:
            temperature, humidity = self.sensor.read()
            self.temperature, self.humidity, self.read_at = temperature, humidity, now
            fresh = True
        except Exception as exc:  # noqa: BLE001 - a driver may raise anything; the heater must still go off
            self.sensor_errors += 1
            self._log("sensor: read failed (%d so far): %r" % (self.sensor_errors, exc))
        self._follow_schedule(now_ms)
        switched = self._control(now)
        if fresh and (switched or now >= self._next_publish):
            self._next_publish = now + self.publish_s
            # Stamped with integer monotonic milliseconds: exact on single-precision ports too.
            self.buffer.append((now_ms, self.temperature, self.humidity, self.thermostat.target, self.relay.on))

    def _follow_schedule(self, now_ms):
        if self._points_payload is not None:
            payload, self._points_payload = self._points_payload, None
            self._load_points(payload)
        wall = self.clock.wall(now_ms)
        if wall is None:
            return  # no NTP time yet: the schedule waits for the clock
        target = self.schedule.due(wall)
        if target is None or target == self.thermostat.target:
            return
        try:
            self.thermostat.set_target(target)
        except ValueError as exc:
            self._log("schedule: ignoring target: %s" % exc)
            return
        self._save()
        self._state_dirty = True
        self._next_publish = 0.0
        self._log("schedule: target %s" % target)

    def _load_points(self, payload):
        try:
            data = json.loads(payload) if payload else {}
            points = data.get("points", []) if isinstance(data, dict) else None
            if points is None:
                raise ValueError("schedule must be a JSON object")
            count = self.schedule.load(points)
        except ValueError as exc:
            self._log("schedule: ignoring malformed points: %s" % exc)
            return
        self._save()
        self._log("schedule: %d change points" % count)

    def _control(self, now):
        if self.mode == contract.MODE_OFF:
            heating = self.thermostat.force_off(now)
        else:
            heating = self.thermostat.update(now, self.temperature, self.read_at)
        switched = self.relay.set(heating)
        if switched:
            self._log("heater %s (%s)" % ("ON" if heating else "OFF", self.thermostat.reason))
        return switched

    def _show(self, now):
        if self.display is None:
            return
        fresh = self.read_at is not None and now - self.read_at <= self.thermostat.stale_after_s
        try:
            self.display.show(self.temperature if fresh else None, self.humidity, self.thermostat.target,
                              self.relay.on, self.mode == contract.MODE_OFF, self.link.connected)
        except OSError as exc:  # a loose LCD must not stop the thermostat
            self._log("lcd: %s" % exc)

    # --- network ------------------------------------------------------------------------------------
    def _network(self, now):
        if self.wifi is not None and not self.wifi.poll(now):
            if self.link.connected:
                self.link.down(now, "wifi lost")
            return
        self.clock.maybe_sync(now)
        if not self.link.ensure(now):
            return
        self.feed()
        self.link.poll(now)
        while self.pending and self.link.connected:
            ack = self.handle_command(self.pending.pop(0), now)
            if self._state_dirty:
                self._publish_state(now)
            if ack is not None:
                self.link.publish(self.topics[contract.CMD_ACK], ack, contract.QOS[contract.CMD_ACK],
                                  contract.RETAIN[contract.CMD_ACK], now)
        if self._state_dirty and self.link.connected:  # a scheduled change while connected
            self._publish_state(now)
        self._drain(now)

    def _drain(self, now):
        for _ in range(self.drain_per_loop):
            item = self.buffer.peek()
            if item is None or not self.link.connected:
                return
            wall = self.clock.wall(item[0])
            if wall is None:
                return  # no NTP time yet: keep the readings until it comes
            payload = contract.telemetry(self.device_id, item[1], item[2], item[3], item[4], iso_utc(wall))
            if not self.link.publish(self.topics[contract.TELEMETRY], payload, contract.QOS[contract.TELEMETRY],
                                     contract.RETAIN[contract.TELEMETRY], now):
                return
            self.buffer.pop()
            self.published += 1
            self.feed()

    def state_payload(self):
        """The retained ``state`` payload."""
        return contract.state(self.thermostat.target, self.mode, self.thermostat.hysteresis, FIRMWARE_VERSION)

    def _publish_state(self, now):
        if self.link.publish(self.topics[contract.STATE], self.state_payload(), contract.QOS[contract.STATE],
                             contract.RETAIN[contract.STATE], now):
            self._state_dirty = False

    def _on_connected(self, link):
        # Runs inside MqttLink.ensure: an exception here fails the connection attempt and it is retried.
        client = link.client
        client.publish(self.topics[contract.STATUS], contract.STATUS_ONLINE.encode(),
                       retain=contract.RETAIN[contract.STATUS], qos=contract.QOS[contract.STATUS])
        client.publish(self.topics[contract.STATE], self.state_payload(),
                       retain=contract.RETAIN[contract.STATE], qos=contract.QOS[contract.STATE])
        self._state_dirty = False
        hass = self.cfg["home_assistant"]
        if hass["discovery"]:
            ctl = self.cfg["control"]
            client.publish(ha.discovery_topic(self.device_id, hass["prefix"]),
                           ha.discovery_payload(self.device_id, hass["name"], self.cfg["mqtt"]["topic_prefix"],
                                                ctl["min_target"], ctl["max_target"], ctl["step"], FIRMWARE_VERSION),
                           retain=True, qos=1)
        client.subscribe(self.topics[contract.CMD], contract.QOS[contract.CMD])
        client.subscribe(self.topics[contract.SCHEDULE_POINTS], contract.QOS[contract.SCHEDULE_POINTS])

    def _on_message(self, topic, payload):
        # Called from inside umqtt's check_msg/publish: only queue here, answer from the loop.
        if topic == self._points_topic:
            self._points_payload = bytes(payload)
            return
        if topic != self._cmd_topic:
            return
        if len(self.pending) >= MAX_PENDING_COMMANDS:
            self._log("cmd: dropped, %d commands already waiting" % len(self.pending))
            return
        self.pending.append(bytes(payload))

    # --- commands -----------------------------------------------------------------------------------
    def _remember(self, request_id):
        self.recent_ids.append(request_id)
        if len(self.recent_ids) > RECENT_REQUEST_IDS:
            self.recent_ids.pop(0)

    def handle_command(self, payload, now):
        """Apply one ``cmd`` payload; returns the ack payload, or None for a replayed request id."""
        try:
            data = json.loads(payload)
        except ValueError:
            return contract.ack(contract.REQUEST_ID_UNKNOWN, False, error="malformed JSON")
        if not isinstance(data, dict):
            return contract.ack(contract.REQUEST_ID_UNKNOWN, False, error="command must be a JSON object")
        request_id = data.get("request_id")
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= contract.REQUEST_ID_MAX:
            return contract.ack(contract.REQUEST_ID_UNKNOWN, False,
                                error="request_id must be a string of 1 to %d characters" % contract.REQUEST_ID_MAX)
        if request_id in self.recent_ids:
            self._log("cmd: ignoring replayed request %s" % request_id)
            return None
        self._remember(request_id)
        for key in data:
            if key not in contract.COMMAND_KEYS:
                return contract.ack(request_id, False, error="unknown field %r" % key)
        if "target_temp" not in data and "mode" not in data:
            return contract.ack(request_id, False, error="nothing to change: send target_temp or mode")
        issued_by = data.get("issued_by")
        if issued_by is not None and not isinstance(issued_by, str):
            return contract.ack(request_id, False, error="issued_by must be a string")
        target = self.thermostat.target
        if "target_temp" in data:
            try:
                target = self.thermostat.check_target(data["target_temp"])
            except ValueError as exc:
                return contract.ack(request_id, False, error=str(exc))
        mode = data.get("mode", self.mode)
        if mode not in contract.MODES:
            return contract.ack(request_id, False, error="mode must be one of %s" % ", ".join(contract.MODES))
        if target != self.thermostat.target or mode != self.mode:
            self.thermostat.set_target(target)
            self.mode = mode
            self._save()
            self._state_dirty = True
            self._next_publish = 0.0  # the next reading goes out at once with the new target
            self._control(now)
            self._log("cmd %s: target %s, mode %s" % (request_id, target, mode))
        return contract.ack(request_id, True, target_temp=target, mode=mode)

    def shutdown(self):
        """Heater off (nobody controls it once the loop stops), then say offline and disconnect."""
        self.relay.set(False)
        self.link.close(self.topics[contract.STATUS], contract.STATUS_OFFLINE.encode())
