"""Insights: per-device constants of the heating (time constant, heater gain, rates, duty cycle, overshoot) from
a fitted first-order thermal model, the duty cycle per day and over the average day, and heater anomalies.

Everything comes from ``thermolog.analytics`` through the cached helpers in ``app.thermal``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import streamlit as st

from app import thermal, ui
from thermolog import analytics

RANGES = {"3 d": timedelta(days=3), "7 d": timedelta(days=7), "14 d": timedelta(days=14),
          "30 d": timedelta(days=30)}
RANGE_KEY = "insights.range"
DEVICES_KEY = "insights.devices"


NOT_ENOUGH = "not enough data"


def _with_interval(value: float | None, low: float | None, high: float | None, identified: bool | None,
                   digits: int) -> str:
    """``3.24 (3.06–3.44)``, or "not enough data" when the window does not identify the constant."""
    if value is None or not identified:
        return NOT_ENOUGH
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def fitted_column(frame: pl.DataFrame, name: str, label: str, digits: int = 2) -> pl.Expr:
    """A fitted constant as text with its interval, or "not enough data"."""
    if f"{name}_identified" not in frame.columns:
        return pl.lit(NOT_ENOUGH).alias(label)
    return pl.struct(name, f"{name}_low", f"{name}_high", f"{name}_identified").map_elements(
        lambda row: _with_interval(row[name], row[f"{name}_low"], row[f"{name}_high"], row[f"{name}_identified"],
                                   digits), return_dtype=pl.Utf8).fill_null(NOT_ENOUGH).alias(label)


def constants_table(frame: pl.DataFrame) -> pl.DataFrame:
    """The constants with readable names and rounding; fitted ones with their interval or "not enough data"."""
    def col(name: str, label: str, digits: int = 2) -> pl.Expr:
        return (pl.col(name).round(digits) if name in frame.columns else pl.lit(None)).alias(label)

    return frame.select(
        pl.col("device_id").alias("device"),
        fitted_column(frame, "tau_h", "time constant (h)"),
        fitted_column(frame, "gain_c_per_h", "heater gain (°C/h)"),
        fitted_column(frame, "heater_lift_c", "heater lift (°C)", 1),
        fitted_column(frame, "ambient_mean_c", "outdoor mean (°C)", 1),
        fitted_column(frame, "ambient_amplitude_c", "outdoor daily swing ± (°C)", 1),
        col("heating_rate_c_per_h", "heating rate (°C/h)"),
        col("cooling_rate_c_per_h", "cooling rate (°C/h)"),
        (pl.col("duty") * 100).round(1).alias("duty cycle (%)") if "duty" in frame.columns else pl.lit(None),
        col("cycles", "heating cycles", 0),
        col("short_cycles", "short cycles", 0),
        col("overshoot_mean_c", "mean overshoot (°C)"),
        col("undershoot_mean_c", "mean undershoot (°C)"),
        col("rmse_c", "model fit RMS error (°C)", 3),
    )


def page() -> None:
    """Device and range pickers, the constants table, duty-cycle charts and anomalies."""
    st.title("Insights")
    path = ui.db_path()
    found = ui.devices_with_readings(path, "No readings yet. Start `thermolog simulate` (or `thermolog demo`) "
                                           "and come back.")
    if found is None:
        return
    state, known = found
    chosen = st.multiselect("Thermostats", known, default=known[:6], key=DEVICES_KEY)
    choice = st.segmented_control("Range", list(RANGES), key=RANGE_KEY, default="7 d") or "7 d"
    if not chosen:
        st.info("Choose at least one thermostat.")
        return
    newest = state.filter(pl.col("device_id").is_in(chosen))["last_seen"].max()
    start, end = thermal.fit_window(newest or datetime.now(UTC), RANGES[choice])  # type: ignore[arg-type]
    with st.spinner("Fitting the thermal models…"):
        found = ui.guarded(lambda: thermal.insights(path, tuple(sorted(chosen)), start, end, ui.zone().key))
    if found is None:
        return
    st.caption(f"{found.readings:,} readings from {ui.fmt_time(start)} to {ui.fmt_time(end)}")
    if found.skipped:
        st.info(f"Not enough data to fit a model for {', '.join(found.skipped)}: a few hours with the heater "
                "switching on and off are needed.", icon=":material/hourglass_empty:")

    st.subheader("Constants", anchor=False)
    thermal.show_constants(constants_table(found.constants))
    st.caption("Model: dT/dt = (T_out(t) − T) / τ + g·heating, with a daily outdoor cycle, fitted by least squares. "
               "Heater lift g·τ: how far above outdoors the heater alone can hold the room. In brackets: the range "
               "the fitted value is sure to within (it held the true value in over 90 % of simulated rooms); "
               "\"not enough data\" where the range does not pin the value down — choose a longer range, at least "
               "a day with the heater switching. Overshoot and undershoot are measured against the target on "
               "settled cycles.")

    st.subheader("Duty cycle", anchor=False)
    if found.duty_daily.height:
        st.plotly_chart(analytics.fig_duty_overview(found.duty_daily, found.profile), key="insights-duty")
        st.caption(f"Share of time the heater was on, per day and by hour of day ({ui.zone().key}).")
    else:
        st.caption("No duty cycle in this range yet: choose a longer range, or come back once the thermostats have "
                   "reported for a while.")

    st.subheader("Anomalies", anchor=False)
    if found.anomalies.height:
        st.warning(f"{found.anomalies.height} period(s) with the heater on and the room not warming: a failed "
                   "heater, an open window, or a target beyond what the heater can hold.", icon=":material/warning:")
        st.dataframe(found.anomalies.with_columns(
            ui.time_texts("start"),
            ui.time_texts("end"),
            (pl.col("duration_s") / 60).round(0).alias("minutes"),
            pl.col("rate_c_per_h").round(2),
        ).drop("duration_s"), hide_index=True)
    else:
        st.caption("No period with the heater on and the room not warming.")
    if found.short_cycling.height:
        st.warning(f"Short-cycling in {found.short_cycling.height} hour(s): more than "
                   f"{analytics.MAX_CYCLES_PER_HOUR} cycles an hour or cycles under "
                   f"{analytics.SHORT_CYCLE_S / 60:.0f} minutes.", icon=":material/autorenew:")


page()
