"""Device profiles: the original firmware, Zigbee2MQTT and a user's own profile become contract readings."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from ingest.journal import Position, Record
from ingest.parse import parse_records
from ingest.sinks.duckdb import DuckDBSink
from tests import zigbee2mqtt_payloads as z2m
from tests.conftest import SEED_TELEMETRY
from thermolog import contract, profiles
from thermolog.profiles import derive_id, load_profiles, profiles_from_settings
from thermolog.settings import Settings

RECEIVED_NS = 1_751_588_016_000_000_000  # 2025-07-04T00:13:36Z
ORIGINAL_READING = SEED_TELEMETRY  # the original firmware's payload, as in the seed's README
VALVE_ID = derive_id("z2m-", z2m.VALVE_NAME)


def _record(topic: str, payload: bytes, received_ns: int = RECEIVED_NS) -> Record:
    return Record("mqtt", topic, received_ns, payload, None, Position(1, 100))


@pytest.fixture
def default_profiles() -> profiles.ProfileSet:
    return profiles_from_settings(Settings(_env_file=None))


def test_original_firmware_reading_is_stored_with_its_own_timestamp(default_profiles: profiles.ProfileSet) -> None:
    """`iot/<id>/status` with the seed's payload becomes a reading of that device, kind `original`."""
    batch = parse_records([_record("iot/esp32c3-01/status", ORIGINAL_READING)], device_profiles=default_profiles)
    assert batch.rejected["topic"] == []
    cols = batch.telemetry
    assert cols["device_id"] == ["esp32c3-01"]
    assert cols["temperature"] == [25.8] and cols["humidity"] == [44.9] and cols["target_temp"] == [25.0]
    assert cols["heating"] == [False]
    assert cols["ts"] == [1_751_588_016_000_000]
    assert batch.devices["esp32c3-01"]["kind"] == "original"


def test_original_firmware_id_mismatch_is_rejected(default_profiles: profiles.ProfileSet) -> None:
    """The payload's device_id must equal the topic's, as for native devices."""
    batch = parse_records([_record("iot/other/status", ORIGINAL_READING)], device_profiles=default_profiles)
    assert batch.telemetry["device_id"] == []
    assert "does not match" in batch.rejected["reason"][0]


def test_empty_original_prefix_turns_the_profile_off() -> None:
    """`original_topic_prefix = ""`: `iot/...` is an unknown topic again, rejected with a reason."""
    off = profiles_from_settings(Settings(_env_file=None, original_topic_prefix=""))
    batch = parse_records([_record("iot/esp32c3-01/status", ORIGINAL_READING)], device_profiles=off)
    assert batch.telemetry["device_id"] == []
    assert "no device profile matches" in batch.rejected["reason"][0]
    assert "iot/+/status" not in off.subscriptions()


def test_zigbee2mqtt_base_topic_setting_moves_or_turns_off_the_profile() -> None:
    """`zigbee2mqtt_base_topic = "z2m"` reads `z2m/<name>`; empty turns the kind off (its topics are rejected)."""
    moved = profiles_from_settings(Settings(_env_file=None, zigbee2mqtt_base_topic="z2m"))
    assert "z2m/#" in moved.subscriptions() and "zigbee2mqtt/#" not in moved.subscriptions()
    batch = parse_records([_record(f"z2m/{z2m.VALVE_NAME}", z2m.valve_state(19.5, 21.5))], device_profiles=moved)
    assert batch.telemetry["device_id"] == [VALVE_ID]
    off = profiles_from_settings(Settings(_env_file=None, zigbee2mqtt_base_topic=""))
    batch = parse_records([_record(f"zigbee2mqtt/{z2m.VALVE_NAME}", z2m.valve_state(19.5, 21.5))],
                          device_profiles=off)
    assert batch.telemetry["device_id"] == [] and "no device profile matches" in batch.rejected["reason"][0]


