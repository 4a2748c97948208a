"""Restart behaviour without a broker: replay from the committed position, torn journal tail, locked database."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from ingest.journal import list_segments, segment_path
from ingest.sinks.duckdb import DuckDBSink
from ingest.worker import IngestWorker
from tests.ingest_support import db_value, telemetry
from tests.waiting import wait_until
from thermolog.settings import Settings, get_settings


@pytest.fixture
def settings(thermolog_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Isolated settings with a fast flush."""
    monkeypatch.setenv("THERMOLOG_FLUSH_INTERVAL_S", "0.05")
    get_settings.cache_clear()
    return get_settings()


def _append(worker: IngestWorker, seconds: range) -> None:
    assert worker.journal is not None
    prefix = worker.settings.topic_prefix
    for second in seconds:
        worker.journal.append("mqtt", f"{prefix}/dev-1/telemetry", telemetry("dev-1", second))


def _count(settings: Settings) -> int:
    return db_value(settings.db_path, "SELECT count(*) FROM telemetry")


def test_restart_replays_only_uncommitted_records(settings: Settings) -> None:
    """Records flushed before a stop are not stored again; records journalled but not flushed are stored."""
    worker = IngestWorker(settings, mqtt=False)
    worker.open()
    _append(worker, range(100))
    worker.stop()
    assert _count(settings) == 100

    # Records that reached the journal but were never flushed (the process died before the flush).
    second = IngestWorker(settings, mqtt=False)
    second.open()
    second.flusher.stop(final_flush=False)
    _append(second, range(100, 150))
    second.journal.close()

    third = IngestWorker(settings, mqtt=False)
    third.open()
    third.stop()
    assert _count(settings) == 150
    assert db_value(settings.db_path, "SELECT count(DISTINCT ts) FROM telemetry") == 150
    assert db_value(settings.db_path, "SELECT value FROM ingest_state WHERE key = 'messages_total'") == "150"
    assert len(list_segments(settings.journal_dir)) <= 1  # flushed segments are deleted


def test_torn_last_journal_record_is_dropped_and_the_rest_stored(settings: Settings) -> None:
    """A crash mid-write leaves a cut record: it is dropped on restart, every record before it is stored."""
    worker = IngestWorker(settings, mqtt=False)
    worker.open()
    worker.flusher.stop(final_flush=False)
    _append(worker, range(20))
    worker.journal.close()
    path = segment_path(Path(settings.journal_dir), list_segments(settings.journal_dir)[-1])
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size - 10)

    restarted = IngestWorker(settings, mqtt=False)
    restarted.open()
    restarted.stop()
    assert _count(settings) == 19
    assert db_value(settings.db_path, "SELECT max(ts) FROM telemetry").second == 18
    assert db_value(settings.db_path, "SELECT count(*) FROM rejected") == 0


def mark_flush(con, records) -> None:  # noqa: ANN001 - a transaction hook, pickled into the flusher process
    """Hook for the flusher-process test: count the records each transaction stored."""
    con.execute("INSERT INTO ingest_state (key, value) VALUES ('hooked', ?) ON CONFLICT (key) DO UPDATE SET "
                "value = CAST(CAST(ingest_state.value AS BIGINT) + CAST(excluded.value AS BIGINT) AS VARCHAR)",
                [str(len(records))])


@pytest.mark.slow
def test_flusher_process_stores_the_journal_and_runs_hooks_in_its_transaction(settings: Settings) -> None:
    """With the flusher in its own process (as `thermolog ingest` runs it) records and hook writes land together."""
    worker = IngestWorker(settings, mqtt=False, flusher_process=True, hooks=[mark_flush])
    worker.open()
    _append(worker, range(300))
    wait_until(lambda: _count(settings) == 300, 60, what="300 readings from the flusher process", interval=0.2)
    worker.stop()
    assert db_value(settings.db_path, "SELECT value FROM ingest_state WHERE key = 'hooked'") == "300"
    assert _count(settings) == 300


def test_a_backlog_larger_than_one_transaction_is_stored_in_several(thermolog_env: dict[str, str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart with more waiting records than flush_max_records commits them batch by batch, all of them."""
    monkeypatch.setenv("THERMOLOG_FLUSH_MAX_RECORDS", "100")
    get_settings.cache_clear()
    settings = get_settings()
    worker = IngestWorker(settings, mqtt=False)
    worker.open()
    worker.flusher.stop(final_flush=False)
    _append(worker, range(1050))
    worker.journal.close()

    restarted = IngestWorker(settings, mqtt=False)
    restarted.open()  # drains the backlog before any source would start
    assert _count(settings) == 1050
    assert db_value(settings.db_path, "SELECT value FROM ingest_state WHERE key = 'journal_lag_records'") == "0"
    restarted.stop()


def test_a_record_the_database_refuses_is_isolated_and_kept_in_rejected(settings: Settings,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """If a write keeps failing, batches shrink until the one bad record is alone; it goes to `rejected` and
    every other record is stored."""
    original = DuckDBSink._telemetry

    def refuse_66(con, batch):  # noqa: ANN001, ANN202 - stands in for a value DuckDB cannot take
        if 66.6 in batch.telemetry["temperature"]:
            raise duckdb.ConversionException("cannot store 66.6")
        return original(con, batch)

    monkeypatch.setattr(DuckDBSink, "_telemetry", staticmethod(refuse_66))
    worker = IngestWorker(settings, mqtt=False)
    worker.open()
    prefix = settings.topic_prefix
    for second in range(40):
        temperature = 66.6 if second == 17 else 20.0
        worker.journal.append("mqtt", f"{prefix}/dev-1/telemetry", telemetry("dev-1", second, temperature))
    wait_until(lambda: _count(settings) == 39, 60, what="the 39 storable readings")
    worker.stop()
    assert db_value(settings.db_path, "SELECT count(*) FROM rejected WHERE reason LIKE 'could not be stored%'") == 1
    assert b'"temperature": 66.6' in db_value(settings.db_path, "SELECT payload FROM rejected")
    assert db_value(settings.db_path, "SELECT value FROM ingest_state WHERE key = 'messages_total'") == "40"


@pytest.mark.slow
@pytest.mark.parametrize("flusher_process", [False, True], ids=["thread", "process"])
def test_a_quiet_journal_is_flushed_before_the_interval(thermolog_env: dict[str, str],
                                                        monkeypatch: pytest.MonkeyPatch, flusher_process: bool) -> None:
    """Once records stop arriving for flush_quiet_s they are stored, without waiting out a long flush interval
    (the end of a burst reaches readers at once); tests/ingest/test_flusher_policy.py covers when, exactly."""
    monkeypatch.setenv("THERMOLOG_FLUSH_INTERVAL_S", "60")
    monkeypatch.setenv("THERMOLOG_FLUSH_QUIET_S", "0.05")
    get_settings.cache_clear()
    settings = get_settings()
    worker = IngestWorker(settings, mqtt=False, flusher_process=flusher_process)
    worker.open()
    try:
        _append(worker, range(50))
        # Far less than the 60 s interval: only the quiet rule can store them in time.
        wait_until(lambda: _count(settings) == 50, 20, what="50 readings stored by the quiet rule", interval=0.05)
    finally:
        worker.stop()
