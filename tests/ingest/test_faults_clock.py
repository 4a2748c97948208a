"""A device clock far in the future or the past: the documented policy (``thermolog.contract.check_clock``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from ingest.journal import Position, Record
from ingest.parse import parse_records
from tests.broker_support import TlsBroker
from tests.fault_support import Device, IngestProcess
from tests.ingest_support import db_rows
from tests.waiting import wait_until
from thermolog import contract

DEVICE = "dev-clock"
RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _reading(ts: datetime, device_id: str = DEVICE) -> bytes:
    return orjson.dumps({"temperature": 20.5, "timestamp": contract.format_timestamp(ts), "humidity": 40.0,
                         "target_temp": 21, "device_id": device_id, "heating": "OFF"})


def _record(ts: datetime) -> Record:
    received_ns = int(RECEIVED.timestamp()) * 1_000_000_000
    return Record("mqtt", f"thermostats/{DEVICE}/telemetry", received_ns, _reading(ts), None, Position(1, 100))


@pytest.mark.parametrize("offset, kept", [
    (timedelta(0), True),
    (timedelta(minutes=59), True),            # within the allowed skew
    (timedelta(hours=1, seconds=1), False),   # a device sending local time (UTC+1) as UTC
    (timedelta(days=3650), False),            # far future
    (-timedelta(days=400), True),             # backfill / long outage: kept
    (datetime(2000, 1, 1, tzinfo=UTC) - RECEIVED, False),  # ESP32 clock never set
])
def test_clock_policy_in_the_flusher(offset: timedelta, kept: bool) -> None:
    batch = parse_records([_record(RECEIVED + offset)], max_ahead_s=3600)
    assert (len(batch.telemetry["ts"]) == 1) is kept
    if not kept:
        (reason,) = batch.rejected["reason"]
        assert "device clock" in reason


def test_limit_zero_turns_the_future_check_off() -> None:
    batch = parse_records([_record(RECEIVED + timedelta(days=30))], max_ahead_s=0)
    assert len(batch.telemetry["ts"]) == 1


@pytest.fixture
def broker() -> Iterator[TlsBroker]:
    tls = TlsBroker([DEVICE]).start()
    yield tls
    tls.cleanup()


@pytest.mark.broker
@pytest.mark.slow
def test_ingest_applies_the_clock_policy_end_to_end(broker: TlsBroker, tmp_path: Path) -> None:
    """Through the production broker and `thermolog ingest`: future and unset clocks land in `rejected` with the
    reason; a reading from last year is stored."""
    ingest = IngestProcess(broker, tmp_path)
    try:
        ingest.start().wait_connected()
        device = Device(broker, DEVICE)
        now = datetime.now(UTC).replace(microsecond=0)
        cases = {"future": now + timedelta(days=2), "unset": datetime(2000, 1, 1, 0, 0, 5, tzinfo=UTC),
                 "old": now - timedelta(days=365), "now": now}
        for ts in cases.values():
            device.client.publish(device.topic, _reading(ts), qos=1).wait_for_publish(5)
        device.close()
        stored = wait_until(lambda: (rows := db_rows(ingest.db_path, "SELECT ts FROM telemetry ORDER BY ts"))
                            and len(rows) == 2 and rows, 20, what="two kept readings")
        assert [ts for (ts,) in stored] == [cases["old"], cases["now"]]
        rejected = wait_until(lambda: db_rows(ingest.db_path, "SELECT reason FROM rejected ORDER BY received_at"),
                              20, what="rejected rows")
        reasons = [r for (r,) in rejected]
        assert len(reasons) == 2
        assert "ahead of its receive time" in reasons[0] and "device clock wrong" in reasons[0]
        assert "device clock not set" in reasons[1]
    finally:
        ingest.stop()
