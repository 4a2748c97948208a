"""``thermolog export`` writes exactly what DuckDB holds for the devices and range, page by page."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.telemetry_db import T0, build_db, readings
from thermolog import cli, queries
from thermolog import export as export_module

START, END = T0 + timedelta(minutes=7), T0 + timedelta(hours=5, seconds=30)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Three devices, a day of 30 s readings each; one with gaps in humidity."""
    gappy = readings("dev-c", T0, 2880, 30).with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("humidity")).alias("humidity"))
    return build_db(tmp_path / "e.duckdb", [readings("dev-a", T0, 2880, 30), readings("dev-b", T0, 2880, 30), gappy])


def truth(db: Path, devices: list[str]) -> pl.DataFrame:
    """The rows DuckDB holds for the devices in [START, END), ordered like an export."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(
            "SELECT device_id, ts, temperature, humidity, target_temp, heating FROM telemetry "
            "WHERE list_contains(?, device_id) AND ts >= ? AND ts < ? ORDER BY device_id, ts",
            params=[devices, START, END],
        ).pl()
    finally:
        con.close()


def test_csv_equals_database_rows_with_iso_utc_times(db: Path) -> None:
    """CSV: a header, ISO-8601 UTC times, and the same rows and values as the database, over several pages."""
    out = io.BytesIO()
    rows = export_module.export(["dev-b", "dev-c"], START, END, "csv", out, batch_rows=100, db_path=db)
    text = out.getvalue().decode()
    assert text.splitlines()[0] == '"device_id","ts","temperature","humidity","target_temp","heating"'
    assert text.splitlines()[1].startswith('"dev-b","2025-07-04T00:07:00.000000Z",')
    got = pl.read_csv(io.BytesIO(out.getvalue()), try_parse_dates=False).with_columns(
        pl.col("ts").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC"))
    expected = truth(db, ["dev-b", "dev-c"])
    assert rows == expected.height == 2 * 587  # 5 h of 30 s readings from 00:07, the 05:00:00 one included
    assert got.equals(expected)


def test_parquet_equals_database_rows_with_typed_utc_times(db: Path) -> None:
    """Parquet keeps the types: UTC timestamps, booleans, nulls."""
    out = io.BytesIO()
    export_module.export(["dev-a", "dev-c"], START, END, "parquet", out, batch_rows=1000, db_path=db)
    got = pl.read_parquet(io.BytesIO(out.getvalue()))
    expected = truth(db, ["dev-a", "dev-c"])
    assert got.schema["ts"] == pl.Datetime("us", "UTC")
    assert got["humidity"].null_count() > 0
    assert got.equals(expected)


def test_empty_range_still_has_a_header(db: Path) -> None:
    """No matching rows: a CSV with only its header."""
    out = io.BytesIO()
    assert export_module.export(["nobody"], START, END, "csv", out, db_path=db) == 0
    assert out.getvalue().decode().strip() == '"device_id","ts","temperature","humidity","target_temp","heating"'


def test_database_is_released_between_pages(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between pages a writer can open the file: a long export never locks ingest out."""
    pages = []
    original = queries.export_page_sql

    def page_sql(*args: object, **kwargs: object) -> tuple[str, list]:
        if pages:  # a previous page was read and its connection closed: a writer gets in
            con = duckdb.connect(str(db))
            con.close()
        pages.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(queries, "export_page_sql", page_sql)
    out = io.BytesIO()
    assert export_module.export(["dev-a"], START, END, "csv", out, batch_rows=150, db_path=db) == 587
    assert len(pages) == 4  # 3 full pages and the short one that ends the device


def test_progress_bar_on_request(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``progress`` draws a tqdm bar with the row count on stderr."""
    export_module.export(["dev-a"], START, END, "csv", io.BytesIO(), progress=True, batch_rows=100, db_path=db)
    assert "587/587" in capsys.readouterr().err


def test_cli_writes_the_file(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``thermolog export --device --from --to --format --out`` writes the same rows as the function."""
    monkeypatch.setenv("THERMOLOG_DB_PATH", str(db))
    from thermolog.settings import get_settings
    get_settings.cache_clear()
    target = tmp_path / "out" / "x.parquet"
    code = cli.main(["export", "--device", "dev-a", "--device", "dev-c", "--from", START.isoformat(),
                     "--to", END.isoformat().replace("+00:00", "Z"), "--out", str(target)])
    get_settings.cache_clear()
    assert code == 0
    assert pl.read_parquet(target).equals(truth(db, ["dev-a", "dev-c"]))


def test_cli_refuses_parquet_to_stdout_and_reversed_range(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clear refusals: Parquet needs a file, and --to must come after --from."""
    monkeypatch.setenv("THERMOLOG_DB_PATH", str(db))
    assert cli.main(["export", "--format", "parquet", "--from", "2025-07-04", "--to", "2025-07-05"]) == 2
    assert cli.main(["export", "--from", "2025-07-05", "--to", "2025-07-04"]) == 2


def test_cli_without_database_says_what_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """No database: exit 1 with what to start, and no file left behind."""
    monkeypatch.setenv("THERMOLOG_DB_PATH", str(tmp_path / "absent.duckdb"))
    from thermolog.settings import get_settings
    get_settings.cache_clear()
    target = tmp_path / "x.csv"
    try:
        code = cli.main(["export", "--device", "dev-a", "--out", str(target)])
    finally:
        get_settings.cache_clear()
    assert code == 1
    assert "thermolog ingest" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
