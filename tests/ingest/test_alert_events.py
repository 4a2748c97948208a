"""Alert events on ``thermostats/{id}/alert`` become ``alert_events`` rows; bad ones are rejected, repeats kept once."""

from __future__ import annotations

from pathlib import Path

import duckdb

from ingest.journal import Position, Record
from ingest.parse import parse_records
from ingest.sinks.duckdb import DuckDBSink

PREFIX = "thermostats"
STARTED = (b'{"event_id": "e1", "event": "started", "rule": "offline", "timestamp": "2026-03-01T10:00:00Z", '
           b'"message": "offline for 12 min", "delivered": ["json://127.0.0.1:9/hook"], "failed": ["mailto://x"]}')
SILENCED = (b'{"event_id": "e2", "event": "silenced", "rule": "offline", "timestamp": "2026-03-01T10:05:00Z", '
            b'"by": "olivia@example.test", "until": "2026-03-01T12:05:00Z"}')
BAD = b'{"event_id": "e3", "event": "exploded", "rule": "offline", "timestamp": "2026-03-01T10:05:00Z"}'


def _records(items: list[tuple[str, bytes]]) -> list[Record]:
    return [Record("mqtt", topic, 1_772_359_200_000_000_000 + i, payload, None, Position(1, 8 + i + 1))
            for i, (topic, payload) in enumerate(items)]


def test_alert_events_are_stored_once_and_bad_ones_rejected(tmp_path: Path) -> None:
    """Started with its deliveries, silenced with who and until; an unknown event kind is a rejected row."""
    db = tmp_path / "t.duckdb"
    sink = DuckDBSink(db)
    topic = f"{PREFIX}/dev-1/alert"
    records = _records([(topic, STARTED), (topic, SILENCED), (topic, BAD), (topic, STARTED)])
    batch = parse_records(records, PREFIX)
    sink.write(batch, records, {})
    sink.write(parse_records(records[:1], PREFIX), records[:1], {})  # replayed: no second row
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT event_id, device_id, rule, event, message, delivered, failed, actor, "
                           "strftime(until AT TIME ZONE 'UTC', '%H:%M') FROM alert_events ORDER BY ts").fetchall()
        rejected = con.execute("SELECT topic, reason FROM rejected").fetchall()
    assert rows == [
        ("e1", "dev-1", "offline", "started", "offline for 12 min", ["json://127.0.0.1:9/hook"], ["mailto://x"],
         None, None),
        ("e2", "dev-1", "offline", "silenced", None, [], [], "olivia@example.test", "12:05"),
    ]
    assert len(rejected) == 1 and rejected[0][0] == topic and "event" in rejected[0][1]
