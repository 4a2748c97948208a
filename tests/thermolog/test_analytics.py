"""Analytics on hand-made readings with known answers, and on simulator history stepped in-process (no MQTT)."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simulator.model import OMEGA, DeviceParams
from simulator.model import ThermalModel as TrueRoom
from tests.simhistory import direct_history
from tests.telemetry_db import build_db
from thermolog import analytics, export, queries

T0 = datetime(2025, 7, 4, tzinfo=UTC)


def frame(states: str, temps: list[float] | None = None, target: float = 21.0, interval_s: float = 60.0,
          device_id: str = "dev-1", start: datetime = T0) -> pl.DataFrame:
    """Readings every ``interval_s`` with heater states from a string like ``"000111100"``."""
    temps = temps if temps is not None else [20.0] * len(states)
    return pl.DataFrame({
        "device_id": [device_id] * len(states),
        "ts": [start + timedelta(seconds=i * interval_s) for i in range(len(states))],
        "temperature": temps,
        "humidity": [45.0] * len(states),
        "target_temp": [target] * len(states),
        "heating": [c == "1" for c in states],
    })


def model_from_truth(p: DeviceParams, hold_fraction: float = 1.0) -> analytics.ThermalModel:
    """The analytics model with the simulator's true parameters (its cosine cycle as sine/cosine parts)."""
    peak = p.outdoor_peak_hour_utc * 3600.0
    return analytics.ThermalModel(
        device_id=p.device_id, tau_s=p.tau_s, gain_c_per_s=p.heater_gain_c_per_h / 3600.0,
        ambient_mean_c=p.outdoor_mean_c, ambient_sin_c=p.outdoor_amplitude_c * math.sin(OMEGA * peak),
        ambient_cos_c=p.outdoor_amplitude_c * math.cos(OMEGA * peak), rmse_c=0.0, n_readings=0,
        hold_fraction=hold_fraction,
    )


@pytest.fixture(scope="module")
def week() -> tuple[pl.DataFrame, DeviceParams]:
    """Seven days of one simulated thermostat at 60 s, stepped in-process."""
    readings, devices = direct_history(["sim-01"], seed=9, days=7)
    return analytics.prepare(readings), devices[0].params


# --- the model itself ------------------------------------------------------------------------------------------


def test_model_solution_equals_the_simulators_room() -> None:
    """Simulating the analytics model with the true parameters reproduces the simulator's room exactly."""
    p = DeviceParams.draw("sim-07", 3)
    rng = np.random.default_rng(1)
    t = 1_790_000_000.0 + np.cumsum(rng.uniform(30, 600, 400))
    u = (rng.random(400) < 0.4).astype(float)
    room = TrueRoom(p, t[0], temperature=18.0)
    expected = [18.0] + [room.advance(t[k], bool(u[k - 1])) for k in range(1, len(t))]
    got = model_from_truth(p).simulate(t, u, 18.0)
    assert np.max(np.abs(got - np.array(expected))) < 1e-9


def test_fit_recovers_the_true_time_constant_gain_and_outdoor_cycle(week: tuple[pl.DataFrame, DeviceParams]) -> None:
    """Seven days of in-process history: tau and gain within 10 %, outdoor mean/amplitude within 1.5 °C."""
    readings, truth = week
    fit = analytics.fit_thermal_model(readings)
    assert fit.tau_s == pytest.approx(truth.tau_s, rel=0.10)
    assert fit.gain_c_per_h == pytest.approx(truth.heater_gain_c_per_h, rel=0.10)
    assert fit.ambient_mean_c == pytest.approx(truth.outdoor_mean_c, abs=1.5)
    assert fit.ambient_amplitude_c == pytest.approx(truth.outdoor_amplitude_c, abs=1.5)
    assert 0.0 <= fit.hold_fraction <= 1.0
    assert fit.n_readings == readings.height


