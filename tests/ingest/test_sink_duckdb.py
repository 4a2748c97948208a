"""The DuckDB sink: rollups equal the raw rows' aggregates, repeats stored once, hooks share the transaction."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pytest

from ingest.journal import Position, Record
from ingest.parse import parse_records
from ingest.sinks.duckdb import JOURNAL_POSITION_KEY, DatabaseLocked, DuckDBSink
from tests.ingest_support import telemetry
from thermolog import schema

PREFIX = "thermostats"


def _records(items: Sequence[tuple[str, bytes]], first_offset: int = 8) -> list[Record]:
    return [Record("mqtt", topic, 1_750_000_000_000_000_000 + i, payload, None, Position(1, first_offset + i + 1))
            for i, (topic, payload) in enumerate(items)]


def _write(sink: DuckDBSink, records: list[Record], hooks=()) -> None:
    sink.write(parse_records(records, PREFIX), records, {}, hooks)


def _random_readings(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    items = []
    for _ in range(count):
        device = rng.choice(["dev-1", "dev-2", "dev-3"])
        second = rng.randrange(0, 3 * 3600)  # three hours: several 1 h buckets, many 1 min buckets
        payload = telemetry(device, second, temperature=round(rng.uniform(15, 25), 2),
                            heating=rng.choice(["ON", "OFF"]))
        if rng.random() < 0.3:  # some readings without humidity
            payload = payload.replace(b'"humidity": 40.5, ', b"")
        items.append((f"{PREFIX}/{device}/telemetry", payload))
    return items


ROLLUP_FROM_RAW = """
    SELECT device_id, date_trunc('{unit}', ts) AS bucket, count(*), min(temperature), max(temperature),
           round(sum(temperature), 6), count(humidity), min(humidity), max(humidity), round(sum(humidity), 6),
           min(target_temp), max(target_temp), round(sum(target_temp), 6), count(*) FILTER (WHERE heating),
           min(ts), max(ts)
    FROM telemetry GROUP BY ALL ORDER BY ALL
"""
ROLLUP_STORED = """
    SELECT device_id, bucket, n, temp_min, temp_max, round(temp_sum, 6), hum_n, hum_min, hum_max,
           round(hum_sum, 6), target_min, target_max, round(target_sum, 6), heating_n, first_ts, last_ts
    FROM {table} ORDER BY ALL
