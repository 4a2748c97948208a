"""The board's entry point (main.py) and hardware wiring (board.py) on CPython, with fake ``machine``, ``network``,
``dht``, ``ntptime`` and ``umqtt.simple`` modules in ``sys.modules``: everything else is the real firmware."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import firmware  # noqa: F401 - the board's flat module names

# isort: split
import simhw

from thermolog import contract as core

DEVICE = "esp32c3-07"
TOPIC = {kind: core.topic(DEVICE, kind) for kind in (core.TELEMETRY, core.STATUS, core.STATE, core.CMD, core.CMD_ACK)}


class Board:
    """The fake hardware behind the fake modules, with a hand-driven millisecond clock."""

    def __init__(self) -> None:
        self.ms = 0
        self.broker = simhw.FakeBroker()
        self.pins: dict[int, simhw.FakePin] = {}
        self.i2c = simhw.FakeI2C()
        self.wdt: simhw.FakeWDT | None = None
        self.wdt_timeout: int | None = None
        self.wlan = simhw.FakeWlan(up=True)
        self.temperature = 18.0
        self.mqtt_args: dict | None = None
        self.ntp_calls = 0
        self.sleep_hook = None
        self.collects = 0

    def modules(self) -> dict[str, types.ModuleType]:
        board = self

        class Pin:
            OUT = 1
            IN = 0

            def __init__(self, pin_id: int, mode: int | None = None, value: int | None = None) -> None:
                fake = board.pins.setdefault(pin_id, simhw.FakePin())
                if value is not None:
                    fake.value(value)
                self.id, self._fake = pin_id, fake

            def value(self, v: int | None = None) -> int | None:
                return self._fake.value(v)

        def make_wdt(timeout: int) -> simhw.FakeWDT:
            board.wdt, board.wdt_timeout = simhw.FakeWDT(), timeout
            return board.wdt

        class DHT22:
            def __init__(self, pin: Pin) -> None:
                self.pin = pin

            def measure(self) -> None:
                if board.temperature is None:
                    raise OSError(110)

            def temperature(self) -> float:
                return board.temperature

            def humidity(self) -> float:
                return 40.0

        def mqtt_client(client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):  # noqa: ANN001,ANN202
            board.mqtt_args = {"client_id": client_id, "server": server, "port": port, "user": user,
                               "password": password, "keepalive": keepalive, "ssl": ssl}
            return simhw.FakeMQTTClient(board.broker)

        def settime() -> None:
            board.ntp_calls += 1

        machine = types.ModuleType("machine")
        machine.Pin = Pin
        machine.I2C = lambda *a, **k: board.i2c
        machine.WDT = make_wdt
        machine.reset = lambda: pytest.fail("machine.reset() called")
        network = types.ModuleType("network")
        network.STA_IF = 0
        network.WLAN = lambda _if: types.SimpleNamespace(
            active=lambda *_: True, isconnected=board.wlan.isconnected, connect=board.wlan.connect,
            disconnect=board.wlan.disconnect)
        dht = types.ModuleType("dht")
        dht.DHT22 = DHT22
        ntptime = types.ModuleType("ntptime")
        ntptime.host = None
        ntptime.settime = settime
        umqtt = types.ModuleType("umqtt")
        simple = types.ModuleType("umqtt.simple")
        simple.MQTTClient = mqtt_client
        umqtt.simple = simple
        return {"machine": machine, "network": network, "dht": dht, "ntptime": ntptime, "umqtt": umqtt,
                "umqtt.simple": simple}

    def ticks_ms(self) -> int:
        return self.ms

    def sleep_ms(self, ms: int) -> None:
        self.ms += ms
        if self.sleep_hook is not None:
            self.sleep_hook()


@pytest.fixture
def board(monkeypatch: pytest.MonkeyPatch) -> Board:
    """Fake hardware modules installed; ``main`` and ``board`` imported fresh against them."""
    fake = Board()
    for name, module in fake.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(time, "ticks_ms", fake.ticks_ms, raising=False)
    monkeypatch.setattr(time, "ticks_diff", lambda a, b: a - b, raising=False)
    monkeypatch.setattr(time, "sleep_ms", fake.sleep_ms, raising=False)
    for name in ("board", "main"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import device

    # Count the loop's gc.collect() calls; a real full collection under pytest only costs time.
    monkeypatch.setattr(device, "gc", types.SimpleNamespace(collect=lambda: setattr(fake, "collects",
                                                                                     fake.collects + 1)))
    yield fake
    for name in ("board", "main"):
        sys.modules.pop(name, None)  # they hold the fake modules; later tests import them afresh


def write_config(tmp_path: Path, **sections: object) -> Path:
    cfg = {
        "device_id": DEVICE,
        "wifi": {"ssid": "lab", "password": "pw"},
        "mqtt": {"host": "broker.lan", "port": 1883, "tls": False, "username": "dev", "password": "secret"},
        "lcd": {"enabled": True, "i2c_address": 39},
        "control": {"target": 21.0, "hysteresis": 0.5, "min_on_s": 0, "min_off_s": 0},
        "intervals": {"loop_ms": 200, "read_s": 2, "publish_s": 2},
        "watchdog_s": 30,
        "state_file": str(tmp_path / "state.json"),
        "home_assistant": {"discovery": True, "name": "Hall"},
    }
    cfg.update(sections)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def test_main_loop_publishes_valid_contract_payloads(board: Board, tmp_path: Path) -> None:
    """main() on fake hardware: online status, state, discovery and telemetry that the core contract accepts."""
    main = importlib.import_module("main")
    device = main.main(str(write_config(tmp_path)), max_loops=60)  # 12 s of loop time
    b = board.broker
    assert board.mqtt_args == {"client_id": DEVICE, "server": "broker.lan", "port": 1883, "user": "dev",
                               "password": "secret", "keepalive": 60, "ssl": None}
    statuses = b.on(TOPIC[core.STATUS])
    assert statuses[0] == b"online" and statuses[-1] == b"offline"  # offline: the clean shutdown in finally
    assert core.parse_state(b.retained[TOPIC[core.STATE]]).target_temp == 21.0
    assert "homeassistant/climate/esp32c3-07/config" in b.retained
    readings = [core.parse_telemetry(p, topic_device_id=DEVICE) for p in b.on(TOPIC[core.TELEMETRY])]
    assert len(readings) >= 5
    assert all(r.temperature == 18.0 and r.humidity == 40.0 and r.heating == "ON" for r in readings)
    stamps = [r.timestamp for r in readings]
    assert stamps == sorted(stamps) and abs(stamps[-1].timestamp() - time.time()) < 60
    assert board.ntp_calls >= 1
    assert board.wdt_timeout == 30000 and board.wdt.feeds >= 60
    assert board.collects == 60  # one collection per loop iteration
    assert board.i2c.writes, "the LCD was never written"
    assert device.relay.on is False  # switched off by the shutdown in main()'s finally
    assert board.pins[5].writes[0] == 0 and board.pins[5].writes[-1] == 0


def test_command_through_main_changes_target_and_acks(board: Board, tmp_path: Path) -> None:
    """A command arriving at the running board changes the target; the ack carries the request id."""
    main = importlib.import_module("main")
    board.temperature = 21.0

    def on_sleep() -> None:
        if board.ms >= 2000 and not board.broker.on(TOPIC[core.CMD]):
            board.broker.deliver(TOPIC[core.CMD], b'{"request_id": "from-app-1", "target_temp": 23.5}')

    board.sleep_hook = on_sleep
    device = main.main(str(write_config(tmp_path)), max_loops=30)
    acks = [core.parse_ack(p) for p in board.broker.on(TOPIC[core.CMD_ACK])]
    assert [(a.request_id, a.ok, a.target_temp) for a in acks] == [("from-app-1", True, 23.5)]
    assert device.thermostat.target == 23.5
    assert json.loads((tmp_path / "state.json").read_text()) == {"target_temp": 23.5, "mode": "heat", "schedule": []}
    heating = [core.parse_telemetry(p).heating for p in board.broker.on(TOPIC[core.TELEMETRY])]
    assert heating[0] == "OFF" and heating[-1] == "ON"  # 21.0 is inside 20.75..21.25, below 23.25


def test_crash_in_loop_switches_heater_off(board: Board, tmp_path: Path) -> None:
    """Whatever ends the loop, main()'s finally switches the heater off and says offline."""
    main = importlib.import_module("main")

    def interrupt() -> None:
        if board.ms >= 3000:
            raise KeyboardInterrupt

    board.sleep_hook = interrupt
    with pytest.raises(KeyboardInterrupt):
        main.main(str(write_config(tmp_path)))
    relay_pin = board.pins[5]
    assert 1 in relay_pin.writes and relay_pin.value() == 0
    assert board.broker.retained[TOPIC[core.STATUS]] == b"offline"


