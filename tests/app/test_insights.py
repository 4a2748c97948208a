"""Insights page (constants and duty-cycle charts) and the time-to-target estimate on the Control page, rendered
with AppTest on a database holding a week of simulated thermostats."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from app import thermal
from app.auth import USER_KEY
from app.roles import ROLE_OPERATOR, User
from simulator.model import DeviceParams
from tests.app_support import app, shown_table, texts, use_db
from tests.simhistory import direct_history
from tests.telemetry_db import build_db
from thermolog import analytics
from thermolog.reader import read_connection

SIMULATED = ("sim-01", "sim-02")
IDLE = "idle-room"
"""A thermostat whose heater never switched: nothing to fit."""


@pytest.fixture(scope="module")
def week_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, DeviceParams]]:
    """Seven days of two simulated thermostats (60 s readings) ending now, and a device with idle readings."""
    t0 = math.floor(datetime.now(UTC).timestamp()) - 7 * 86_400
    readings, devices = direct_history(list(SIMULATED), seed=12, days=7, t0=float(t0))
    readings = readings.with_columns(pl.col("ts").alias("received_at"))
    idle = readings.filter(pl.col("device_id") == SIMULATED[0]).tail(600).with_columns(
        pl.lit(IDLE).alias("device_id"), pl.lit(False).alias("heating"))
    path = build_db(tmp_path_factory.mktemp("insights") / "week.duckdb", [readings, idle])
    return path, {d.device_id: d.params for d in devices}


@pytest.fixture
def db(week_db: tuple[Path, dict[str, DeviceParams]], monkeypatch: pytest.MonkeyPatch) -> dict[str, DeviceParams]:
    use_db(monkeypatch, week_db[0])
    return week_db[1]


def week_db_path() -> str:
    """The database the app reads (set by the ``db`` fixture)."""
    from thermolog.settings import get_settings

    return str(get_settings().db_path)


def _interval(cell: str) -> tuple[float, float, float]:
    """``3.24 (3.06–3.44)`` -> (3.24, 3.06, 3.44)."""
    match = re.fullmatch(r"(-?[\d.]+) \((-?[\d.]+)–(-?[\d.]+)\)", cell)
    assert match, cell
    value, low, high = (float(part) for part in match.groups())
    return value, low, high


def test_insights_shows_the_fitted_constants_of_every_device(db: dict[str, DeviceParams]) -> None:
    """A row per device: time constant and gain near the simulator's truth, each with an interval holding the
    truth; the idle device has rates but no model, says "not enough data" and is named as not fittable."""
    at = app("insights")
    assert not at.exception
    table = constants(at)
    rows = {row["device"]: row for row in table.to_dict("records")}
    assert set(rows) == {*SIMULATED, IDLE}
    assert rows[IDLE]["time constant (h)"] == rows[IDLE]["heater gain (°C/h)"] == "not enough data"
    for device_id, truth in db.items():
        tau, tau_low, tau_high = _interval(rows[device_id]["time constant (h)"])
        gain, gain_low, gain_high = _interval(rows[device_id]["heater gain (°C/h)"])
        assert tau == pytest.approx(truth.tau_s / 3600, rel=0.15) and tau_low <= truth.tau_s / 3600 <= tau_high
        assert gain == pytest.approx(truth.heater_gain_c_per_h, rel=0.15)
        assert gain_low <= truth.heater_gain_c_per_h <= gain_high
        assert 0 < rows[device_id]["duty cycle (%)"] < 100
    assert any(IDLE in message for message in texts(at.info))


@pytest.fixture
def six_hours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's case: six hours of one simulated thermostat, ending now."""
    t0 = math.floor(datetime.now(UTC).timestamp()) - 6 * 3600
    readings, _devices = direct_history([SIMULATED[0]], seed=12, days=0.25, t0=float(t0))
    use_db(monkeypatch, build_db(tmp_path / "six.duckdb", [readings.with_columns(pl.col("ts").alias("received_at"))]))


def test_six_hours_say_not_enough_data_instead_of_numbers(six_hours: None) -> None:
    """Six hours cannot separate the room from the daily outdoor cycle: every fitted constant and the Control
    page's time to target say so instead of showing a number."""
    at = app("insights")
    assert not at.exception
    row = constants(at).to_dict("records")[0]
    fitted = ["time constant (h)", "heater gain (°C/h)", "heater lift (°C)", "outdoor mean (°C)",
              "outdoor daily swing ± (°C)"]
    assert [row[name] for name in fitted] == ["not enough data"] * len(fitted)
    operator = User(name="Olivia Operator", username="olivia@example.com", roles=frozenset({ROLE_OPERATOR}))
    at = app("control", session={USER_KEY: operator})
    at.selectbox(key="control.device").set_value(SIMULATED[0]).run()
    at.text_input(key="control.target").set_value("23").run()
    assert any(c.startswith("Not enough data yet to say how long reaching 23 °C takes") for c in texts(at.caption))
    assert not [c for c in texts(at.caption) if c.startswith("about ")]


def test_insights_draws_the_duty_cycle_per_day_and_hour_of_day(db: dict[str, DeviceParams]) -> None:
    at = app("insights")
    (chart,) = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]  # both panels in one figure
    assert [note["text"] for note in chart["layout"]["annotations"]] == ["Heater duty cycle", "Average day"]
    daily = {trace["name"]: trace["y"] for trace in chart["data"] if trace["type"] == "bar"}
    hourly = {trace["name"]: trace for trace in chart["data"] if trace["type"] == "scatter"}
    assert set(hourly) == {f"{device} duty" for device in daily} and all(t["xaxis"] == "x2" for t in hourly.values())
    for device, trace in hourly.items():  # one colour per device in both panels
        bars = next(t for t in chart["data"] if t["type"] == "bar" and t["name"] == device.removesuffix(" duty"))
        assert trace["marker"]["color"] == trace["line"]["color"] == bars["marker"]["color"]
    assert set(daily) == {*SIMULATED, IDLE}
    assert set(_values(daily[IDLE])) == {0.0} and all(max(_values(daily[d])) > 0 for d in SIMULATED)