"""


def test_rollups_equal_aggregates_of_the_raw_rows_across_batches_with_repeats(tmp_path: Path) -> None:
    """Minute and hour rollups merged over several flushes equal a GROUP BY over the stored readings."""
    rng = random.Random(7)
    readings = _random_readings(rng, 3000)
    readings += rng.sample(readings, 300)  # repeats, some landing in later batches
    sink = DuckDBSink(tmp_path / "db.duckdb")
    for start in range(0, len(readings), 700):
        _write(sink, _records(readings[start:start + 700], first_offset=start))
    con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    distinct = con.execute("SELECT count(DISTINCT (device_id, ts)) FROM telemetry").fetchone()[0]
    assert con.execute("SELECT count(*) FROM telemetry").fetchone()[0] == distinct
    for table, unit in (("telemetry_1m", "minute"), ("telemetry_1h", "hour")):
        stored = con.execute(ROLLUP_STORED.format(table=table)).fetchall()
        assert stored == con.execute(ROLLUP_FROM_RAW.format(unit=unit)).fetchall(), table
        assert sum(row[2] for row in stored) == distinct
    con.close()


def test_a_version_1_file_loses_the_rollup_key_index_keeps_its_rows_and_merges_on(tmp_path: Path) -> None:
    """Rollups made with a primary key (schema version 1) are rebuilt without it when the writer opens the file;
    the rows stay and later flushes fold into them exactly."""
    db = tmp_path / "db.duckdb"
    readings = _random_readings(random.Random(11), 1400)
    _write(DuckDBSink(db), _records(readings[:700]))
    con = duckdb.connect(str(db))
    for table in schema.ROLLUP_TABLES:  # back to the version 1 layout, rows included
        con.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
        con.execute(f"CREATE TABLE {table} ({schema.ROLLUP_COLUMNS}, PRIMARY KEY (device_id, bucket))")
        con.execute(f"INSERT INTO {table} SELECT * FROM {table}_old")
        con.execute(f"DROP TABLE {table}_old")
    con.close()
    _write(DuckDBSink(db), _records(readings[700:], first_offset=700))
    con = duckdb.connect(str(db), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    keys = con.execute("SELECT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
                       "AND table_name LIKE 'telemetry%'").fetchall()
    assert keys == []
    for table, unit in (("telemetry_1m", "minute"), ("telemetry_1h", "hour")):
        assert con.execute(ROLLUP_STORED.format(table=table)).fetchall() == con.execute(
            ROLLUP_FROM_RAW.format(unit=unit)).fetchall(), table
    assert con.execute("SELECT value FROM ingest_state WHERE key = 'schema_version'").fetchone() == (
        str(schema.SCHEMA_VERSION),)
    con.close()


def test_identical_repeats_are_counted_and_conflicting_duplicates_rejected(tmp_path: Path) -> None:
    """Within a batch and across batches the first reading for (device, ts) is the one kept; an identical repeat
    is counted as repeated, one with other values is stored in `rejected` as a "conflicting duplicate"."""
    sink = DuckDBSink(tmp_path / "db.duckdb")
    topic = f"{PREFIX}/dev-1/telemetry"
    first, other, third = telemetry("dev-1", 5, 20.0), telemetry("dev-1", 5, 21.0), telemetry("dev-1", 5, 22.0)
    _write(sink, _records([(topic, first), (topic, other), (topic, first)]))
    _write(sink, _records([(topic, third), (topic, first)], first_offset=50))
    con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
    assert con.execute("SELECT temperature FROM telemetry").fetchall() == [(20.0,)]
    assert con.execute("SELECT n, temp_sum FROM telemetry_1h").fetchall() == [(1, 20.0)]
    rejected = con.execute("SELECT reason, payload FROM rejected ORDER BY received_at").fetchall()
    assert [payload for _reason, payload in rejected] == [other, third]
    assert all(reason.startswith("conflicting duplicate: a reading of dev-1 at ") for reason, _ in rejected)
    state = dict(con.execute("SELECT key, value FROM ingest_state").fetchall())
    assert (state["duplicates_total"], state["rejected_total"], state["messages_total"]) == ("2", "2", "5")
    con.close()


def test_a_later_batch_of_one_repeat_or_conflict_is_checked_against_the_stored_readings(tmp_path: Path) -> None:
    """A batch whose keys are all distinct is still checked against stored readings as new as its oldest: a lone
    redelivery is a repeat, a lone reading with other values a conflict, an older reading of another device new."""
    sink = DuckDBSink(tmp_path / "db.duckdb")
    topic = f"{PREFIX}/dev-1/telemetry"
    _write(sink, _records([(topic, telemetry("dev-1", 5, 20.0)), (topic, telemetry("dev-1", 9, 20.5))]))
    _write(sink, _records([(topic, telemetry("dev-1", 9, 20.5))], first_offset=50))
    _write(sink, _records([(topic, telemetry("dev-1", 5, 23.0))], first_offset=60))
    _write(sink, _records([(f"{PREFIX}/dev-2/telemetry", telemetry("dev-2", 1, 19.0))], first_offset=70))
    con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
    assert con.execute("SELECT device_id, temperature FROM telemetry ORDER BY ALL").fetchall() == [
        ("dev-1", 20.0), ("dev-1", 20.5), ("dev-2", 19.0)]
    assert con.execute("SELECT device_id, n FROM telemetry_1h ORDER BY ALL").fetchall() == [("dev-1", 2), ("dev-2", 1)]
    state = dict(con.execute("SELECT key, value FROM ingest_state").fetchall())
    assert (state["duplicates_total"], state["rejected_total"], state["messages_total"]) == ("1", "1", "5")
    con.close()


def test_hooks_write_in_the_flush_transaction_and_a_failing_hook_rolls_everything_back(tmp_path: Path) -> None:
    """A source's checkpoint commits with the rows; if it fails, neither rows nor position are stored."""
    sink = DuckDBSink(tmp_path / "db.duckdb")
    topic = f"{PREFIX}/dev-1/telemetry"
    records = _records([(topic, telemetry("dev-1", 1)), (topic, telemetry("dev-1", 2))])

    def checkpoint(con: duckdb.DuckDBPyConnection, seen: Sequence[Record]) -> None:
        con.execute("INSERT INTO ingest_state (key, value) VALUES ('eventhub:0', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value", [str(len(seen))])

    def broken(_con: duckdb.DuckDBPyConnection, _seen: Sequence[Record]) -> None:
        raise RuntimeError("checkpoint store unavailable")

    with pytest.raises(RuntimeError):
        _write(sink, records, hooks=[checkpoint, broken])
    assert sink.committed_position() == Position(0, 0)
    state = sink.read_state()
    assert "eventhub:0" not in state and "messages_total" not in state
    _write(sink, records, hooks=[checkpoint])
    assert sink.committed_position() == records[-1].end
    assert sink.read_state()["eventhub:0"] == "2"
    con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM telemetry").fetchone() == (2,)
    con.close()


def _hold(db: Path) -> subprocess.Popen[str]:
    """Another process holding ``db`` read-only until a line arrives on its stdin (``_release``)."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, duckdb
        con = duckdb.connect({str(db)!r}, read_only=True)
        print("held", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    if holder.poll() is None:
        holder.communicate("\n", timeout=10)


def test_write_while_another_process_holds_the_file_raises_locked_and_stores_nothing(tmp_path: Path) -> None:
    """A reader in another process holding the file makes the flush fail cleanly (to be retried)."""
    db = tmp_path / "db.duckdb"
    sink = DuckDBSink(db)
    sink.read_state()  # create the file
    holder = _hold(db)
    try:
        records = _records([(f"{PREFIX}/dev-1/telemetry", telemetry("dev-1", 1))])
        with pytest.raises(DatabaseLocked):
            _write(sink, records)
    finally:
        _release(holder)
    assert sink.committed_position() == Position(0, 0)
    _write(sink, records)
    assert sink.committed_position() == records[-1].end


def test_stored_state_waits_while_another_process_holds_the_file(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Start-up reads the state once the reader is gone, saying what it waits for; a pause that gives up ends the
    wait with DatabaseLocked."""
    db = tmp_path / "db.duckdb"
    sink = DuckDBSink(db)
    sink.read_state()  # create the file
    holder = _hold(db)
    try:
        with pytest.raises(DatabaseLocked):
            sink.read_state_when_free(60, lambda _seconds: True)
        pauses: list[float] = []

        def release(seconds: float) -> bool:  # the reader finishes during the first pause
            pauses.append(seconds)
            _release(holder)
            return False

        with caplog.at_level("WARNING"):
            assert JOURNAL_POSITION_KEY not in sink.read_state_when_free(60, release)
    finally:
        _release(holder)
    assert pauses == [0.5]
    assert f"waiting for a reader to release {db}" in caplog.text
