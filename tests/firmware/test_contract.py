"""firmware/contract.py mirrors thermolog/contract.py, and what the firmware sends parses with the core contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jinja2
import pytest

import firmware  # noqa: F401 - the board's flat module names

# isort: split
import contract as fw
import ha

from thermolog import contract as core

KINDS = (core.TELEMETRY, core.STATUS, core.STATE, core.CMD, core.CMD_ACK)


def test_firmware_contract_is_the_firmware_file() -> None:
    """The flat name resolves to firmware/contract.py, not to anything else on sys.path."""
    assert fw.__file__.endswith("firmware/contract.py")


def test_topics_qos_retain_and_words_match() -> None:
    """Sub-topics, QoS, retain flags, status and heating words and the default prefix are the core's."""
    assert (fw.TELEMETRY, fw.STATUS, fw.STATE, fw.CMD, fw.CMD_ACK) == KINDS
    assert fw.DEFAULT_TOPIC_PREFIX == core.DEFAULT_TOPIC_PREFIX
    for kind in KINDS:
        assert fw.QOS[kind] == core.QOS[kind], kind
        assert fw.RETAIN[kind] == core.RETAIN[kind], kind
        assert fw.topic("esp32c3-01", kind, "p") == core.topic("esp32c3-01", kind, "p")
    assert (fw.STATUS_ONLINE, fw.STATUS_OFFLINE) == (core.STATUS_ONLINE, core.STATUS_OFFLINE)
    assert (fw.HEATING_ON, fw.HEATING_OFF) == (core.HEATING_ON, core.HEATING_OFF)


def test_payload_keys_match_the_models() -> None:
    """Telemetry keys in the seed's order, ack keys, command keys (plus mode) and state keys are the core's."""
    assert fw.TELEMETRY_KEYS == tuple(core.Telemetry.model_fields)
    assert fw.ACK_KEYS == tuple(core.CommandAck.model_fields)
    assert set(fw.COMMAND_KEYS) == set(core.Command.model_fields) | {"mode"}
    assert set(fw.STATE_KEYS) <= set(core.DeviceState.model_fields)
    assert fw.REQUEST_ID_MAX == core.Command.model_fields["request_id"].metadata[1].max_length


@pytest.mark.parametrize("device_id", ["esp32c3-01", "a", "A_b-9", "x" * 64, "", "x" * 65, "a/b", "a+b", "a#",
                                       "é", "a b", "a.b"])
def test_device_id_rule_matches(device_id: str) -> None:
    """The firmware accepts exactly the device ids the core accepts."""
    try:
        core.check_device_id(device_id)
        core_ok = True
    except core.ContractError:
        core_ok = False
    try:
        fw.check_device_id(device_id)
        fw_ok = True
    except ValueError:
        fw_ok = False
    assert fw_ok == core_ok


@pytest.mark.parametrize(("temperature", "humidity", "target", "heating"),
                         [(25.8, 44.9, 25, False), (-12.345, None, 21.5, True), (119.99, 100.0, 35.0, False)])
def test_firmware_telemetry_parses_with_the_core(temperature: float, humidity: float | None, target: float,
                                                 heating: bool) -> None:
    """Telemetry built by the firmware is valid contract telemetry with the same values."""
    payload = fw.telemetry("esp32c3-01", temperature, humidity, target, heating, "2025-07-04T00:13:36Z")
    reading = core.parse_telemetry(payload, topic_device_id="esp32c3-01")
    assert reading.temperature == round(temperature, 2)
    assert reading.humidity == (None if humidity is None else round(humidity, 1))
    assert reading.target_temp == target
    assert reading.heating == ("ON" if heating else "OFF")
    assert core.format_timestamp(reading.timestamp) == "2025-07-04T00:13:36Z"


def test_seed_reading_is_byte_for_byte_the_seed_layout() -> None:
    """The firmware sends the seed's keys in the seed's order (only the integer target becomes 25.0)."""
    payload = fw.telemetry("esp32c3-01", 25.8, 44.9, 25, False, "2025-07-04T00:13:36Z")
    seed = json.loads(b'{"temperature": 25.8, "timestamp": "2025-07-04T00:13:36Z", "humidity": 44.9, '
                      b'"target_temp": 25, "device_id": "esp32c3-01", "heating": "OFF"}')
    assert list(json.loads(payload)) == list(seed)
    assert json.loads(payload) == seed


def test_acks_and_state_parse_with_the_core() -> None:
    """Ok and error acks, the unknown-request ack and the retained state are valid contract payloads."""
    ok = core.parse_ack(fw.ack("r-1", True, target_temp=21.5))
    assert ok.ok is True and ok.request_id == "r-1" and ok.target_temp == 21.5
    bad = core.parse_ack(fw.ack("r-2", False, error="target 50.0 °C is outside 5.0..35.0 °C"))
    assert bad.ok is False and "outside" in bad.error
    assert core.parse_ack(fw.ack(fw.REQUEST_ID_UNKNOWN, False, error="malformed JSON")).request_id == "unknown"
    state = core.parse_state(fw.state(22.0, "heat", 0.5, "0.1.0"))
    assert (state.target_temp, state.mode, state.hysteresis, state.firmware) == (22.0, "heat", 0.5, "0.1.0")


