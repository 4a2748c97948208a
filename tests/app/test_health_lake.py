"""Health page with the lake configured: ingest figures from the lake and its files, size and snapshots."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ingest.parse import parse_records
from ingest.sinks.lake import LakeSink
from tests.app_support import app, use_db
from tests.lake_support import fresh_database, lake_env
from tests.thermolog.test_lake import PREFIX, _readings, _records
from thermolog import lake
from thermolog.settings import get_settings

pytestmark = pytest.mark.slow  # seconds per test: outside the fast loop (docs/testing.md)


def test_health_shows_the_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with fresh_database() as conninfo:
        env = lake_env(conninfo, tmp_path / "lake-data")
        use_db(monkeypatch, tmp_path / "unused.duckdb", journal_dir=str(tmp_path / "journal"),
               **{key.removeprefix("THERMOLOG_").lower(): value for key, value in env.items()})
        lake.close_shared()
        try:
            sink = LakeSink(get_settings(), "w")
            records = _records(_readings(random.Random(1), 500))
            sink.write(parse_records(records, PREFIX), records, {"last_flush_at": "2026-01-01T00:00:00+00:00"})
            sink.close()
            at = app("health")
            assert not at.exception
            metrics = {m.label: m.value for m in at.metric}
            assert int(metrics["Data files"].replace(",", "")) >= 1
            assert int(metrics["Snapshots"].replace(",", "")) >= 1
            assert "Lake size" in metrics
            assert any("500 messages stored" in caption.value for caption in at.caption)  # read from the lake
        finally:
            lake.close_shared()
            get_settings.cache_clear()
