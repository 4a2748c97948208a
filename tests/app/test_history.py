"""History page: presets and custom ranges, several devices, charts within the point budget, statistics."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app import ui
from tests.app_support import (
    DEVICES,
    ENTRYPOINT,
    TIMEOUT_S,
    YEAR_DEVICE,
    app,
    figure_series,
    figure_traces,
    recent_db,
    shown_table,
    texts,
    use_db,
)
from tests.telemetry_db import build_db, readings

# The page's widget keys (importing the page module would run the page).
DEVICES_KEY, FROM_KEY, TO_KEY, CUSTOM = "history.devices", "history.from", "history.to", "Custom"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A database with two live devices and one with a year of readings."""
    path = recent_db(tmp_path / "history.duckdb")
    use_db(monkeypatch, path)
    return path


def pick(at, preset: str, devices: list[str]):
    """Choose devices and a preset range, then rerun."""
    at.multiselect(key=DEVICES_KEY).set_value(devices)
    at.get("button_group")[0].set_value(preset)
    return at.run()


@pytest.mark.parametrize("max_points", [2000, 300])
def test_one_year_never_sends_more_than_max_points_per_series(db: Path, monkeypatch: pytest.MonkeyPatch,
                                                              max_points: int) -> None:
    """A year of 10-minute readings (52,560 per device) reaches the browser as at most max_points per trace."""
    monkeypatch.setenv("THERMOLOG_MAX_CHART_POINTS", str(max_points))
    use_db(monkeypatch, db)
    at = pick(app("history"), "1 y", [YEAR_DEVICE, DEVICES[0]])
    assert not at.exception
    series = figure_series(at)
    assert series and max(count for _name, count in series) <= max_points
    year_line = dict(series)[YEAR_DEVICE]
    assert year_line > max_points * 0.8  # downsampled to the budget, not to a handful of points
    assert any("1-hour rollup" in c for c in texts(at.caption))
    names = {name for name, _count in series}
    assert {f"{YEAR_DEVICE} target", f"{YEAR_DEVICE} heating", f"{YEAR_DEVICE} min–max"} <= names


def test_short_range_shows_raw_readings_without_band(db: Path) -> None:
    """One hour of 30 s readings is drawn point for point (no min–max band needed)."""
    at = pick(app("history"), "1 h", list(DEVICES))
    assert not at.exception
    series = dict(figure_series(at))
    assert 118 <= series[DEVICES[0]] <= 121 and 118 <= series[DEVICES[1]] <= 121
    assert f"{DEVICES[0]} min–max" not in series
    assert any("raw readings" in c for c in texts(at.caption))


def test_statistics_table_per_device(db: Path) -> None:
    """The stats table has a row per chosen device with duty cycle and time below target."""
    at = pick(app("history"), "24 h", list(DEVICES))
    table = shown_table(at)
    assert list(table["device"]) == sorted(DEVICES)
    assert list(table["readings"]) == [240, 240]
    assert {"heating duty cycle (%)", "time below target (h)", "min (°C)", "avg (°C)", "max (°C)"} <= set(table)
    assert ((table["heating duty cycle (%)"] >= 0) & (table["heating duty cycle (%)"] <= 100)).all()


def test_custom_range(db: Path) -> None:
    """A custom range of whole days picks up the year device's readings in it."""
    at = app("history")
    at.multiselect(key=DEVICES_KEY).set_value([YEAR_DEVICE])
    at.get("button_group")[0].set_value(CUSTOM)
    at.run()
    day = (datetime.now(UTC) - timedelta(days=100)).date()
    at.date_input(key=FROM_KEY).set_value(day)
    at.date_input(key=TO_KEY).set_value(day + timedelta(days=1))
    at.run()
    assert not at.exception
    assert dict(figure_series(at))[YEAR_DEVICE] == 2 * 144  # two whole days of 10-minute readings
    assert shown_table(at)["readings"].tolist() == [2 * 144]