def test_home_assistant_discovery_uses_contract_topics() -> None:
    """The discovery config points Home Assistant at the contract's own topics for this device."""
    cfg = json.loads(ha.discovery_payload("esp32c3-01", "Hall", "thermostats", 5.0, 35.0, 0.5, "0.1.0"))
    assert cfg["temperature_command_topic"] == core.topic("esp32c3-01", core.CMD)
    assert cfg["mode_command_topic"] == core.topic("esp32c3-01", core.CMD)
    assert cfg["availability_topic"] == core.topic("esp32c3-01", core.STATUS)
    assert cfg["current_temperature_topic"] == core.topic("esp32c3-01", core.TELEMETRY)
    assert (cfg["payload_available"], cfg["payload_not_available"]) == (core.STATUS_ONLINE, core.STATUS_OFFLINE)


def _render(template: str, now=None, **variables: object) -> str:  # noqa: ANN001 - a clock, for tests
    """Render a Home Assistant template with the few HA helpers the discovery config uses."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.globals["now"] = now or (lambda: datetime.now(UTC))
    env.globals["as_timestamp"] = lambda dt: dt.timestamp()
    return env.from_string(template).render(**variables)


def test_home_assistant_templates_speak_the_contract(tmp_path) -> None:  # noqa: ANN001 - pytest fixture
    """What Home Assistant would send from the discovery templates is a valid command the device applies, and
    what it reads from state and telemetry comes out right."""
    import config
    from device import Device

    cfg = json.loads(ha.discovery_payload("esp32c3-01", "Hall", "thermostats", 5.0, 35.0, 0.5, "0.1.0"))
    set_temp = _render(cfg["temperature_command_template"], value=22.5).encode()
    set_mode = _render(cfg["mode_command_template"], value="off").encode()
    assert core.parse_command(set_temp).target_temp == 22.5
    assert json.loads(set_mode)["mode"] == "off" and json.loads(set_mode)["request_id"].startswith("ha-")

    device_cfg = config.validate(config.merge(config.DEFAULTS, {"mqtt": {"host": "h"},
                                                                "state_file": str(tmp_path / "s.json")}),
                                 on_board=False)
    device = Device(device_cfg, sensor=None, relay=simhw_relay(), clock=None, mqtt_factory=None,
                    log=lambda m: None)
    assert core.parse_ack(device.handle_command(set_temp, 0.0)).ok is True
    assert core.parse_ack(device.handle_command(set_mode, 1.0)).ok is True
    assert (device.thermostat.target, device.mode) == (22.5, "off")

    state = json.loads(device.state_payload())
    assert _render(cfg["temperature_state_template"], value_json=state) == "22.5"
    assert _render(cfg["mode_state_template"], value_json=state) == "off"
    reading = json.loads(fw.telemetry("esp32c3-01", 25.8, 44.9, 25, True, "2025-07-04T00:13:36Z"))
    assert _render(cfg["current_temperature_template"], value_json=reading) == "25.8"
    assert _render(cfg["current_humidity_template"], value_json=reading) == "44.9"
    assert _render(cfg["action_template"], value_json=reading) == "heating"


def test_home_assistant_commands_sent_in_the_same_instant_are_both_applied(tmp_path) -> None:  # noqa: ANN001
    """A scene that sets temperature and mode at once renders both templates in the same instant: their request
    ids must differ, or the device drops the second as a replay."""
    import config
    from device import Device

    cfg = json.loads(ha.discovery_payload("esp32c3-01", "Hall", "thermostats", 5.0, 35.0, 0.5, "0.1.0"))
    frozen = datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=UTC)
    set_temp = _render(cfg["temperature_command_template"], value=23.0, now=lambda: frozen).encode()
    set_mode = _render(cfg["mode_command_template"], value="off", now=lambda: frozen).encode()
    device_cfg = config.validate(config.merge(config.DEFAULTS, {"mqtt": {"host": "h"},
                                                                "state_file": str(tmp_path / "s.json")}),
                                 on_board=False)
    device = Device(device_cfg, sensor=None, relay=simhw_relay(), clock=None, mqtt_factory=None,
                    log=lambda m: None)
    acks = [device.handle_command(set_temp, 0.0), device.handle_command(set_mode, 0.0)]
    assert all(ack is not None and core.parse_ack(ack).ok for ack in acks), acks
    assert (device.thermostat.target, device.mode) == (23.0, "off")


def simhw_relay():  # noqa: ANN201 - a firmware Relay on a fake pin
    import outputs
    import simhw

    return outputs.Relay(simhw.FakePin())
