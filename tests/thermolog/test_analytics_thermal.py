"""The thermal model fitted on 14 days of simulated history that went through MQTT and the ingest worker, checked
against the simulator's recorded truth: time constant and heater gain within 10 %, time to target within 15 % on
setpoint changes held out of the fit. The time to target is also checked on other stretches of the same devices'
history, stepped in-process, so it does not hold on the pinned stretch alone."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import polars as pl
import pytest

from simulator.model import ThermalModel as TrueRoom
from tests.simhistory import READINGS_PER_DEVICE, History, in_process_history, truth_of, utc
from thermolog import analytics

HELD_OUT_DAYS = 4
"""The fit sees the first ten days; setpoint changes of the last four are predicted."""
MIN_CHANGE_C = 1.0
"""Targets closer than this to the temperature at the change are reached in minutes: the 60 s reading interval
alone is then more than 15 % of the answer."""
MAX_APPROACH = 0.75
"""Changes whose target lies beyond this share of the way to where the room would settle approach it
asymptotically: there the answer hinges on hundredths of a degree, and no model can give it to 15 %."""
OTHER_HISTORY_ENDS = ("2026-03-03T19:14:00Z", "2026-06-11T13:00:00Z", "2026-11-21T14:22:00Z")
"""Other stretches of the same devices' history (in-process, no MQTT). Each holds a change (cooling, cooling,
warming) after which the thermostat held the room around the target right after reaching it: a reading curve
smoothed across that moment reaches the target 20-30 % late."""


@pytest.fixture(scope="module")
def telemetry(simulated_history: History) -> pl.DataFrame:
    return analytics.load_telemetry(db_path=simulated_history.db_path)


@pytest.fixture(scope="module")
def split(simulated_history: History):  # noqa: ANN201
    return utc(simulated_history.params["backfill_end"]) - timedelta(days=HELD_OUT_DAYS)


@pytest.fixture(scope="module")
def models(telemetry: pl.DataFrame, split) -> dict[str, analytics.ThermalModel]:  # noqa: ANN001
    return analytics.fit_thermal_models(telemetry.filter(pl.col("ts") < split))


def test_every_reading_went_through_ingest(telemetry: pl.DataFrame, simulated_history: History) -> None:
    """All 14 days of every simulated device are in the database, one row per reading. (Missing readings here
    mean the broker dropped messages for an ingest worker that fell too far behind.)"""
    counts = dict(telemetry.group_by("device_id").len().iter_rows())
    assert counts == {device_id: READINGS_PER_DEVICE for device_id in simulated_history.device_ids}


def test_fitted_time_constant_and_gain_are_within_10_percent_of_the_truth(
        models: dict[str, analytics.ThermalModel], simulated_history: History) -> None:
    """For every device: |fitted/true - 1| < 10 % for tau and heater gain (and the outdoor mean within 1.5 °C)."""
    report = []
    for device_id in simulated_history.device_ids:
        truth, fit = simulated_history.truth(device_id), models[device_id]
        tau_err = fit.tau_s / truth.tau_s - 1
        gain_err = fit.gain_c_per_h / truth.heater_gain_c_per_h - 1
        report.append(f"{device_id}: tau {truth.tau_s / 3600:.2f} h -> {fit.tau_h:.2f} h ({tau_err:+.1%}), "
                      f"gain {truth.heater_gain_c_per_h:.2f} -> {fit.gain_c_per_h:.2f} °C/h ({gain_err:+.1%})")
        assert abs(tau_err) < 0.10, report[-1]
        assert abs(gain_err) < 0.10, report[-1]
        assert abs(fit.ambient_mean_c - truth.outdoor_mean_c) < 1.5, report[-1]
        assert fit.rmse_c < 4 * truth.noise_c + 0.2, report[-1]
    print("\n".join(report))


def _held_out_changes(params: dict[str, Any], split) -> pl.DataFrame:  # noqa: ANN001
    """The recorded setpoint changes after ``split``, with the target each replaced."""
    rows, last = [], {d["device_id"]: d["initial_target_c"] for d in params["devices"]}
    for change in params["setpoint_changes"]:
        ts = utc(change["ts"])
        if ts >= split:
            rows.append({"device_id": change["device_id"], "ts": ts, "old_target": last[change["device_id"]],
                         "new_target": change["target_temp"]})
        last[change["device_id"]] = change["target_temp"]
    return pl.DataFrame(rows, schema={"device_id": pl.String, "ts": pl.Datetime("us", "UTC"),
                                      "old_target": pl.Float64, "new_target": pl.Float64})


def _check_time_to_target(telemetry: pl.DataFrame, models: dict[str, analytics.ThermalModel],
                          params: dict[str, Any], split) -> list[str]:  # noqa: ANN001
    """Assert every well-posed held-out change is predicted within 15 % and most changes are well-posed; returns
    one report line per change checked."""
    changes = _held_out_changes(params, split)
    result = analytics.validate_time_to_target(telemetry, models, changes)
    assert result.height == changes.height > 0
    checked, report = 0, []
    for row in result.iter_rows(named=True):
        room = TrueRoom(truth_of(params, row["device_id"]), t0=0.0)
        warming = row["new_target"] > row["start_temp"]
        settle = room.steady(row["ts"].timestamp(), warming)
        approach = (row["new_target"] - row["start_temp"]) / (settle - row["start_temp"])
        well_posed = abs(row["new_target"] - row["start_temp"]) >= MIN_CHANGE_C and approach <= MAX_APPROACH
        if not well_posed or row["observed_s"] is None:
            continue
        checked += 1
        report.append(f"{row['device_id']} {row['ts']:%m-%d %H:%M} {row['old_target']:.1f}->{row['new_target']:.1f}"
                      f" °C: observed {row['observed_s'] / 60:.1f} min, predicted {row['predicted_s'] / 60:.1f} min"
                      f" ({row['error_pct']:+.1f} %)")
        assert row["predicted_s"] is not None, report[-1]
        assert abs(row["error_pct"]) < 15.0, report[-1]
    assert checked >= max(6, result.height // 2), f"only {checked} of {result.height} held-out changes checked"
    return report


def test_time_to_target_is_within_15_percent_on_held_out_setpoint_changes(
        telemetry: pl.DataFrame, models: dict[str, analytics.ThermalModel], simulated_history: History,
        split) -> None:  # noqa: ANN001
    """Every well-posed held-out change (see MIN_CHANGE_C, MAX_APPROACH; reached before the next change) is
    predicted within 15 % of the time the room actually took, and most changes are well-posed."""
    print("\n".join(_check_time_to_target(telemetry, models, simulated_history.params, split)))


@pytest.mark.slow
@pytest.mark.parametrize("end", OTHER_HISTORY_ENDS)
def test_time_to_target_is_within_15_percent_on_other_stretches_of_history(end: str) -> None:
    """The same check on other stretches of the devices' history, fitted on their own first ten days."""
    frame, params = in_process_history(end)
    telemetry = analytics.prepare(frame)
    split = utc(params["backfill_end"]) - timedelta(days=HELD_OUT_DAYS)
    models = analytics.fit_thermal_models(telemetry.filter(pl.col("ts") < split))
    print(f"\nhistory ending {end}:\n" + "\n".join(_check_time_to_target(telemetry, models, params, split)))