def test_idle_periods_alone_give_the_time_constant_within_20_percent(
        week: tuple[pl.DataFrame, DeviceParams]) -> None:
    """The model-light cross-check from idle periods lands near the truth too."""
    readings, truth = week
    assert analytics.cooling_time_constant(readings) == pytest.approx(truth.tau_s, rel=0.20)


def test_fit_refuses_a_device_whose_heater_never_switched() -> None:
    with pytest.raises(analytics.InsufficientData):
        analytics.fit_thermal_model(analytics.prepare(frame("0" * 100)))


def test_closed_form_time_to_target_matches_the_simulated_crossing() -> None:
    """Constant outdoor temperature: tau * ln(...) equals where the simulated trajectory crosses the target."""
    model = analytics.ThermalModel("d", tau_s=4 * 3600.0, gain_c_per_s=5.0 / 3600.0, ambient_mean_c=5.0,
                                   ambient_sin_c=0.0, ambient_cos_c=0.0, rmse_c=0.0, n_readings=0)
    t = np.arange(0.0, 6 * 3600.0, 1.0)
    for start, target, heating in ((17.0, 21.0, 1.0), (21.0, 18.0, 0.0)):
        path = model.simulate(t, np.full_like(t, heating), start)
        crossed = t[np.argmax(path >= target if heating else path <= target)]
        assert model.time_to_target(start, target) == pytest.approx(crossed, abs=2.0)
        assert model.time_to_target(start, target, at=0.0) == pytest.approx(crossed, abs=2.0)


def test_time_to_target_with_the_daily_cycle_matches_the_true_room() -> None:
    """With ``at``, the prediction follows the outdoor cycle: it equals the simulator's own crossing time."""
    p = DeviceParams.draw("sim-02", 5)
    model = model_from_truth(p)
    for hour in (3, 15):
        at = 1_790_006_400.0 + hour * 3600.0
        room = TrueRoom(p, at, temperature=17.0)
        step, elapsed = 5.0, 0.0
        while room.temperature < 20.0:
            elapsed += step
            room.advance(at + elapsed, True)
        assert model.time_to_target(17.0, 20.0, at=at) == pytest.approx(elapsed, abs=step)


def test_out_of_reach_targets_have_no_time() -> None:
    model = analytics.ThermalModel("d", tau_s=3600.0, gain_c_per_s=10.0 / 3600.0, ambient_mean_c=5.0,
                                   ambient_sin_c=0.0, ambient_cos_c=0.0, rmse_c=0.0, n_readings=0)
    assert model.time_to_target(12.0, 14.5) is not None
    assert model.time_to_target(12.0, 15.5) is None  # the heater holds the room at most 5 + 10 = 15 °C
    assert model.time_to_target(12.0, 4.0) is None  # nor can it cool below outdoors
    assert model.time_to_target(12.0, 14.5, at=T0) is not None
    assert model.time_to_target(12.0, 15.5, at=T0) is None
    assert model.time_to_target(12.0, 4.0, at=T0) is None
    assert "out of reach" in analytics.describe_time_to_target(model, 12.0, 30.0)


def test_describe_time_to_target_reads_in_minutes_or_hours() -> None:
    model = analytics.ThermalModel("d", tau_s=4 * 3600.0, gain_c_per_s=5.0 / 3600.0, ambient_mean_c=5.0,
                                   ambient_sin_c=0.0, ambient_cos_c=0.0, rmse_c=0.0, n_readings=0)
    minutes = round(model.time_to_target(19.0, 19.5) / 60)  # type: ignore[operator]
    assert analytics.describe_time_to_target(model, 19.0, 19.5) == f"about {minutes} minutes to reach 19.5 °C"
    assert analytics.describe_time_to_target(model, 17.0, 22.0).endswith("hours to reach 22 °C")


# --- cycles, duty cycle, rates, anomalies -------------------------------------------------------------------------