def test_zigbee2mqtt_valve_state_is_a_reading_stamped_at_receipt(default_profiles: profiles.ProfileSet) -> None:
    """No timestamp, no humidity; heating from running_state; id derived from the friendly name."""
    topic = f"zigbee2mqtt/{z2m.VALVE_NAME}"
    batch = parse_records([_record(topic, z2m.valve_state(19.5, 21.5, running="heat"))],
                          device_profiles=default_profiles)
    assert batch.rejected["topic"] == []
    cols = batch.telemetry
    assert cols["device_id"] == [VALVE_ID]
    assert cols["ts"] == [RECEIVED_NS // 1000]
    assert cols["humidity"] == [None]
    assert cols["heating"] == [True] and cols["target_temp"] == [21.5] and cols["temperature"] == [19.5]
    device = batch.devices[VALVE_ID]
    assert (device["kind"], device["name"], device["address"]) == ("zigbee2mqtt", z2m.VALVE_NAME, z2m.VALVE_NAME)
    assert json.loads(device["details"])["target_key"] == "occupied_heating_setpoint"
    assert batch.state[0]["mode"] == "heat"


def test_zigbee2mqtt_current_heating_setpoint_and_idle(default_profiles: profiles.ProfileSet) -> None:
    """Tuya valves name the setpoint current_heating_setpoint; `idle` is heating off; `off` mode is kept."""
    batch = parse_records([_record(f"zigbee2mqtt/{z2m.TUYA_NAME}", z2m.tuya_state(18.0, 20.0, "idle", "off"))],
                          device_profiles=default_profiles)
    assert batch.telemetry["target_temp"] == [20.0] and batch.telemetry["heating"] == [False]
    assert batch.state[0]["mode"] == "off"
    assert json.loads(batch.devices[batch.telemetry["device_id"][0]]["details"])["target_key"] == \
        "current_heating_setpoint"


def test_zigbee2mqtt_other_devices_and_bridge_topics_are_ignored_not_rejected(
        default_profiles: profiles.ProfileSet) -> None:
    """A sensor's state, bridge logs and our own `/set` commands are neither stored nor rejected."""
    records = [
        _record(f"zigbee2mqtt/{z2m.SENSOR_NAME}", z2m.sensor_state()),
        _record("zigbee2mqtt/bridge/state", b'{"state": "online"}'),
        _record("zigbee2mqtt/bridge/logging", b'{"level": "info", "message": "x"}'),
        _record(f"zigbee2mqtt/{z2m.VALVE_NAME}/set", b'{"occupied_heating_setpoint": 21}'),
    ]
    batch = parse_records(records, device_profiles=default_profiles)
    assert batch.rejected["topic"] == [] and batch.telemetry["device_id"] == []
    assert batch.ignored == 4


def test_zigbee2mqtt_bridge_devices_lists_only_thermostats(default_profiles: profiles.ProfileSet) -> None:
    """`bridge/devices` registers the devices exposing `climate`, with the setpoint limits of their feature."""
    batch = parse_records([_record("zigbee2mqtt/bridge/devices", z2m.bridge_devices())],
                          device_profiles=default_profiles)
    assert batch.rejected["topic"] == []
    assert {d["name"] for d in batch.devices.values()} == {z2m.VALVE_NAME, z2m.TUYA_NAME}
    details = json.loads(batch.devices[VALVE_ID]["details"])
    assert details == {"ieee_address": z2m.VALVE_IEEE, "model": "014G2461", "vendor": "Danfoss",
                       "target_key": "occupied_heating_setpoint", "setpoint_min": 5, "setpoint_max": 35,
                       "setpoint_step": 0.5, "modes": ["heat"]}


def test_zigbee2mqtt_availability_is_status_once_the_device_is_a_thermostat(
        default_profiles: profiles.ProfileSet) -> None:
    """`{"state": "offline"}` on `<name>/availability` is a thermostat's status; a sensor's is ignored, and a
    valve's that arrives before the device list is recorded when the list arrives."""
    early = RECEIVED_NS - 1000
    records = [
        _record(f"zigbee2mqtt/{z2m.VALVE_NAME}/availability", z2m.availability(True), early),
        _record(f"zigbee2mqtt/{z2m.SENSOR_NAME}/availability", z2m.availability(True)),
        _record("zigbee2mqtt/bridge/devices", z2m.bridge_devices()),
        _record(f"zigbee2mqtt/{z2m.VALVE_NAME}/availability", z2m.availability(False)),
    ]
    batch = parse_records(records, device_profiles=default_profiles)
    assert batch.status == [(VALVE_ID, early // 1000, "online"), (VALVE_ID, RECEIVED_NS // 1000, "offline")]
    assert batch.rejected["topic"] == []
    assert derive_id("z2m-", z2m.SENSOR_NAME) not in batch.devices


def test_unknown_topic_is_rejected_naming_the_profiles(default_profiles: profiles.ProfileSet) -> None:
    """Nothing is silently dropped: a topic no profile knows lands in `rejected` with a reason."""
    batch = parse_records([_record("shellies/trv-1/info", b"{}")], device_profiles=default_profiles)
    assert "no device profile matches" in batch.rejected["reason"][0]
    assert "original, zigbee2mqtt" in batch.rejected["reason"][0]


def test_bad_values_on_a_profile_topic_are_rejected(default_profiles: profiles.ProfileSet) -> None:
    """A thermostat payload with a non-number or out-of-range value is rejected with the field named."""
    bad = json.loads(ORIGINAL_READING)
    bad["temperature"] = "hot"
    batch = parse_records([_record("iot/esp32c3-01/status", json.dumps(bad).encode())],
                          device_profiles=default_profiles)
    assert "temperature" in batch.rejected["reason"][0]


@pytest.mark.parametrize(("name", "expected"), [
    ("hallway", "z2m-hallway"),
    ("Living room/Radiator valve", "z2m-living-room-radiator-valve-"),
    ("living-room", "z2m-living-room"),
    ("Living-room", "z2m-living-room-"),
])
def test_derived_ids_follow_the_documented_rule(name: str, expected: str) -> None:
    """Lower-case slug; a hash of the name is appended whenever the slug changed the name."""
    derived = derive_id("z2m-", name)
    assert derived.startswith(expected)
    assert len(derived) == len(expected) + (6 if expected.endswith("-") else 0)


def test_the_documented_user_profile_works(tmp_path, monkeypatch) -> None:
    """The worked example in docs/devices.md, as thermolog.toml, adds a kind; dotted keys read nested fields, a
    duty cycle above 0 is heating, and a setpoint renders as the device takes it."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "devices.md").read_text()
    example = re.search(r"```toml\n(.*?)```", docs, re.DOTALL).group(1)
    (tmp_path / "thermolog.toml").write_text(example)
    monkeypatch.chdir(tmp_path)
    device_profiles = profiles_from_settings(Settings(_env_file=None))
    assert "tele/+/SENSOR" in device_profiles.subscriptions()
    payload = (b'{"Time": "2025-07-04T02:13:36", "DS18B20": {"Id": "01144A0CB2AA", "Temperature": 20.5}, '
               b'"Thermostat0": {"ThermostatModeSet": 1, "TempTargetSet": 22, "CtrDutyCycleRead": 40}}')
    batch = parse_records([_record("tele/tasmota_a1/SENSOR", payload)], device_profiles=device_profiles)
    assert batch.telemetry["device_id"] == ["tasmota_a1"] and batch.telemetry["heating"] == [True]
    assert (batch.telemetry["temperature"], batch.telemetry["target_temp"]) == ([20.5], [22.0])
    assert batch.devices["tasmota_a1"]["kind"] == "tasmota-thermostat"
    profile = device_profiles.by_name("tasmota-thermostat")
    assert profiles.render_payload(profile.setpoint_payload, {"value": 21.5}) == b"21.5"
    assert profile.topic_for(profile.command_topic, "tasmota_a1") == "cmnd/tasmota_a1/TempTargetSet"


def test_invalid_user_profile_fails_loudly_naming_the_key() -> None:
    """A profile without a target field or with two id placeholders is refused at start."""
    with pytest.raises(ValueError, match="target_temp"):
        load_profiles("", "", [{"name": "x", "state_topic": "a/{id}", "temperature": ["t"]}])
    with pytest.raises(ValueError, match="exactly one"):
        load_profiles("", "", [{"name": "x", "state_topic": "a/{id}/{name}", "temperature": ["t"],
                                "target_temp": ["s"]}])
    with pytest.raises(ValueError, match="wildcards"):
        load_profiles("", "", [{"name": "x", "state_topic": "a/+/{id}", "temperature": ["t"], "target_temp": ["s"]}])
    with pytest.raises(ValueError, match="confirm"):
        load_profiles("", "", [{"name": "x", "state_topic": "a/{id}", "temperature": ["t"], "target_temp": ["s"],
                                "confirm": "ack"}])
    with pytest.raises(ValueError, match="taken"):
        load_profiles("iot", "", [{"name": "original", "state_topic": "a/{id}", "temperature": ["t"],
                                   "target_temp": ["s"]}])


def test_profile_devices_are_stored_with_their_kind(tmp_path, default_profiles: profiles.ProfileSet) -> None:
    """The sink keeps one `devices` row per device, merging what the device list and readings said."""
    records = [
        _record("zigbee2mqtt/bridge/devices", z2m.bridge_devices()),
        _record(f"zigbee2mqtt/{z2m.VALVE_NAME}", z2m.valve_state(19.5, 21.5)),
        _record("iot/esp32c3-01/status", ORIGINAL_READING),
    ]
    sink = DuckDBSink(tmp_path / "t.duckdb")
    for record in records:  # one flush each: the merge across flushes is what matters
        sink.write(parse_records([record], device_profiles=default_profiles), [record])
    con = duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True)
    rows = dict(con.execute("SELECT device_id, kind FROM devices").fetchall())
    assert rows == {VALVE_ID: "zigbee2mqtt", derive_id("z2m-", z2m.TUYA_NAME): "zigbee2mqtt",
                    "esp32c3-01": "original"}
    details = json.loads(con.execute("SELECT details FROM devices WHERE device_id = ?", [VALVE_ID]).fetchone()[0])
    assert details["setpoint_step"] == 0.5 and details["target_key"] == "occupied_heating_setpoint"
    assert con.execute("SELECT count(*) FROM telemetry").fetchone()[0] == 2
    con.close()


def test_the_native_profile_describes_the_contract() -> None:
    """Read through the native profile, the seed's reading gives exactly the contract's parse of it."""
    native = profiles.native_profile()
    translated = profiles.translate(native, "esp32c3-01", SEED_TELEMETRY, datetime.now(UTC))
    assert translated.reading == contract.parse_telemetry(SEED_TELEMETRY, "esp32c3-01")
    assert native.confirm == profiles.CONFIRM_ACK


def test_receipt_time_helper() -> None:
    assert profiles.utc_from_us(RECEIVED_NS // 1000) == datetime(2025, 7, 4, 0, 13, 36, tzinfo=UTC)