def test_observed_time_to_target_ends_where_the_room_crossed_not_where_the_thermostat_holds_it() -> None:
    """A room cooling 0.1 °C a minute from 20 to a new target of 18 °C crosses it at minute 24; the thermostat then
    heats and holds it just above the target for a while. The observed time is the crossing of the approach,
    19 minutes after the change, not the later moment a smoothed curve through the hovering readings dips."""
    t0 = utc("2026-01-05T10:00:00Z")
    approach = [round(20.0 - 0.1 * (k + 1), 2) for k in range(20)]  # minutes 5..24: 19.9 .. 18.0
    hover = [18.05, 18.1, 18.15, 18.2, 18.25, 18.2, 18.1, 18.0, 17.9, 17.85]
    temps = [20.0] * 5 + approach + hover
    heating = [False] * 25 + [True] * 5 + [False] * 5
    readings = analytics.prepare(pl.DataFrame({
        "device_id": "dev-1", "ts": [t0 + timedelta(minutes=i) for i in range(len(temps))], "temperature": temps,
        "humidity": 45.0, "target_temp": [20.0] * 5 + [18.0] * (len(temps) - 5), "heating": heating,
    }))
    observed = analytics.observed_time_to_target(readings, "dev-1", t0 + timedelta(minutes=5), 18.0)
    assert observed == pytest.approx(19 * 60, abs=1.0)


def test_predictions_take_the_daily_outdoor_cycle_into_account(models: dict[str, analytics.ThermalModel]) -> None:
    """Warming the same room by the same step takes longer in the cold of the night than in the afternoon."""
    model = next(iter(models.values()))
    peak = model.ambient_sin_c, model.ambient_cos_c  # outdoor peak where sin/cos align with these coefficients
    warm_t = math.atan2(peak[0], peak[1]) / analytics.OMEGA
    cold_t = warm_t + analytics.DAY_S / 2
    warm = model.time_to_target(18.0, 20.0, at=warm_t)
    cold = model.time_to_target(18.0, 20.0, at=cold_t)
    assert warm is not None and cold is not None
    assert cold > warm
