"""What hostile input can make grow is bounded: rejection reasons, the Health page's reason counts, the journal's
topic cache."""

from __future__ import annotations

from pathlib import Path

import orjson

from ingest import journal as journal_module
from ingest.journal import START, Journal, Position, Record
from ingest.parse import REASON_MAX_CHARS, parse_records
from ingest.sinks.duckdb import DuckDBSink
from tests.ingest_support import db_value, telemetry
from thermolog import queries

PREFIX = "thermostats"


def _record(topic: str, payload: bytes, offset: int = 9) -> Record:
    return Record("mqtt", topic, 1_750_000_000_000_000_000 + offset, payload, None, Position(1, offset))


def test_a_payload_with_thousands_of_unknown_keys_gets_a_short_reason() -> None:
    """4,000 unknown keys (a 47 KB payload) gave a reason of 154,888 characters; now it is capped and says how
    many errors there were."""
    payload = orjson.loads(telemetry("dev-1", 1))
    payload.update({f"k{i:04d}": i for i in range(4000)})
    raw = orjson.dumps(payload)
    batch = parse_records([_record(f"{PREFIX}/dev-1/telemetry", raw)], PREFIX)
    [reason] = batch.rejected["reason"]
    print(f"payload {len(raw):,} bytes -> reason {len(reason):,} characters")
    assert len(reason) <= REASON_MAX_CHARS
    assert "k0000" in reason and "3,995 more errors" in reason


def test_rejected_reason_counts_are_limited(tmp_path: Path) -> None:
    """However many distinct reasons are stored, the Health page's query returns at most its limit, most
    frequent first."""
    db = tmp_path / "db.duckdb"
    records = [_record(f"{PREFIX}/dev-{i}/nonsense-{i}", b"{}", offset=9 + i) for i in range(300)]
    records += [_record(f"{PREFIX}/dev-1/telemetry", b"not json", offset=400 + i) for i in range(3)]
    DuckDBSink(db).write(parse_records(records, PREFIX), records, {})
    assert db_value(db, "SELECT count(DISTINCT reason) FROM rejected") == 301
    counts = queries.rejected_counts(db)
    assert counts.height == queries.REJECTED_REASONS_LIMIT
    assert counts["n"][0] == 3 and counts["reason"][0].startswith("not valid JSON")
    assert queries.rejected_counts(db, limit=5).height == 5


def test_the_journal_topic_cache_is_bounded_by_bytes(tmp_path: Path) -> None:
    """1,500 distinct topics of 60 KB once grew the flusher by 276 MB; the decode cache now holds at most
    TEXT_CACHE_MAX_BYTES however long or many the topics are, and still caches the short real ones."""
    journal_module._TEXT_CACHE.clear()
    writer = Journal(tmp_path / "journal", fsync_interval_s=0)
    long_topics = [f"{PREFIX}/dev-{i}/" + "x" * 60_000 for i in range(1500)]
    for topic in long_topics:
        writer.append("mqtt", topic, b"{}")
    writer.append("mqtt", f"{PREFIX}/dev-1/telemetry", b"{}")
    records = writer.read(START)
    writer.close()
    assert [r.topic for r in records[:-1]] == long_topics
    held = sum(len(key) + len(value) for key, value in journal_module._TEXT_CACHE.items())
    print(f"topic cache after 1,500 topics of 60 KB: {held:,} bytes")
    assert held <= 2 * journal_module.TEXT_CACHE_MAX_BYTES
    assert f"{PREFIX}/dev-1/telemetry".encode() in journal_module._TEXT_CACHE
