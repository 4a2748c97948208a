"""THERMOLOG_RAW_RETENTION_DAYS: the writer deletes old raw readings in small batches, rollups stay, status shows it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from ingest.flusher import Flusher
from ingest.journal import Journal, Position, Record
from ingest.parse import parse_records
from ingest.sinks.duckdb import DuckDBSink
from ingest.status import collect_status, format_status
from tests.ingest_support import db_rows, db_value
from thermolog.contract import format_timestamp
from thermolog.settings import Settings

PREFIX = "thermostats"
TOPIC = f"{PREFIX}/dev-r/telemetry"


def _reading(at: datetime, temperature: float = 20.0) -> bytes:
    return orjson.dumps({"temperature": temperature, "timestamp": format_timestamp(at), "humidity": 40.0,
                         "target_temp": 21, "device_id": "dev-r", "heating": "OFF"})


def _store(sink: DuckDBSink, payloads: list[bytes]) -> None:
    now_ns = datetime.now(UTC).timestamp() * 1e9
    records = [Record("mqtt", TOPIC, int(now_ns) + i, payload, None, Position(1, 8 + i))
               for i, payload in enumerate(payloads)]
    sink.write(parse_records(records, PREFIX), records, {})


def test_old_raw_readings_are_deleted_in_batches_rollups_stay_and_status_says_so(tmp_path: Path) -> None:
    """Five readings 40 days old and three from yesterday; with a 30-day retention and batches of two rows the
    writer deletes the five old ones in three rounds, the rollups still count all eight, `thermolog status`
    shows the deletions, and a late reading older than the retention is rejected instead of stored."""
    db = tmp_path / "db.duckdb"
    now = datetime.now(UTC).replace(microsecond=0)
    old = [_reading(now - timedelta(days=40, minutes=i)) for i in range(5)]
    recent = [_reading(now - timedelta(days=1, minutes=i)) for i in range(3)]
    sink = DuckDBSink(db)
    _store(sink, old + recent)
    assert db_value(db, "SELECT count(*) FROM telemetry") == 8

    settings = Settings(db_path=db, journal_dir=tmp_path / "journal", raw_retention_days=30, topic_prefix=PREFIX)
    committed = sink.committed_position()
    journal = Journal(settings.journal_dir, fsync_interval_s=0, min_segment=committed.segment)
    flusher = Flusher(settings, journal, sink, committed)
    flusher.retention_batch_rows = 2
    rounds = [flusher.apply_retention(force=True) for _ in range(4)]
    assert rounds == [2, 2, 1, 0]
    assert db_value(db, "SELECT count(*) FROM telemetry") == 3
    assert db_value(db, "SELECT min(ts) FROM telemetry") > now - timedelta(days=2)
    for table in ("telemetry_1m", "telemetry_1h"):
        assert db_value(db, f"SELECT sum(n) FROM {table}") == 8, table

    status = collect_status(settings)
    assert (status.raw_retention_days, status.retention_deleted_total) == (30, 5)
    assert status.retention_cutoff is not None and status.retention_cutoff < now - timedelta(days=29)
    report = format_status(status)
    assert "raw readings older than 30 days are deleted (rollups kept); 5 deleted so far" in report

    journal.append("mqtt", TOPIC, _reading(now - timedelta(days=31)))
    journal.append("mqtt", TOPIC, _reading(now - timedelta(hours=1)))
    flusher.flush(force=True)
    journal.close()
    assert db_value(db, "SELECT count(*) FROM telemetry") == 4
    reasons = db_rows(db, "SELECT reason FROM rejected")
    assert len(reasons) == 1 and "older than the raw retention" in reasons[0][0]
    for table in ("telemetry_1m", "telemetry_1h"):
        assert db_value(db, f"SELECT sum(n) FROM {table}") == 9, table


def test_no_retention_keeps_everything(tmp_path: Path) -> None:
    """With the default 0 nothing is deleted and status says raw readings are kept."""
    db = tmp_path / "db.duckdb"
    sink = DuckDBSink(db)
    _store(sink, [_reading(datetime(2021, 1, 1, tzinfo=UTC))])
    settings = Settings(db_path=db, journal_dir=tmp_path / "journal", topic_prefix=PREFIX)
    flusher = Flusher(settings, Journal(settings.journal_dir, fsync_interval_s=0, min_segment=1), sink,
                      sink.committed_position())
    assert flusher.apply_retention(force=True) == 0
    assert db_value(db, "SELECT count(*) FROM telemetry") == 1
    assert "raw readings kept for ever" in format_status(collect_status(settings))
