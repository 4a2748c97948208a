"""The MQTT contract: the seed payloads parse exactly, bad topics and payloads are refused with a reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import SEED_SYSTEM, SEED_TELEMETRY
from thermolog import contract as c


def test_seed_telemetry_parses_exactly() -> None:
    """The seed ESP32 payload is accepted with every value unchanged."""
    reading = c.parse_telemetry(SEED_TELEMETRY, "esp32c3-01")
    assert reading.temperature == 25.8
    assert reading.humidity == 44.9
    assert reading.target_temp == 25.0
    assert reading.heating == "OFF"
    assert reading.device_id == "esp32c3-01"
    assert reading.timestamp == datetime(2025, 7, 4, 0, 13, 36, tzinfo=UTC)


def test_seed_system_payload_parses_exactly() -> None:
    """The seed system_reader payload is accepted with microseconds kept."""
    metrics = c.parse_system(SEED_SYSTEM)
    assert metrics.timestamp == datetime(2025, 6, 26, 18, 55, 0, 363867, tzinfo=UTC)
    assert (metrics.cpu_usage, metrics.memory_usage, metrics.disk_usage) == (0.0, 6.6, 0.3)


def test_topic_round_trip() -> None:
    """topic() and parse_topic() agree for every sub-topic."""
    for kind in (c.TELEMETRY, c.STATUS, c.STATE, c.CMD, c.CMD_ACK):
        assert c.parse_topic(c.topic("dev_1", kind)) == ("dev_1", kind)
    assert c.parse_topic(c.system_topic("edge-host")) == ("edge-host", c.SYSTEM)


@pytest.mark.parametrize("device_id", ["", "a+b", "a#", "a/b", "dévice", "x" * 65, "a b"])
def test_bad_device_ids_are_refused(device_id: str) -> None:
    """Ids outside [A-Za-z0-9_-]{1,64} are refused."""
    with pytest.raises(c.ContractError):
        c.check_device_id(device_id)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (SEED_TELEMETRY.replace(b'"heating": "OFF"', b'"heating": "MAYBE"'), "heating"),
        (SEED_TELEMETRY.replace(b"25.8", b"NaN"), "not valid JSON"),
        (SEED_TELEMETRY.replace(b"25.8", b"1e999"), "infinity"),
        (SEED_TELEMETRY.replace(b"25.8", b"999.0"), "temperature"),
        (SEED_TELEMETRY.replace(b"25.8", b'"25.8"'), "temperature"),
        (SEED_TELEMETRY.replace(b'"2025-07-04T00:13:36Z"', b'"2025-07-04T00:13:36"'), "time zone"),
        (SEED_TELEMETRY.replace(b"}", b', "extra": 1}'), "extra"),
        (SEED_TELEMETRY.replace(b'"humidity": 44.9, ', b""), None),
        (b"{" + b" " * (c.MAX_PAYLOAD_BYTES + 1) + b"}", "exceeds"),
    ],
)
def test_bad_payloads_have_reasons(payload: bytes, fragment: str | None) -> None:
    """Each malformed payload is refused with a reason naming the problem (humidity alone is optional)."""
    if fragment is None:
        assert c.parse_telemetry(payload).humidity is None
        return
    with pytest.raises(c.ContractError) as info:
        c.parse_telemetry(payload)
    assert fragment in info.value.reason


def test_device_id_mismatch_is_refused() -> None:
    """A payload whose device_id differs from the topic's is refused."""
    with pytest.raises(c.ContractError, match="does not match"):
        c.parse_telemetry(SEED_TELEMETRY, "other-device")


def test_dumps_round_trips_with_z() -> None:
    """Serialised telemetry uses a trailing Z and parses back to the same model."""
    reading = c.parse_telemetry(SEED_TELEMETRY)
    wire = c.dumps(reading)
    assert b'"2025-07-04T00:13:36Z"' in wire
    assert c.parse_telemetry(wire) == reading
