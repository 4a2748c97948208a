"""Firmware cases shared by CPython and real MicroPython (tests/firmware/: test_cases.py, test_micropython.py).

Plain functions with asserts, each taking a scratch directory; ``run_all(tmp)`` returns the names that passed.
They import the firmware's flat modules (on CPython ``import firmware`` first) and use only the fakes in
``firmware/simhw.py``. Written in the subset MicroPython supports.
"""

import gc
import json
import sys

try:
    import firmware  # noqa: F401 - CPython: puts the board's flat module names on sys.path
except ImportError:  # MicroPython: the modules already sit in /lib
    pass

# isort: split
import clock
import config
import contract
import ha
import lcd
import outputs
import sensors
import simhw
import store
import wifi
from device import Device
from ringbuf import RingBuffer

DEVICE = "esp32c3-01"
T0 = 1751588016  # 2025-07-04T00:13:36Z, the seed reading's time
# A full collection per loop is what the board does; on CPython (big heap under pytest) it only costs time.
COLLECT = gc.collect if sys.implementation.name == "micropython" else (lambda: 0)
TOPIC = {}
for _kind in (contract.TELEMETRY, contract.STATUS, contract.STATE, contract.CMD, contract.CMD_ACK,
              contract.SCHEDULE_POINTS):
    TOPIC[_kind] = contract.topic(DEVICE, _kind)


class Rig:
    """A Device on fakes with a hand-driven clock; ``run(seconds)`` steps the loop every ``tick`` seconds."""

    def __init__(self, tmp, name, temperature=20.0, synced=True, **sections):
        overrides = {"device_id": DEVICE, "mqtt": {"host": "broker.test", "backoff_min_s": 1, "backoff_max_s": 4},
                     "state_file": tmp + "/" + name + ".json",
                     "control": {"target": 21.0, "hysteresis": 1.0, "min_on_s": 0, "min_off_s": 0},
                     "intervals": {"read_s": 2, "publish_s": 2, "drain_per_loop": 5},
                     "buffer": {"max_readings": 50}}
        for key in sections:
            overrides[key] = sections[key]
        self.cfg = config.validate(config.merge(config.DEFAULTS, overrides), on_board=False)
        self.ticks = simhw.ManualTicks()
        self.synced = synced
        self.clock = clock.Clock(self.ticks.ticks_ms, self.ticks.ticks_diff, unix_ms=self._unix_ms,
                                 set_time=self._set_time)
        self.broker = simhw.FakeBroker()
        self.pin = simhw.FakePin()
        self.sensor = simhw.FakeSensor(temperature, 45.0)
        self.wdt = simhw.FakeWDT()
        self.logs = []
        self.device = self.boot()

    def _unix_ms(self):
        return T0 * 1000 + self.ticks.ms

    def _set_time(self):
        if not self.synced:
            raise OSError("ETIMEDOUT")

    def boot(self):
        """(Re)start the firmware on the same flash, pins and broker, as after a reset."""
        self.relay = outputs.Relay(self.pin)
        self.device = Device(self.cfg, self.sensor, self.relay, self.clock, self.broker.factory,
                             watchdog=self.wdt, log=self.logs.append, collect=COLLECT)
        return self.device

    def run(self, seconds, tick=0.5):
        for _ in range(int(seconds / tick + 0.5)):
            self.device.step()
            self.ticks.advance(tick)

    def command(self, payload):
        self.broker.deliver(TOPIC[contract.CMD], payload)
        self.run(1)

    def acks(self):
        return [json.loads(p) for p in self.broker.on(TOPIC[contract.CMD_ACK])]

    def readings(self):
        return [json.loads(p) for p in self.broker.on(TOPIC[contract.TELEMETRY])]


def _raises(exc_type, func, *args):
    try:
        func(*args)
    except exc_type:
        return True
    raise AssertionError("%s did not raise %s" % (func, exc_type))  # noqa: UP031 - MicroPython subset


# --- pure modules ------------------------------------------------------------------------------------------
def case_iso_utc_known_dates(tmp):
    assert clock.iso_utc(0) == "1970-01-01T00:00:00Z"
    assert clock.iso_utc(T0) == "2025-07-04T00:13:36Z"
    assert clock.iso_utc(951782400) == "2000-02-29T00:00:00Z"
    assert clock.iso_utc(4102444799.9) == "2099-12-31T23:59:59Z"