def test_an_outage_breaks_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two hours without readings show as a gap (a NaN in the line), not as a straight line across."""
    now = datetime.now(UTC).replace(microsecond=0)
    before = readings("porch", now - timedelta(hours=6), 120, 60)
    after = readings("porch", now - timedelta(hours=2), 100, 60)
    use_db(monkeypatch, build_db(tmp_path / "gap.duckdb", [before, after]))
    monkeypatch.setenv("THERMOLOG_MAX_CHART_POINTS", "2000")  # one-minute buckets: one point per reading
    at = pick(app("history"), "24 h", ["porch"])
    assert not at.exception
    line = next(trace for trace in figure_traces(at) if trace.get("name") == "porch")  # the temperature chart
    y = np.frombuffer(base64.b64decode(line["y"]["bdata"]), dtype=line["y"]["dtype"])
    assert len(y) == 221 and np.isnan(y).sum() == 1


@pytest.mark.slow
def test_fahrenheit_everywhere(db: Path) -> None:
    """With °F chosen, the chart title, the plotted values and the statistics are in °F."""
    at = app("history", session={ui.UNITS_KEY: ui.FAHRENHEIT})
    at = pick(at, "1 h", [DEVICES[0]])
    table = shown_table(at)
    celsius = shown_table(pick(app("history"), "1 h", [DEVICES[0]]))
    assert table["max (°F)"][0] == pytest.approx(celsius["max (°C)"][0] * 9 / 5 + 32, abs=0.01)
    line = next(trace for trace in figure_traces(at) if trace.get("name") == DEVICES[0])
    y = np.frombuffer(base64.b64decode(line["y"]["bdata"]), dtype=line["y"]["dtype"])
    assert np.nanmax(y) == pytest.approx(table["max (°F)"][0], abs=0.01)
    (layout,) = (json.loads(c.proto.spec)["layout"] for c in at.get("plotly_chart"))
    assert layout["title"]["text"] == "Temperature (°F) and humidity (%)"
    assert layout["yaxis"]["title"]["text"] == "°F" and layout["yaxis3"]["title"]["text"] == "%"


def test_a_link_opens_the_chart_it_names(db: Path) -> None:
    """``?devices=...&range=1y`` chooses the thermostats and preset; unknown ids and ranges are ignored."""
    at = AppTest.from_file(ENTRYPOINT, default_timeout=TIMEOUT_S)
    at.query_params.update({"devices": f"{YEAR_DEVICE},nowhere", "range": "1y"})
    at.run()
    at.switch_page("views/history.py").run()
    assert not at.exception
    assert at.multiselect(key=DEVICES_KEY).value == [YEAR_DEVICE]
    assert at.get("button_group")[0].value == "1 y"
    assert {name for name, _count in figure_series(at)} >= {YEAR_DEVICE}

    at = AppTest.from_file(ENTRYPOINT, default_timeout=TIMEOUT_S)
    at.query_params.update({"devices": "nowhere", "range": "2 centuries"})
    at.run()
    at.switch_page("views/history.py").run()
    assert not at.exception
    assert at.get("button_group")[0].value == "24 h"
    assert at.multiselect(key=DEVICES_KEY).value  # the usual first thermostats


def test_many_thermostats_get_lines_without_shading_or_bands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five thermostats over 24 h: a line each, no target line, heater shading or min–max band covering the rest
    (ten lines and their fills were a tangle, and each trace costs the browser time); two get all of them."""
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [f"room-{i}" for i in range(5)]
    frames = [readings(d, now - timedelta(hours=6), 720, 30) for d in ids]
    use_db(monkeypatch, build_db(tmp_path / "five.duckdb", frames))
    at = pick(app("history"), "24 h", ids)
    assert not at.exception
    names = {name for name, _count in figure_series(at)}
    assert set(ids) <= names
    assert not {n for n in names if n and ("heating" in n or "min–max" in n or "target" in n)}
    assert any("drawn for up to 4 thermostats" in c for c in texts(at.caption))
    at = pick(at, "24 h", ids[:2])
    detailed = {name for name, _count in figure_series(at)}
    assert {f"{ids[0]} heating", f"{ids[0]} min–max", f"{ids[0]} target"} <= detailed


def test_temperature_and_humidity_share_one_time_axis(db: Path) -> None:
    """One chart: temperature on top, humidity in a row below on the same x axis (zooming one zooms both)."""
    at = pick(app("history"), "24 h", DEVICES[:2])
    assert not at.exception
    (chart,) = at.get("plotly_chart")
    traces = {trace.get("name"): trace for trace in json.loads(chart.proto.spec)["data"]}
    for device in DEVICES[:2]:
        assert traces[device].get("yaxis") == "y" and traces[f"{device} humidity"]["yaxis"] == "y3"
        assert traces[device].get("xaxis", "x") == traces[f"{device} humidity"].get("xaxis", "x") == "x"
        assert traces[f"{device} humidity"]["showlegend"] is False
