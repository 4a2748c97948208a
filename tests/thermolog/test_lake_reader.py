"""The process's lake read connection: its catalog connections skip the per-query checks, it still sees what
writers add after it attached (new rows, tables first written, maintenance), and a connection error makes the next
read attach afresh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from ingest.journal import Position, Record
from ingest.parse import parse_records
from ingest.sinks.lake import LakeSink
from tests.ingest_support import telemetry
from tests.lake_support import fresh_database, lake_env
from thermolog import lake, lake_maintain, reader
from thermolog.settings import Settings, get_settings

pytestmark = pytest.mark.slow  # seconds per test: outside the fast loop (docs/testing.md)

PREFIX = "thermostats"


@pytest.fixture
def lake_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with fresh_database() as conninfo:
        for key, value in lake_env(conninfo, tmp_path / "lake-data").items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        lake.close_shared()
        yield get_settings()
        lake.close_shared()
        get_settings.cache_clear()


def _created(settings: Settings) -> LakeSink:
    """A worker's sink, the lake's tables created."""
    sink = LakeSink(settings, "w")
    sink.committed_position()
    return sink


def _write(sink: LakeSink, items: list[tuple[str, bytes]], offset: int) -> None:
    records = [Record("mqtt", topic, 1_750_000_000_000_000_000 + (offset + i) * 1000, payload, None,
                      Position(1, offset + i + 1)) for i, (topic, payload) in enumerate(items)]
    sink.write(parse_records(records, PREFIX), records, {}, expected=sink.committed_position())


def _readings(device: str, count: int, first_s: int) -> list[tuple[str, bytes]]:
    return [(f"{PREFIX}/{device}/telemetry", telemetry(device, first_s + 10 * i)) for i in range(count)]


def test_reader_catalog_connections_skip_the_per_query_checks(lake_settings: Settings) -> None:
    _created(lake_settings).close()
    with lake.read_connection() as con:
        settings = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name IN "
                                    "('pg_pool_health_check_query', 'pg_staleness_query_enabled')").fetchall())
    assert settings == {"pg_pool_health_check_query": "", "pg_staleness_query_enabled": "false"}
    writer = lake.connect(lake_settings)
    try:
        assert writer.execute("SELECT current_setting('pg_pool_health_check_query')").fetchone()[0] == "SELECT 1"
    finally:
        writer.close()


def test_the_kept_connection_sees_what_writers_add_after_it_attached(lake_settings: Settings) -> None:
    sink = _created(lake_settings)
    assert reader.query("SELECT count(*) AS n FROM telemetry")["n"][0] == 0  # attached before any data
    _write(sink, _readings("dev-1", 5, 0), 0)  # small flushes: rows inlined into catalog tables created now
    assert reader.query("SELECT count(*) AS n FROM telemetry")["n"][0] == 5
    _write(sink, [(f"{PREFIX}/dev-1/state", b'{"target_temp": 21, "mode": "heat"}')], 5)
    assert reader.query("SELECT target_temp FROM device_state").rows() == [(21.0,)]
    _write(sink, _readings("dev-2", 300, 0), 6)
    lake_maintain.maintain(lake_settings)  # rollups merged, inlined rows written out, files compacted
    assert reader.query("SELECT count(*) AS n FROM telemetry")["n"][0] == 305
    assert reader.query("SELECT sum(n)::BIGINT AS n FROM telemetry_1m")["n"][0] == 305
    sink.close()


def test_a_connection_error_makes_the_next_read_attach_afresh(lake_settings: Settings) -> None:
    _created(lake_settings).close()
    with lake.read_connection():
        first = lake._shared
    with pytest.raises(duckdb.CatalogException), lake.read_connection() as con:
        con.execute("SELECT * FROM no_such_table")
    assert lake._shared is first  # an error in the query keeps the connection
    with pytest.raises(duckdb.IOException), lake.read_connection():
        raise duckdb.IOException("connection to the catalog lost")
    assert lake._shared is None
    assert reader.query("SELECT count(*) AS n FROM worker_state")["n"][0] >= 1
    assert lake._shared is not None and lake._shared is not first
