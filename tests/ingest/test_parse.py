"""Parsing journal records into batches: what MQTT cannot even deliver is still rejected with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ingest.journal import Position, Record
from ingest.parse import _plain_reading, epoch_us, parse_records
from tests.conftest import SEED_SYSTEM, SEED_TELEMETRY
from tests.ingest_support import telemetry
from thermolog import contract
from thermolog.contract import ContractError

PREFIX = "thermostats"


def _record(topic: str, payload: bytes, source: str = "mqtt") -> Record:
    return Record(source, topic, 1_700_000_000_000_000_000, payload, None, Position(1, 100))


@pytest.mark.parametrize(("device_id", "topic"), [
    ("a+b", "thermostats/a+b/telemetry"),  # a wildcard: no MQTT client may publish this topic
    ("a#", "thermostats/a#/telemetry"),
    ("a/b", "thermostats/a/b/telemetry"),  # an extra level: no `+` subscription matches it
    ("température", "thermostats/température/telemetry"),
    ("x" * 65, f"thermostats/{'x' * 65}/telemetry"),
])
def test_device_ids_outside_the_pattern_are_rejected(device_id: str, topic: str) -> None:
    """Ids with wildcards, slashes, non-ASCII or over 64 characters are rejected, never stored."""
    batch = parse_records([_record(topic, telemetry(device_id, 1))], PREFIX)
    assert batch.telemetry["device_id"] == []
    assert batch.rejected["topic"] == [topic]
    reason = batch.rejected["reason"][0]
    assert "device_id" in reason or "unknown topic" in reason, reason


def test_payload_id_with_wildcard_on_a_valid_topic_is_rejected() -> None:
    """The payload's id must match the topic's even when only the payload is odd."""
    batch = parse_records([_record("thermostats/dev-1/telemetry", telemetry("dev+1", 1))], PREFIX)
    assert batch.accepted == 0
    assert "device_id" in batch.rejected["reason"][0]


@pytest.mark.parametrize(("payload", "reason"), [
    (b'{"temperature": 1e999, "timestamp": "2025-07-04T00:13:36Z", "target_temp": 25, "device_id": "d", '
     b'"heating": "OFF"}', "infinity"),
    (b'{"temperature": 500, "timestamp": "2025-07-04T00:13:36Z", "target_temp": 25, "device_id": "d", '
     b'"heating": "OFF"}', "temperature"),
    (b'{"temperature": true, "timestamp": "2025-07-04T00:13:36Z", "target_temp": 25, "device_id": "d", '
     b'"heating": "OFF"}', "temperature"),
    (b'{"temperature": 20, "timestamp": "2025-07-04T00:13:36", "target_temp": 25, "device_id": "d", '
     b'"heating": "OFF"}', "time zone"),
    (b'{"temperature": 20, "timestamp": "2025-07-04T00:13:36Z", "target_temp": 25, "device_id": "d", '
     b'"heating": "on"}', "heating"),
    (b'{"temperature": 20, "timestamp": "2025-07-04T00:13:36Z", "target_temp": 25, "device_id": "d", '
     b'"heating": "OFF", "extra": 1}', "extra"),
    (b"[1, 2]", "JSON object"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_bad_telemetry_values_are_rejected_with_the_field_named(payload: bytes, reason: str) -> None:
    """Out-of-range, boolean, naive-time, unknown and extra fields each give a reason naming the problem."""
    batch = parse_records([_record("thermostats/d/telemetry", payload)], PREFIX)
    assert batch.accepted == 0
    assert reason in batch.rejected["reason"][0]


def test_every_topic_kind_is_sorted_into_its_table() -> None:
    """Telemetry, system, status, state, cmd and cmd/ack each land in their own batch part."""
    batch = parse_records([
        _record("thermostats/esp32c3-01/telemetry", SEED_TELEMETRY),
        _record("edge/gw-1/system", SEED_SYSTEM),
        _record("thermostats/esp32c3-01/status", b"offline"),
        _record("thermostats/esp32c3-01/state", b'{"target_temp": 20, "mode": "heat", "future_key": 1}'),
        _record("thermostats/esp32c3-01/cmd", b'{"request_id": "r", "target_temp": 21.5}'),
        _record("thermostats/esp32c3-01/cmd/ack", b'{"request_id": "r", "ok": true}'),
        _record("thermostats/esp32c3-01/status", b"sleeping"),
        _record("elsewhere/x/telemetry", SEED_TELEMETRY),
    ], PREFIX)
    assert batch.telemetry["temperature"] == [25.8] and batch.telemetry["target_temp"] == [25.0]
    assert batch.system["host"] == ["gw-1"] and batch.system["memory_usage"] == [6.6]
    assert [s[2] for s in batch.status] == ["offline"]
    assert batch.state[0]["target_temp"] == 20 and batch.state[0]["mode"] == "heat"
    assert batch.commands[0]["request_id"] == "r" and batch.acks[0]["ok"] is True
    assert batch.rejected["topic"] == ["thermostats/esp32c3-01/status", "elsewhere/x/telemetry"]
    assert batch.accepted == 6


def test_rejected_payload_is_cut_to_the_limit_but_its_size_kept() -> None:
    """A 1 MB payload is stored as its first bytes, with the full size recorded."""
    payload = b"{" + b" " * (1024 * 1024)
    batch = parse_records([_record("thermostats/d/telemetry", payload)], PREFIX, rejected_max_bytes=100)
    assert batch.rejected["payload"] == [payload[:100]]
    assert batch.rejected["payload_size"] == [len(payload)]
    assert "exceeds" in batch.rejected["reason"][0]


def test_topic_with_undecodable_bytes_is_rejected_with_a_printable_topic() -> None:
    """Journal topics keep raw bytes as surrogates; the rejected row gets valid UTF-8."""
    topic = b"thermostats/\xff/telemetry".decode("utf-8", errors="surrogateescape")
    batch = parse_records([_record(topic, SEED_TELEMETRY)], PREFIX)
    assert batch.rejected["topic"] == ["thermostats/\ufffd/telemetry"]


def test_home_assistant_mode_command_is_audited_with_its_sender() -> None:
    """HA's `{"request_id": "ha-mode-...", "mode": "off"}` is a command (not rejected), recorded with its mode and
    issued_by `home-assistant`; an explicit issued_by is kept."""
    records = [_record("thermostats/dev-1/cmd", b'{"request_id": "ha-mode-1751588016000000", "mode": "off"}'),
               _record("thermostats/dev-1/cmd", b'{"request_id": "r2", "target_temp": 21, "mode": "heat", '
                                                b'"issued_by": "alice"}'),
               _record("thermostats/dev-1/cmd", b'{"request_id": "r3", "mode": "cool"}')]
    batch = parse_records(records, PREFIX)
    assert [(c["request_id"], c["mode"], c["target_temp"], c["issued_by"]) for c in batch.commands] == [
        ("ha-mode-1751588016000000", "off", None, "home-assistant"), ("r2", "heat", 21.0, "alice")]
    assert batch.rejected["topic"] == ["thermostats/dev-1/cmd"]
    assert "mode" in batch.rejected["reason"][0]


def test_schedule_changes_are_kept_and_broken_programs_rejected_with_the_field() -> None:
    """A program set on ``schedule`` becomes a ``schedules`` row (who, what); one that breaks the format is
    rejected naming the field, and ``schedule/points`` (for devices) is not something ingest stores."""
    good = (b'{"request_id": "s1", "issued_by": "olivia", "program": {"timezone": "Europe/Berlin", '
            b'"slots": [{"days": "daily", "at": "06:30", "preset": "comfort"}]}}')
    bad = b'{"request_id": "s2", "program": {"slots": [{"days": "someday", "at": "06:30", "target": 20}]}}'
    batch = parse_records([_record("thermostats/dev-1/schedule", good), _record("thermostats/dev-1/schedule", bad),
                           _record("thermostats/dev-1/schedule", b'{"request_id": "s3"}'),
                           _record("thermostats/dev-1/schedule/points", b'{"points": []}')])
    assert [(s["device_id"], s["request_id"], s["issued_by"]) for s in batch.schedules] == [("dev-1", "s1", "olivia")]
    assert '"06:30"' in batch.schedules[0]["program"]
    reasons = batch.rejected["reason"]
    assert len(reasons) == 3 and "slots[0].days" in reasons[0] and "program" in reasons[1]
    assert "for the device" in reasons[2]


_READING = {"temperature": 20.5, "timestamp": "2025-07-04T00:13:36Z", "humidity": 40.5, "target_temp": 21,
            "device_id": "d", "heating": "ON"}
_DROP = object()


def _reading(**changes: object) -> bytes:
    fields = {**_READING, **changes}
    return orjson.dumps({key: value for key, value in fields.items() if value is not _DROP})


@pytest.mark.parametrize("payload", [
    _reading(), _reading(humidity=None), _reading(humidity=_DROP), _reading(temperature=20),
    _reading(temperature=-60), _reading(temperature=120), _reading(temperature=120.01), _reading(temperature=-60.5),
    _reading(temperature=True), _reading(temperature="20"), _reading(humidity=100), _reading(humidity=100.5),
    _reading(humidity=-0.1), _reading(humidity=False), _reading(target_temp=None), _reading(target_temp=_DROP),
    _reading(heating="on"), _reading(heating=None), _reading(heating=["ON"]), _reading(device_id="e"),
    _reading(device_id=5), _reading(device_id=_DROP), _reading(timestamp="2025-07-04T00:13:36.250Z"),
    _reading(timestamp="2025-07-04T00:13Z"), _reading(timestamp="2025-07-04Z"),
    _reading(timestamp="2025-07-04T00:13:36z"), _reading(timestamp=" 2025-07-04T00:13:36Z "),
    _reading(timestamp="2025-07-04T00:13:36+02:00"), _reading(timestamp="2025-07-04T00:13:36+02:00Z"),
    _reading(timestamp="2025-07-04T00:13:36-00:00Z"), _reading(timestamp="2025-13-04T00:13:36Z"),
    _reading(timestamp="2025-07-04T00:13:36"), _reading(timestamp=""), _reading(timestamp="Z"),
    _reading(timestamp=1751588016), _reading(extra=1), _reading(temperature=_DROP),
    b'{"temperature": 1e999, "timestamp": "2025-07-04T00:13:36Z", "target_temp": 25, "device_id": "d", '
    b'"heating": "OFF"}',
    b'{"temperature": 20, "timestamp": "2025-07-04T00:13:36Z", "target_temp": 99999999999999999999999, '
    b'"device_id": "d", "heating": "OFF"}',
    b'{"temperature": 20, "temperature": 21, "timestamp": "2025-07-04T00:13:36Z", "target_temp": 25, '
    b'"device_id": "d", "heating": "OFF"}',
    b"[]", b"null", b"", b" " + _reading() + b" ",
])
def test_telemetry_is_stored_or_rejected_exactly_as_the_contract_model_says(payload: bytes) -> None:
    """Readings skip the pydantic model when they have the usual form; whatever the payload, the values stored
    or the reason given are the model's own."""
    batch = parse_records([_record("thermostats/d/telemetry", payload)], PREFIX)
    try:
        reading = contract.parse_telemetry(payload, topic_device_id="d")
    except ContractError as exc:
        assert batch.rejected["reason"] == [exc.reason]
        assert batch.telemetry["ts"] == []
        return
    assert batch.rejected["reason"] == []
    row = {column: values[0] for column, values in batch.telemetry.items()}
    assert row == {"device_id": "d", "ts": epoch_us(reading.timestamp), "temperature": reading.temperature,
                   "humidity": reading.humidity, "target_temp": reading.target_temp,
                   "heating": reading.heating == "ON", "received_at": 1_700_000_000_000_000}
    assert [type(row[c]) for c in ("temperature", "target_temp")] == [float, float]