def constants(at) -> pd.DataFrame:
    """The constants table a row per device, whether shown with a column per device (Markdown) or a row each."""
    table = shown_table(at)
    if table.columns[0] != "constant":
        return table
    rows = table.set_index("constant").T.rename_axis("device").reset_index()
    for column in rows.columns[1:]:
        try:
            rows[column] = pd.to_numeric(rows[column])
        except (ValueError, TypeError):
            pass  # text: "3.24 (3.06–3.44)" or "not enough data"
    return rows


def _values(y: list | dict) -> list[float]:
    """Plotly ships arrays either as lists or as typed arrays (base64)."""
    if isinstance(y, dict):
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]).tolist()
    return list(y)


def test_insights_range_and_device_choice(db: dict[str, DeviceParams]) -> None:
    """Choosing one device and 3 days fits only that device on those days."""
    at = app("insights")
    at.multiselect(key="insights.devices").set_value([SIMULATED[1]])
    at.get("button_group")[0].set_value("3 d")
    at.run()
    assert not at.exception
    assert constants(at)["device"].to_list() == [SIMULATED[1]]
    (summary,) = [c for c in texts(at.caption) if " readings from " in c]
    count, start, end = re.fullmatch(r"([\d,]+) readings from (.+) UTC to (.+) UTC", summary).groups()
    start, end = (datetime.fromisoformat(text).replace(tzinfo=UTC) for text in (start, end))
    assert end - start == timedelta(days=3)
    with read_connection(week_db_path()) as con:
        stored = con.execute("SELECT count(*) FROM telemetry WHERE device_id = ? AND ts >= ? AND ts < ?",
                             [SIMULATED[1], start, end]).fetchone()[0]
    assert int(count.replace(",", "")) == stored
    assert stored >= 3 * 1440 - thermal.WINDOW_STEP_S // 60  # three days of 60 s readings, less the window's last step


def test_the_fitted_window_holds_the_newest_reading_and_moves_in_steps() -> None:
    """Readings minutes apart within one step give the same window (one cached fit); the next step moves it."""
    week = timedelta(days=7)
    first = thermal.fit_window(datetime(2026, 12, 7, 20, 30, 0, tzinfo=UTC), week)
    assert first == (datetime(2026, 11, 30, 20, 35, tzinfo=UTC), datetime(2026, 12, 7, 20, 35, tzinfo=UTC))
    assert thermal.fit_window(datetime(2026, 12, 7, 20, 34, 59, tzinfo=UTC), week) == first
    step = timedelta(seconds=thermal.WINDOW_STEP_S)
    assert thermal.fit_window(datetime(2026, 12, 7, 20, 35, 0, tzinfo=UTC), week)[1] == first[1] + step


def test_control_page_says_how_long_the_new_target_takes(db: dict[str, DeviceParams]) -> None:
    """Beside a valid setpoint: 'about N minutes/hours to reach X °C' from the device's fitted model."""
    operator = User(name="Olivia Operator", username="olivia@example.com", roles=frozenset({ROLE_OPERATOR}))
    at = app("control", session={USER_KEY: operator})
    at.selectbox(key="control.device").set_value(SIMULATED[0]).run()
    current = float(at.metric[1].value.split()[0])
    target = math.floor(current) + 2.0
    at.text_input(key="control.target").set_value(f"{target:g}").run()
    assert not at.exception
    estimate = [c for c in texts(at.caption) if f"to reach {target:g} °C" in c]
    assert len(estimate) == 1 and estimate[0].startswith("about ")
    words = estimate[0].split()
    shown_s = float(words[1]) * (60 if words[2] == "minutes" else 3600)
    model = analytics.model_for_device(SIMULATED[0], days=7, db_path=week_db_path(), min_interval_s=30)
    assert model is not None
    expected = model.time_to_target(current, target, at=datetime.now(UTC))
    assert expected is not None and shown_s == pytest.approx(expected, rel=0.1, abs=120)


def _constants_page(devices: int) -> AppTest:
    def script(devices: int) -> None:
        import polars as pl

        from app import thermal

        thermal.show_constants(pl.DataFrame({"device": [f"room-{i}" for i in range(devices)],
                                             "time constant (h)": ["not enough data"] * devices,
                                             "duty cycle (%)": [45.0] * devices}))

    return AppTest.from_function(script, args=(devices,)).run()


def test_a_few_thermostats_get_a_column_each_many_a_row_each() -> None:
    few = _constants_page(thermal.COLUMNS_UP_TO)
    assert not few.exception and not few.dataframe
    assert list(shown_table(few).columns) == ["constant", *(f"room-{i}" for i in range(thermal.COLUMNS_UP_TO))]
    assert constants(few)["duty cycle (%)"].tolist() == [45.0] * thermal.COLUMNS_UP_TO
    many = _constants_page(thermal.COLUMNS_UP_TO + 1)
    assert not many.exception and not many.markdown
    assert many.dataframe[0].value["device"].tolist() == [f"room-{i}" for i in range(thermal.COLUMNS_UP_TO + 1)]