def test_board_builds_configured_i2c_sensor(board: Board, tmp_path: Path) -> None:
    """sensor.kind selects the driver: an SHT31 on the shared I2C bus at its address."""
    import config

    board.i2c = simhw.FakeI2C(lambda addr, n: simhw.sht31_frame(19.25, 52.0))
    board_module = importlib.import_module("board")
    cfg = config.load(str(write_config(tmp_path, sensor={"kind": "sht31"}, lcd={"enabled": False})))
    parts = board_module.build(cfg, log=lambda m: None)
    t, h = parts["sensor"].read()
    assert abs(t - 19.25) < 0.01 and abs(h - 52.0) < 0.01
    assert parts["display"] is None
    assert board.i2c.writes[0] == (0x44, b"\x24\x00")


def test_tls_context_loads_the_der_ca(board: Board, tmp_path: Path) -> None:
    """With TLS on, the client gets an SSL context that requires the broker's certificate, signed by the CA file."""
    import ssl

    import config

    der = tmp_path / "ca.der"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(tmp_path / "ca.key"), "-subj", "/CN=thermolog test CA", "-days", "1",
                    "-outform", "DER", "-out", str(der)], check=True, capture_output=True)
    board_module = importlib.import_module("board")
    cfg = config.load(str(write_config(tmp_path, mqtt={"host": "broker.lan", "tls": True, "ca_file": str(der)})))
    client = board_module.mqtt_factory(cfg)()
    assert board.mqtt_args["port"] == 8883
    ctx = board.mqtt_args["ssl"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.cert_store_stats()["x509_ca"] == 1
    assert isinstance(client, simhw.FakeMQTTClient)


def test_config_error_names_the_key(board: Board, tmp_path: Path) -> None:
    """A wrong config.json stops with the key to fix before any pin is touched."""
    import config

    main = importlib.import_module("main")
    with pytest.raises(config.ConfigError, match="mqtt.port"):
        main.main(str(write_config(tmp_path, mqtt={"host": "h", "port": 99999})))
    assert board.pins == {}


def test_example_config_is_valid() -> None:
    """The shipped firmware/config.json loads with every key known and every value in range."""
    import config

    cfg = config.load(str(Path(firmware.FIRMWARE_DIR) / "config.json"))
    assert cfg["mqtt"]["tls"] is True and cfg["mqtt"]["ca_file"] == "ca.der"
    assert set(cfg) == set(config.DEFAULTS)


def test_docs_describe_every_config_key() -> None:
    """docs/firmware.md's configuration table names every key config.py knows (and so the example uses)."""
    import config

    doc = (Path(firmware.FIRMWARE_DIR).parent / "docs" / "firmware.md").read_text()
    table = doc.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    keys = []
    for key, value in config.DEFAULTS.items():
        keys += [f"{key}.{sub}" for sub in value] if isinstance(value, dict) else [key]
    missing = [key for key in keys if f"`{key}`" not in table]
    assert not missing, f"not in docs/firmware.md's configuration table: {missing}"