@pytest.mark.parametrize("payload", [SEED_TELEMETRY, telemetry("d", 7), _reading(), _reading(humidity=_DROP)])
def test_usual_readings_are_read_without_the_model(payload: bytes) -> None:
    """The seed's, the simulator's and the benchmark's payload shape take the cheap path."""
    device_id = orjson.loads(payload)["device_id"]
    assert _plain_reading(payload, device_id) is not None


_RECEIVED_US = 1_700_000_000_000_000


@pytest.mark.parametrize("max_ahead_s", [3600.0, 0.0, 0.5, 1e-7])
@pytest.mark.parametrize("ahead_us", [-10**15, -1, 0, 1, 499_000, 499_999, 500_000, 500_001, 3_599_999_000,
                                      3_599_999_999, 3_600_000_000, 3_600_000_001, 3_600_001_000])
def test_the_clock_policy_holds_at_its_edges_as_the_contract_says(max_ahead_s: float, ahead_us: int) -> None:
    """Readings a microsecond either side of the limits are kept or rejected exactly as contract.check_clock
    decides, with its reason."""
    ts = contract.CLOCK_FLOOR if ahead_us == -10**15 else epoch(_RECEIVED_US + ahead_us)
    payload = _reading(timestamp=contract.format_timestamp(ts))
    record = Record("mqtt", "thermostats/d/telemetry", _RECEIVED_US * 1000, payload, None, Position(1, 100))
    batch = parse_records([record], PREFIX, max_ahead_s=max_ahead_s)
    try:
        contract.check_clock(ts, epoch(_RECEIVED_US), max_ahead_s)
    except ContractError as exc:
        assert batch.rejected["reason"] == [exc.reason]
    else:
        assert batch.telemetry["ts"] == [epoch_us(ts)]


def test_a_reading_a_microsecond_before_the_clock_floor_is_rejected() -> None:
    """The floor is exact too: its first microsecond is kept, the one before rejected."""
    floor_us = epoch_us(contract.CLOCK_FLOOR)
    records = [Record("mqtt", "thermostats/d/telemetry", _RECEIVED_US * 1000,
                      _reading(timestamp=contract.format_timestamp(epoch(us))), None, Position(1, 100))
               for us in (floor_us - 1, floor_us)]
    batch = parse_records(records, PREFIX, max_ahead_s=3600.0)
    assert batch.telemetry["ts"] == [floor_us]
    assert len(batch.rejected["reason"]) == 1 and "device clock not set" in batch.rejected["reason"][0]


def epoch(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