def case_clock_survives_tick_wrap(tmp):
    period = 1 << 30  # ESP32 ticks_ms wraps here

    class Ticks:
        ms = period - 1500

    def diff(a, b):
        return ((a - b + period // 2) % period) - period // 2

    c = clock.Clock(lambda: Ticks.ms % period, diff, unix_ms=lambda: T0 * 1000 + 999)
    assert c.wall(0) is None and not c.synced
    Ticks.ms += 1000
    assert c.monotonic() == 1.0
    Ticks.ms += 1000  # across the wrap
    assert c.monotonic_ms() == 2000
    assert c.sync(2.0) and c.synced
    assert c.wall(2000) == T0 and c.wall(2001) == T0 + 1  # whole seconds, integer arithmetic
    assert c.wall(2000 - 3600 * 1000) == T0 - 3600  # a reading from an hour before the sync


def case_readings_before_ntp_keep_their_time(tmp):
    rig = Rig(tmp, "ntp", synced=False)
    rig.run(6)
    assert rig.readings() == [] and len(rig.device.buffer) == 3  # no wall time yet: nothing sent, nothing lost
    rig.synced = True
    rig.clock.sync(rig.clock.monotonic())
    rig.run(1)
    stamps = [r["timestamp"] for r in rig.readings()]
    assert stamps[:3] == ["2025-07-04T00:13:36Z", "2025-07-04T00:13:38Z", "2025-07-04T00:13:40Z"], stamps


def case_ring_buffer_is_bounded_fifo(tmp):
    buf = RingBuffer(3)
    for i in range(5):
        buf.append(i)
    assert len(buf) == 3 and buf.dropped == 2
    assert [buf.pop() for _ in range(3)] == [2, 3, 4]
    assert buf.peek() is None
    _raises(IndexError, buf.pop)


def case_telemetry_payload_is_the_contract(tmp):
    payload = contract.telemetry(DEVICE, 25.8, 44.9, 25, False, "2025-07-04T00:13:36Z")
    assert payload == (b'{"temperature": 25.8, "timestamp": "2025-07-04T00:13:36Z", "humidity": 44.9, '
                       b'"target_temp": 25.0, "device_id": "esp32c3-01", "heating": "OFF"}'), payload
    no_humidity = json.loads(contract.telemetry(DEVICE, 20.126, None, 21.5, True, "2025-07-04T00:13:36Z"))
    assert "humidity" not in no_humidity and no_humidity["heating"] == "ON" and no_humidity["temperature"] == 20.13
    _raises(ValueError, contract.telemetry, DEVICE, float("nan"), None, 21.0, True, "x")
    _raises(ValueError, contract.topic, "bad/id", contract.CMD)


def case_config_rejects_unknown_keys_and_bad_values(tmp):
    cfg = config.validate(config.merge(config.DEFAULTS, {"mqtt": {"host": "h"}}), on_board=False)
    assert cfg["mqtt"]["port"] == 8883 and config.DEFAULTS["mqtt"]["host"] == ""
    bad = [
        ({"mqtt": {"host": "h", "prot": 1}}, "mqtt.prot"),
        ({"mqtt": {"host": "h", "port": 0}}, "mqtt.port"),
        ({"mqtt": {"host": "h"}, "sensor": {"kind": "bme280"}}, "sensor.kind"),
        ({"mqtt": {"host": "h"}, "control": {"target": 40}}, "control.target"),
        ({"mqtt": {"host": "h"}, "device_id": "a/b"}, "device_id"),
        ({"mqtt": {"host": "h"}, "intervals": {"read_s": 1}}, "intervals.read_s"),  # DHT22 needs 2 s
        ({"mqtt": {"host": "h", "username": "u"}}, "mqtt.username"),
    ]
    for override, key in bad:
        try:
            config.validate(config.merge(config.DEFAULTS, override), on_board=False)
        except config.ConfigError as exc:
            assert key in str(exc), (key, str(exc))
        else:
            raise AssertionError("accepted %r" % (override,))  # noqa: UP031
    try:
        config.validate(config.merge(config.DEFAULTS, {"mqtt": {"host": "h"}}))
    except config.ConfigError as exc:
        assert "wifi.ssid" in str(exc)
    else:
        raise AssertionError("accepted a board config without Wi-Fi")
    try:
        config.validate(config.merge(config.DEFAULTS, {"wifi": {"ssid": "n"}, "mqtt": {"host": "h", "ca_file": None}}))
    except config.ConfigError as exc:
        assert "mqtt.ca_file" in str(exc)
    else:
        raise AssertionError("accepted TLS without a CA on a board")


def case_config_file_loads(tmp):
    path = tmp + "/config.json"
    with open(path, "w") as handle:
        json.dump({"wifi": {"ssid": "net"}, "mqtt": {"host": "h"}, "sensor": {"kind": "sht31"}}, handle)
    cfg = config.load(path)
    assert cfg["sensor"]["kind"] == "sht31" and cfg["wifi"]["password"] == ""
    with open(path, "w") as handle:
        handle.write("{not json")
    _raises(config.ConfigError, config.load, path)
    _raises(config.ConfigError, config.load, tmp + "/missing.json")


def case_crc8_matches_datasheet(tmp):
    assert sensors.crc8(b"\xbe\xef") == 0x92  # Sensirion SHT3x datasheet example


def case_aht20_decodes_and_checks(tmp):
    frames = [simhw.aht20_frame(22.5, 41.0, status=0x10)]  # first status read: not calibrated

    def respond(address, n):
        assert address == sensors.AHT20_ADDRESS
        return frames[0][:n]

    bus = simhw.FakeI2C(respond)
    aht = sensors.AHT20(bus, lambda ms: None)
    frames[0] = simhw.aht20_frame(22.5, 41.0, status=0x18)
    t, h = aht.read()
    assert abs(t - 22.5) < 0.01 and abs(h - 41.0) < 0.01, (t, h)
    assert (sensors.AHT20_ADDRESS, b"\xac\x33\x00") in bus.writes
    frames[0] = simhw.aht20_frame(22.5, 41.0, corrupt=True)
    _raises(OSError, aht.read)
    frames[0] = simhw.aht20_frame(22.5, 41.0, status=0x98)  # busy bit
    _raises(OSError, aht.read)
    _raises(OSError, sensors.AHT20(simhw.FakeI2C(), lambda ms: None).read)  # nothing on the bus


def case_sht31_decodes_and_checks(tmp):
    frame = [simhw.sht31_frame(-3.25, 77.5)]
    sht = sensors.SHT31(simhw.FakeI2C(lambda a, n: frame[0]), lambda ms: None)
    t, h = sht.read()
    assert abs(t + 3.25) < 0.01 and abs(h - 77.5) < 0.01, (t, h)
    frame[0] = simhw.sht31_frame(-3.25, 77.5, corrupt=True)
    _raises(OSError, sht.read)
    frame[0] = b"\xff\xff\xac\xff\xff\xac"  # a floating bus: CRCs happen to match, value out of range
    _raises(OSError, sht.read)


def case_dht22_driver_passes_through(tmp):
    class FakeDHT:
        def __init__(self, pin):
            self.pin = pin

        def measure(self):
            pass

        def temperature(self):
            return 19.5

        def humidity(self):
            return 55.0

    class Module:
        DHT22 = FakeDHT

    assert sensors.make_sensor("dht22", pin=4, dht_module=Module).read() == (19.5, 55.0)
    _raises(ValueError, sensors.make_sensor, "bme280")


def case_lcd_shows_screen_and_skips_unchanged(tmp):
    bus = simhw.FakeI2C()
    display = lcd.Display(lcd.HD44780(bus, 0x27, 16, 2))
    assert lcd.screen(16, 21.46, 44.6, 21.5, True, False, True) == ("21.5C 45%RH", "Set 21.5 HEAT")
    assert lcd.screen(16, None, None, 21.0, False, True, False) == ("Sensor error", "Set 21.0 OFF !")
    assert display.show(21.46, 44.6, 21.5, True, False, True)
    written = len(bus.writes)
    assert not display.show(21.46, 44.6, 21.5, True, False, True) and len(bus.writes) == written
    assert all(addr == 0x27 and len(data) == 1 and data[0] & lcd.BACKLIGHT for addr, data in bus.writes)


def case_relay_active_low_writes_only_changes(tmp):
    pin = simhw.FakePin(0)
    relay = outputs.Relay(pin, active_high=False)
    assert pin.writes == [1]  # OFF at construction
    assert relay.set(True) and not relay.set(True)
    assert relay.set(False)
    assert pin.writes == [1, 0, 1] and relay.switches == 2


def case_wifi_retries_after_timeout(tmp):
    wlan = simhw.FakeWlan(up=False)
    w = wifi.Wifi(wlan, "net", "pw", timeout_s=5, retry_s=10)
    assert not w.poll(0) and wlan.connects == 1
    assert not w.poll(4) and wlan.connects == 1  # still waiting
    assert not w.poll(6) and w.failures == 1  # timed out; next try at 16
    assert not w.poll(15) and wlan.connects == 1
    wlan.up = True
    assert not w.poll(16) and wlan.connects == 2
    assert w.poll(16.5) and w.connected


def case_state_file_survives_damage(tmp):
    path = tmp + "/store.json"
    store.save(path, {"target_temp": 22.5})
    store.save(path, {"target_temp": 23.0})
    assert store.load(path) == {"target_temp": 23.0}
    with open(path, "w") as handle:
        handle.write("{trunc")
    assert store.load(path) == {}
    assert store.load(tmp + "/nothing.json") == {}


def case_ha_discovery_config(tmp):
    topic = ha.discovery_topic(DEVICE)
    assert topic == "homeassistant/climate/esp32c3-01/config"
    cfg = json.loads(ha.discovery_payload(DEVICE, "Living room", "thermostats", 5, 35, 0.5, "0.1.0"))
    assert cfg["modes"] == ["heat", "off"]
    assert cfg["temperature_command_topic"] == TOPIC[contract.CMD]
    assert cfg["current_temperature_topic"] == TOPIC[contract.TELEMETRY]
    assert cfg["temperature_state_topic"] == TOPIC[contract.STATE]
    assert cfg["availability_topic"] == TOPIC[contract.STATUS]
    assert cfg["min_temp"] == 5 and cfg["max_temp"] == 35 and cfg["temp_step"] == 0.5


# --- the main loop -----------------------------------------------------------------------------------------
def case_loop_publishes_contract_payloads(tmp):
    rig = Rig(tmp, "publish", home_assistant={"discovery": True})
    rig.run(6)
    b = rig.broker
    assert b.retained[TOPIC[contract.STATUS]] == b"online"
    state = json.loads(b.retained[TOPIC[contract.STATE]])
    assert state["target_temp"] == 21.0 and state["mode"] == "heat" and state["firmware"]
    assert "homeassistant/climate/esp32c3-01/config" in b.retained
    readings = rig.readings()
    assert len(readings) == 3, readings
    for r in readings:
        assert list(sorted(r)) == sorted(contract.TELEMETRY_KEYS)
        assert r["device_id"] == DEVICE and r["timestamp"].endswith("Z")
    assert [q for (t, _p, _r, q) in b.published if t == TOPIC[contract.TELEMETRY]] == [1, 1, 1]
    assert b.clients[0].will == (TOPIC[contract.STATUS], b"offline", True, 1)
    assert rig.wdt.feeds >= rig.device.loops


def case_command_changes_target_and_relay_follows(tmp):
    rig = Rig(tmp, "command", temperature=21.2)  # band 20.5..21.5 around 21.0: idle
    rig.run(3)
    assert rig.relay.on is False
    rig.command(b'{"request_id": "r-1", "target_temp": 23.0, "issued_by": "ops"}')
    assert rig.acks() == [{"request_id": "r-1", "ok": True, "target_temp": 23.0, "mode": "heat"}]
    assert rig.relay.on is True and rig.device.thermostat.target == 23.0
    assert json.loads(rig.broker.retained[TOPIC[contract.STATE]])["target_temp"] == 23.0
    rig.sensor.temperature = 23.6  # above 23.5: the band's top
    rig.run(3)
    assert rig.relay.on is False
    rig.command(b'{"request_id": "r-2", "mode": "off"}')
    rig.sensor.temperature = 15.0
    rig.run(4)
    assert rig.relay.on is False and rig.acks()[-1]["ok"] is True and rig.acks()[-1]["mode"] == "off"
    assert rig.readings()[-1]["target_temp"] == 23.0
    assert json.loads(rig.broker.retained[TOPIC[contract.STATE]])["mode"] == "off"


def case_schedule_points_followed_while_broker_is_down(tmp):
    rig = Rig(tmp, "schedule", temperature=21.2)
    rig.run(2)
    points = [[T0 - 3600, 19.0], [T0 + 10, 23.0], [T0 + 30, 18.0]]
    rig.broker.deliver(TOPIC[contract.SCHEDULE_POINTS],
                       json.dumps({"issued_at": "2025-07-04T00:13:36Z", "points": points}).encode())
    rig.run(2)
    assert rig.device.thermostat.target == 19.0  # the point in force applies at once
    assert json.loads(rig.broker.retained[TOPIC[contract.STATE]])["target_temp"] == 19.0
    rig.broker.drop()
    rig.run(10)  # past T0 + 10 with no broker
    assert rig.device.thermostat.target == 23.0 and rig.relay.on is True
    rig.run(20)  # past T0 + 30
    assert rig.device.thermostat.target == 18.0 and rig.relay.on is False
    rig.broker.restore()
    rig.run(4)
    assert json.loads(rig.broker.retained[TOPIC[contract.STATE]])["target_temp"] == 18.0
    rig.command(b'{"request_id": "s-1", "target_temp": 22.0}')  # by hand: holds until the next point
    rig.run(4)
    assert rig.device.thermostat.target == 22.0
    rig.boot()  # the points survive a reboot
    assert rig.device.schedule.points == [(p[0], p[1]) for p in points]
    rig.broker.deliver(TOPIC[contract.SCHEDULE_POINTS], b'{"points": "garbage"}')
    rig.run(2)
    assert len(rig.device.schedule.points) == 3


def case_bad_commands_get_error_acks(tmp):
    rig = Rig(tmp, "bad")
    rig.run(2)
    for payload in (b'{"request_id": "b-1", "target_temp": 50}', b'{"request_id": "b-2", "target_temp": 21.3}',
                    b'{"request_id": "b-3", "target_temp": "22"}', b'{"request_id": "b-4", "target": 22}',
                    b'{"request_id": "b-5"}', b'{"request_id": "b-6", "mode": "cool"}', b"not json",
                    b'{"target_temp": 22}', b"[1, 2]"):
        rig.command(payload)
    acks = rig.acks()
    assert [a["request_id"] for a in acks] == ["b-1", "b-2", "b-3", "b-4", "b-5", "b-6", "unknown", "unknown",
                                               "unknown"], acks
    for a in acks:
        assert a["ok"] is False and a["error"], a
    assert "outside" in acks[0]["error"] and "multiple" in acks[1]["error"] and "target" in acks[3]["error"]
    assert rig.device.thermostat.target == 21.0


def case_replayed_request_id_is_ignored(tmp):
    rig = Rig(tmp, "replay")
    rig.run(2)
    rig.command(b'{"request_id": "same", "target_temp": 22.0}')
    rig.command(b'{"request_id": "other", "target_temp": 24.0}')
    rig.command(b'{"request_id": "same", "target_temp": 30.0}')
    assert [a["request_id"] for a in rig.acks()] == ["same", "other"]
    assert rig.device.thermostat.target == 24.0


def case_dropped_broker_buffers_and_drains_in_order(tmp):
    rig = Rig(tmp, "drain")
    rig.run(4)
    sent_before = len(rig.readings())
    rig.broker.drop()
    assert rig.broker.retained[TOPIC[contract.STATUS]] == b"offline"  # the last will
    rig.run(20)
    assert len(rig.device.buffer) >= 9, len(rig.device.buffer)
    assert len(rig.readings()) == sent_before
    rig.broker.restore()
    rig.run(10)
    assert len(rig.device.buffer) <= 1
    stamps = [r["timestamp"] for r in rig.readings()]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), stamps
    assert len(stamps) >= sent_before + 14
    assert rig.broker.retained[TOPIC[contract.STATUS]] == b"online"
    assert rig.device.link.connects == 2


def case_full_buffer_drops_oldest(tmp):
    rig = Rig(tmp, "full", buffer={"max_readings": 4})
    rig.broker.up = False
    rig.run(20)
    assert len(rig.device.buffer) == 4 and rig.device.buffer.dropped == 6
    oldest_kept = clock.iso_utc(T0 + rig.device.buffer.peek()[0] // 1000)
    assert oldest_kept == "2025-07-04T00:13:48Z"  # readings at 0..18 s: the six oldest of ten were dropped
    rig.broker.restore()
    rig.run(6)
    stamps = [r["timestamp"] for r in rig.readings()]
    assert stamps and stamps[0] >= oldest_kept and stamps == sorted(stamps), stamps


def case_reconnect_never_toggles_relay(tmp):
    rig = Rig(tmp, "relay", temperature=19.0)
    rig.run(2)
    assert rig.relay.on is True
    writes = len(rig.pin.writes)
    for _ in range(3):
        rig.broker.drop()
        rig.run(6)
        rig.broker.restore()
        rig.run(6)
    assert rig.relay.on is True and len(rig.pin.writes) == writes, rig.pin.writes
    assert rig.device.link.connects == 4


def case_target_persists_across_reboot(tmp):
    rig = Rig(tmp, "persist")
    rig.run(2)
    rig.command(b'{"request_id": "p-1", "target_temp": 24.5, "mode": "off"}')
    rig.boot()  # power cycle: new Device, same flash
    assert rig.device.thermostat.target == 24.5 and rig.device.mode == "off"
    rig.run(2)
    assert json.loads(rig.broker.retained[TOPIC[contract.STATE]])["target_temp"] == 24.5
    with open(rig.cfg["state_file"], "w") as handle:
        handle.write('{"target_temp": 99}')
    rig.boot()  # a saved value outside the limits falls back to the configured target
    assert rig.device.thermostat.target == 21.0


def case_dead_sensor_switches_heater_off(tmp):
    rig = Rig(tmp, "dead", temperature=18.0, sensor={"stale_after_s": 10},
              control={"target": 21.0, "hysteresis": 1.0, "min_on_s": 600, "min_off_s": 0})
    rig.run(4)
    assert rig.relay.on is True
    rig.sensor.temperature = None
    rig.run(6)
    assert rig.relay.on is True  # one failed read keeps the last good value until it is stale...
    rig.run(6)
    assert rig.relay.on is False  # ...then the heater goes off despite the minimum on time
    assert rig.device.thermostat.reason == "sensor reading stale"
    assert rig.device.sensor_errors >= 5
    count = len(rig.readings())
    rig.run(4)
    assert len(rig.readings()) == count  # no reading is invented while the sensor is dead


def case_wifi_down_keeps_control_running(tmp):
    rig = Rig(tmp, "wifi", temperature=19.0)
    wlan = simhw.FakeWlan(up=False)
    rig.device.wifi = wifi.Wifi(wlan, "net", "pw", timeout_s=2, retry_s=2)
    rig.run(4)
    assert rig.relay.on is True and not rig.device.link.connected and rig.readings() == []
    rig.sensor.temperature = 22.0
    rig.run(2)
    assert rig.relay.on is False
    wlan.up = True
    rig.run(6)
    assert rig.device.link.connected and len(rig.readings()) >= 5


CASES = [
    case_iso_utc_known_dates,
    case_clock_survives_tick_wrap,
    case_readings_before_ntp_keep_their_time,
    case_ring_buffer_is_bounded_fifo,
    case_telemetry_payload_is_the_contract,
    case_config_rejects_unknown_keys_and_bad_values,
    case_config_file_loads,
    case_crc8_matches_datasheet,
    case_aht20_decodes_and_checks,
    case_sht31_decodes_and_checks,
    case_dht22_driver_passes_through,
    case_lcd_shows_screen_and_skips_unchanged,
    case_relay_active_low_writes_only_changes,
    case_wifi_retries_after_timeout,
    case_state_file_survives_damage,
    case_ha_discovery_config,
    case_loop_publishes_contract_payloads,
    case_command_changes_target_and_relay_follows,
    case_bad_commands_get_error_acks,
    case_replayed_request_id_is_ignored,
    case_dropped_broker_buffers_and_drains_in_order,
    case_full_buffer_drops_oldest,
    case_reconnect_never_toggles_relay,
    case_target_persists_across_reboot,
    case_dead_sensor_switches_heater_off,
    case_wifi_down_keeps_control_running,
]


def run_all(tmp):
    passed = []
    for case in CASES:
        case(tmp)
        passed.append(case.__name__)
    return passed
