"""Cached heating analytics for the pages: fitted thermal models and the Insights tables (``thermolog.analytics``).

Fitting takes about a second per device, so results are cached for minutes: the constants of a room change slowly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import streamlit as st

from app import ui
from thermolog import analytics

FIT_DAYS = 7.0
"""Days of history behind the time-to-target estimate on the Control page."""
FIT_INTERVAL_S = 30.0
"""Readings closer together than this are thinned before fitting (bounds the work for fast-reporting devices)."""
WINDOW_STEP_S = 300
"""Insights' window moves in 5-minute steps, the cached result's lifetime (``insights``): every new window is a new
fit, about a second per thermostat, which a window moving every minute made some load in every minute wait for."""
COLUMNS_UP_TO = 8
"""Up to this many thermostats the constants are a Markdown table with a column per thermostat (a fraction of the
browser work of a grid, and 14 constants are too many columns); more get a grid with a row each."""


def show_constants(table: pl.DataFrame) -> None:
    """The constants table (a row per thermostat, ``device`` first): a column per thermostat for a few, a grid
    for many."""
    if table.height > COLUMNS_UP_TO:
        st.dataframe(table, hide_index=True)
        return
    texts = table.select(pl.all().cast(pl.Utf8))
    ui.table(texts.transpose(include_header=True, header_name="constant", column_names="device"))


@dataclass(frozen=True)
class Insights:
    """Everything the Insights page shows for a set of devices and a range."""

    constants: pl.DataFrame
    duty_daily: pl.DataFrame
    duty_hourly: pl.DataFrame
    profile: pl.DataFrame
    anomalies: pl.DataFrame
    short_cycling: pl.DataFrame
    readings: int
    skipped: tuple[str, ...]


@st.cache_data(ttl=600, show_spinner=False)
def fit(path: str, device_id: str) -> analytics.UncertainFit | None:
    """The device's thermal model fitted on its last ``FIT_DAYS``, with intervals (None without enough data)."""
    return analytics.fit_with_uncertainty_for_device(device_id, days=FIT_DAYS, db_path=path,
                                                     min_interval_s=FIT_INTERVAL_S)


NOT_ENOUGH_FOR_TIME_TO_TARGET = ("Not enough data yet to say how long reaching {target:g} °C takes: the estimate "
                                 "needs about a day of readings with the heater switching on and off.")


def time_to_target_caption(path: str, device_id: str, current_c: float | None, target_c: float) -> str | None:
    """``about N minutes to reach X °C`` for the Control page when the fit identifies the constants it rests on
    (the Insights rule), "not enough data" when it does not; None without readings."""
    fitted = fit(path, device_id)
    if current_c is None:
        return None
    if fitted is None or not analytics.identifies_time_to_target(fitted):
        return NOT_ENOUGH_FOR_TIME_TO_TARGET.format(target=target_c)
    return analytics.describe_time_to_target(fitted.model, current_c, target_c, at=datetime.now().astimezone())


def fit_window(newest: datetime, span: timedelta) -> tuple[datetime, datetime]:
    """[start, end) of ``span`` holding the reading at ``newest``, its end on a ``WINDOW_STEP_S`` boundary."""
    end = ui.round_down(newest, WINDOW_STEP_S) + timedelta(seconds=WINDOW_STEP_S)
    return end - span, end


@st.cache_data(ttl=WINDOW_STEP_S, show_spinner=False)
def insights(path: str, device_ids: tuple[str, ...], start: datetime, end: datetime, tz: str) -> Insights:
    """Fit and summarise the devices over [start, end); devices without enough data are listed in ``skipped``."""
    readings = analytics.load_telemetry(device_ids, start, end, path, FIT_INTERVAL_S)
    fits = {}
    for device_id in sorted(readings["device_id"].unique().to_list()):
        try:
            fits[device_id] = analytics.fit_with_uncertainty(readings, device_id)
        except analytics.InsufficientData:
            continue
    models = {device_id: fitted.model for device_id, fitted in fits.items()}
    constants = analytics.models_table(models).join(analytics.uncertainty_table(fits), on="device_id", how="left")
    if readings.height:
        constants = (
            constants.join(analytics.rates(readings), on="device_id", how="full", coalesce=True)
            .join(analytics.overshoot_summary(readings), on="device_id", how="left")
            .sort("device_id")
        )
    return Insights(
        constants=constants,
        duty_daily=analytics.duty_cycle(readings, "1d"),
        duty_hourly=analytics.duty_cycle(readings, "1h"),
        profile=analytics.daily_profile(readings, tz),
        anomalies=analytics.heater_anomalies(readings),
        short_cycling=analytics.short_cycling(readings),
        readings=readings.height,
        skipped=tuple(sorted(set(device_ids) - set(models))),
    )
