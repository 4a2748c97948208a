"""`thermolog export --format delta` from the local DuckDB file: a Delta table, appended incrementally."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from deltalake import DeltaTable

from tests.telemetry_db import build_db, readings
from thermolog import cli
from thermolog.settings import get_settings

START = datetime(2025, 7, 4, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = build_db(tmp_path / "t.duckdb", [readings("dev-1", START, 500, 60), readings("dev-2", START, 300, 60)])
    monkeypatch.setenv("THERMOLOG_DB_PATH", str(path))
    monkeypatch.delenv("THERMOLOG_LAKE_CATALOG", raising=False)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def test_cli_delta_export_appends_only_new_readings(db: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "delta"
    assert cli.main(["export", "--format", "delta", "--out", str(out)]) == 0
    assert "appended 800 readings" in capsys.readouterr().err
    assert cli.main(["export", "--format", "delta", "--out", str(out)]) == 0
    assert "appended 0 readings" in capsys.readouterr().err
    later = readings("dev-1", datetime(2025, 7, 6, tzinfo=UTC), 100, 60)
    with duckdb.connect(str(db)) as con:
        con.register("later", later.to_arrow())
        con.execute("INSERT INTO telemetry SELECT * FROM later")
    assert cli.main(["export", "--format", "delta", "--out", str(out)]) == 0
    assert "appended 100 readings" in capsys.readouterr().err
    table = DeltaTable(str(out))
    assert table.to_pyarrow_table().num_rows == 900
    assert table.metadata().partition_columns == ["day"]


def test_delta_to_stdout_is_refused(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", "--format", "delta"]) == 2
    assert "Delta needs a table location" in capsys.readouterr().err