def test_heating_cycles_have_start_end_duration_and_rise() -> None:
    states = "00000" + "1" * 10 + "00000" + "11" + "000"
    temps = [20.0] * 5 + [20.0 + 0.1 * i for i in range(10)] + [21.0] * 5 + [20.5, 20.6] + [20.7] * 3
    cycles = analytics.heating_cycles(analytics.prepare(frame(states, temps)))
    assert cycles.height == 2
    first, second = cycles.row(0, named=True), cycles.row(1, named=True)
    assert first["start"] == T0 + timedelta(minutes=5)
    assert first["end"] == T0 + timedelta(minutes=15)  # the reading that showed the heater off
    assert first["duration_s"] == 600
    assert first["temp_rise"] == pytest.approx(1.0)  # 20.0 at the start, 21.0 on the first idle reading
    assert first["rate_c_per_h"] == pytest.approx(6.0, rel=0.05)  # 0.1 °C per minute
    assert not first["short"]
    assert second["duration_s"] == 120 and second["short"]


def test_duty_cycle_is_the_share_of_time_on_per_bucket() -> None:
    states = ("1" * 15 + "0" * 45) + ("1" * 30 + "0" * 30) + "0"  # the last reading only closes the second hour
    duty = analytics.duty_cycle(analytics.prepare(frame(states)), "1h")
    assert duty["duty"].to_list() == pytest.approx([0.25, 0.5])
    assert duty["covered_s"].to_list() == [3600, 3600]


def test_gaps_count_for_nothing_and_split_runs() -> None:
    """A reading missing for an hour: the gap is in no duty-cycle bucket and no heating cycle spans it."""
    before, after = frame("1" * 30), frame("1" * 30, start=T0 + timedelta(hours=1, minutes=30))
    readings = analytics.prepare(pl.concat([before, after]))
    assert readings["segment"].n_unique() == 2
    duty = analytics.duty_cycle(readings, "1d")
    assert duty["covered_s"].to_list() == [58 * 60]  # 29 intervals in each segment
    assert analytics.heating_cycles(readings).height == 2


def test_short_cycling_flags_hours_with_many_or_short_cycles() -> None:
    rapid = "10" * 30  # 30 cycles of one minute in an hour
    calm = "1" * 20 + "0" * 40
    flagged = analytics.short_cycling(analytics.prepare(frame(rapid + calm)))
    assert flagged["hour"].to_list() == [T0]
    assert flagged["cycles"].to_list() == [30]


def test_overshoot_and_undershoot_against_the_target_on_settled_runs() -> None:
    states = "1111" + "0000" + "1111" + "0000"
    temps = [20.8, 20.9, 21.0, 21.1] + [21.3, 21.4, 21.2, 20.9] + [20.6, 20.8, 21.0, 21.2] + [21.25, 21.1, 21.0, 20.9]
    result = analytics.overshoot_summary(analytics.prepare(frame(states, temps)))
    row = result.row(0, named=True)
    assert row["overshoot_max_c"] == pytest.approx(0.4)
    assert row["undershoot_max_c"] == pytest.approx(0.4)


def test_overshoot_skips_the_transient_after_a_setpoint_change() -> None:
    readings = frame("0000" + "1111" + "0000", [25.0] * 4 + [17.0] * 4 + [17.5] * 4)
    readings = readings.with_columns(pl.Series("target_temp", [25.0] * 4 + [18.0] * 8))
    over = analytics.overshoot(analytics.prepare(readings))
    assert over["overshoot_c"].drop_nulls().to_list() == [pytest.approx(-0.5)]


def test_rates_summarise_heating_and_cooling_per_device(week: tuple[pl.DataFrame, DeviceParams]) -> None:
    readings, _truth = week
    row = analytics.rates(readings).row(0, named=True)
    assert row["heating_rate_c_per_h"] > 0 > row["cooling_rate_c_per_h"]
    assert 0 < row["duty"] < 1 and row["cycles"] > 50


def test_daily_profile_has_24_hours_per_device(week: tuple[pl.DataFrame, DeviceParams]) -> None:
    readings, _truth = week
    profile = analytics.daily_profile(readings)
    assert profile["hour"].to_list() == list(range(24))
    # nights are set back (schedule): the room is cooler at 03:00 than at 19:00 UTC
    temps = dict(zip(profile["hour"], profile["temp_mean"], strict=True))
    assert temps[3] < temps[19]


