"""Export page: the prepared file holds exactly what DuckDB holds for the chosen devices and days."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.app_support import DEVICES, YEAR_DEVICE, app, recent_db, use_db

ALL_KEY, DEVICES_KEY, FROM_KEY, TO_KEY, FORMAT_KEY, PREPARE_KEY, FILE_KEY = (
    "export.all", "export.devices", "export.from", "export.to", "export.format", "export.prepare", "export.file")


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Recent readings plus a year of one device."""
    path = recent_db(tmp_path / "export.duckdb")
    use_db(monkeypatch, path)
    return path


def stored(db: Path, devices: list[str], first: date, last: date) -> pl.DataFrame:
    """What the database holds for the devices over whole UTC days first..last."""
    start = datetime.combine(first, time.min, UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, UTC)
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql("SELECT device_id, ts, temperature, humidity, target_temp, heating FROM telemetry "
                       "WHERE list_contains(?, device_id) AND ts >= ? AND ts < ? ORDER BY device_id, ts",
                       params=[devices, start, end]).pl()
    finally:
        con.close()


def prepare(at, devices: list[str], first: date, last: date, fmt: str):
    """Fill in the form and press Prepare."""
    at.toggle(key=ALL_KEY).set_value(False).run()
    at.multiselect(key=DEVICES_KEY).set_value(devices)
    at.date_input(key=FROM_KEY).set_value(first)
    at.date_input(key=TO_KEY).set_value(last)
    at.radio(key=FORMAT_KEY).set_value(fmt)
    at.run()
    return at.button(key=PREPARE_KEY).click().run()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_prepared_file_equals_the_database(db: Path, fmt: str) -> None:
    """CSV and Parquet read back equal a direct query for the same devices and days; a download button appears."""
    today = datetime.now(UTC).date()
    first, last = today - timedelta(days=3), today
    at = prepare(app("export"), [YEAR_DEVICE, DEVICES[1]], first, last, fmt)
    assert not at.exception
    prepared = at.session_state[FILE_KEY]
    expected = stored(db, [YEAR_DEVICE, DEVICES[1]], first, last)
    assert prepared.rows == expected.height > 3 * 144
    if fmt == "csv":
        got = pl.read_csv(io.BytesIO(prepared.data)).with_columns(
            pl.col("ts").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC"))
    else:
        got = pl.read_parquet(io.BytesIO(prepared.data))
    assert got.equals(expected)
    buttons = at.get("download_button")
    assert len(buttons) == 1 and prepared.name.endswith(f".{fmt}")


def test_count_shown_before_preparing(db: Path) -> None:
    """The page says how many readings match before anything is built."""
    today = datetime.now(UTC).date()
    at = app("export")
    at.toggle(key=ALL_KEY).set_value(False).run()
    at.multiselect(key=DEVICES_KEY).set_value([DEVICES[0]])
    at.date_input(key=FROM_KEY).set_value(today - timedelta(days=1))
    at.date_input(key=TO_KEY).set_value(today)
    at.run()
    expected = stored(db, [DEVICES[0]], today - timedelta(days=1), today).height
    assert f"{expected:,} readings match." in [str(m.value) for m in at.markdown]
    assert not at.get("download_button")


def test_every_thermostat_by_default_without_a_box_of_ids(db: Path) -> None:
    """The export starts from the whole fleet behind one switch; turning it off offers the box of ids, empty."""
    today = datetime.now(UTC).date()
    at = app("export")
    assert not at.get("multiselect")
    with duckdb.connect(str(db), read_only=True) as con:
        known = [row[0] for row in con.sql("SELECT DISTINCT device_id FROM telemetry").fetchall()]
    assert at.toggle(key=ALL_KEY).value and at.toggle(key=ALL_KEY).label == f"All {len(known):,} thermostats"
    at.date_input(key=FROM_KEY).set_value(today - timedelta(days=1))
    at.date_input(key=TO_KEY).set_value(today)
    at.run()
    expected = stored(db, known, today - timedelta(days=1), today).height
    assert f"{expected:,} readings match." in [str(m.value) for m in at.markdown]
    at.toggle(key=ALL_KEY).set_value(False).run()
    assert at.multiselect(key=DEVICES_KEY).value == []
    assert "Choose at least one thermostat." in [str(m.value) for m in at.info]