def test_a_heater_that_stops_warming_is_flagged(week: tuple[pl.DataFrame, DeviceParams]) -> None:
    """Normal history has no anomaly; two hours forced ON with the temperature falling are flagged."""
    readings, _truth = week
    assert analytics.heater_anomalies(readings).is_empty()
    fault_start, fault_end = readings["ts"][3000], readings["ts"][3120]
    broken = readings.with_columns(
        pl.when(pl.col("ts").is_between(fault_start, fault_end, closed="left")).then(True)
        .otherwise(pl.col("heating")).alias("heating"),
        pl.when(pl.col("ts").is_between(fault_start, fault_end, closed="left"))
        .then(18.0 - (pl.col("t") - fault_start.timestamp()) / 3600.0 * 0.5)
        .otherwise(pl.col("temperature")).alias("temperature"),
    )
    found = analytics.heater_anomalies(analytics.prepare(broken))
    assert found.height == 1
    row = found.row(0, named=True)
    assert fault_start <= row["start"] < fault_start + timedelta(minutes=35)
    assert row["duration_s"] >= 3600
    assert row["rate_c_per_h"] < 0


# --- setpoint changes and time to target on data ---------------------------------------------------------------


def test_setpoint_changes_and_observed_time_to_target() -> None:
    temps = [18.0] * 5 + [18.0 + 0.25 * i for i in range(1, 16)]
    readings = frame("0" * 5 + "1" * 15, temps, target=18.0).with_columns(
        pl.Series("target_temp", [18.0] * 5 + [20.0] * 15))
    prepared = analytics.prepare(readings)
    changes = analytics.setpoint_changes(prepared)
    assert changes.select("ts", "old_target", "new_target").rows() == [(T0 + timedelta(minutes=5), 18.0, 20.0)]
    observed = analytics.observed_time_to_target(prepared, "dev-1", T0 + timedelta(minutes=5), 20.0, smooth=1)
    assert observed == pytest.approx(7 * 60)  # the reading at minute 5 + k - 1 shows 18 + 0.25 k: 20 at minute 12


def test_validate_time_to_target_on_in_process_history(week: tuple[pl.DataFrame, DeviceParams]) -> None:
    """The true model predicts the observed times of well-posed changes closely (median error under 5 %)."""
    readings, truth = week
    result = analytics.validate_time_to_target(readings, {truth.device_id: model_from_truth(truth, 0.6)})
    usable = result.filter(pl.col("observed_s") > 1200)
    assert usable.height >= 5
    assert usable["error_pct"].abs().median() < 5.0  # type: ignore[operator]


# --- loading ---------------------------------------------------------------------------------------------------


def test_reader_and_export_files_give_the_same_frame(tmp_path: Path, week: tuple[pl.DataFrame, DeviceParams]) -> None:
    """load_telemetry (through the reader) and read_export of a CSV and a Parquet export agree."""
    readings, _truth = week
    table = readings.select(*queries.EXPORT_COLUMNS).with_columns(pl.col("ts").alias("received_at"))
    other = table.with_columns(pl.lit("other").alias("device_id"))
    db = build_db(tmp_path / "t.duckdb", [table, other])
    start, end = readings["ts"][100], readings["ts"][400]
    loaded = analytics.load_telemetry(["sim-01"], start, end, db_path=db)
    assert loaded.height == 300 and loaded["device_id"].unique().to_list() == ["sim-01"]
    for fmt in ("csv", "parquet"):
        buffer = io.BytesIO()
        export.export(["sim-01"], start, end, fmt, buffer, db_path=db)
        path = tmp_path / f"export.{fmt}"
        path.write_bytes(buffer.getvalue())
        exported = analytics.read_export(path)
        columns = ["device_id", "ts", "temperature", "target_temp", "heating", "t", "u", "dt", "segment"]
        assert exported.select(columns).equals(loaded.select(columns)), fmt
