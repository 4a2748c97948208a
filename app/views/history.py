"""History: temperature and humidity of several thermostats over a preset or custom range, with stats.

Charts are downsampled in DuckDB (``thermolog.queries.history``): never more than ``max_chart_points`` points
per series reach the browser, whatever the range.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import streamlit as st

from app import ui
from thermolog import queries
from thermolog.settings import get_settings

PRESETS = {"1 h": timedelta(hours=1), "24 h": timedelta(hours=24), "7 d": timedelta(days=7),
           "30 d": timedelta(days=30), "1 y": timedelta(days=365)}
CUSTOM = "Custom"
DETAILED_UP_TO = 4  # charts of at most this many thermostats get target lines, heater shading and bands
RANGE_KEY = "history.range"
DEVICES_KEY = "history.devices"
FROM_KEY = "history.from"
TO_KEY = "history.to"
SOURCE_NAMES = {queries.SOURCE_RAW: "raw readings", queries.SOURCE_1M: "1-minute rollup",
                queries.SOURCE_1H: "1-hour rollup"}


def linked_choice(known: list[str]) -> tuple[list[str] | None, str | None]:
    """Thermostats and preset named in the page's address (``?devices=a,b&range=30d``), for a link that opens
    History on a chart; unknown ids and ranges are ignored. They only set the widgets' first values."""
    params = st.query_params
    wanted = [d for d in params.get("devices", "").split(",") if d]
    devices = [d for d in wanted if d in set(known)] or None
    preset = {name.replace(" ", ""): name for name in PRESETS}.get(params.get("range", "").replace(" ", ""))
    return devices, preset


def chosen_range(now: datetime, default: str = "24 h") -> tuple[datetime, datetime] | None:
    """The range the user picked, in UTC; None (with a message) when a custom range is incomplete."""
    choice = st.segmented_control("Range", [*PRESETS, CUSTOM], key=RANGE_KEY, default=default) or default
    if choice != CUSTOM:
        # Rounded so reruns within a few seconds reuse the cached query.
        end = ui.round_down(now, 10) + timedelta(seconds=10)
        return end - PRESETS[choice], end
    return ui.day_range(FROM_KEY, TO_KEY, default_days=7, now=now)


def stats_table(frame: pl.DataFrame, unit: str) -> pl.DataFrame:
    """Per-device statistics in the user's unit, ready to show."""
    def temp(column: str) -> pl.Expr:
        expr = pl.col(column) * 9 / 5 + 32 if unit == ui.FAHRENHEIT else pl.col(column)
        return expr.round(2).alias(f"{column.removeprefix('temp_')} ({unit})")

    return frame.select(
        pl.col("device_id").alias("device"),
        pl.col("n").alias("readings"),
        temp("temp_min"), temp("temp_avg"), temp("temp_max"),
        pl.col("duty_pct").round(1).alias("heating duty cycle (%)"),
        (pl.col("below_target_s") / 3600).round(2).alias("time below target (h)"),
        (pl.col("covered_s") / 3600).round(2).alias("time covered (h)"),
    )


def page() -> None:
    """Controls, charts and the statistics table."""
    st.title("History")
    path = ui.db_path()
    found = ui.devices_with_readings(path, "No readings yet. Start `thermolog simulate` (or `thermolog demo`) "
                                           "and come back.")
    if found is None:
        return
    _state, known = found
    linked_devices, linked_range = linked_choice(known)
    chosen = st.multiselect("Thermostats", known, default=linked_devices or known[:4], key=DEVICES_KEY)
    picked = chosen_range(datetime.now(UTC), linked_range or "24 h")
    if not chosen:
        st.info("Choose at least one thermostat.")
        return
    if picked is None:
        return
    start, end = picked
    max_points = get_settings().max_chart_points
    devices = tuple(chosen)
    frame = ui.guarded(lambda: ui.history(path, devices, start, end, max_points))
    if frame is None:
        return
    res = queries.choose_resolution(start, end, max_points)
    st.caption(f"{ui.fmt_time(start)} – {ui.fmt_time(end)} · from the {SOURCE_NAMES[res.source]}, "
               f"buckets of {ui.fmt_duration(res.bucket_ms / 1000)} · at most {max_points} points per series")
    if frame.height == 0:
        st.info("No readings in this range. Try a longer range.")
        return
    unit = ui.units()
    # Farther apart than two buckets (and than a device may stay silent): an outage, drawn as a gap.
    gap_ms = max(2 * res.bucket_ms, 1000 * get_settings().stale_after_s)
    # Shades and bands of many thermostats cover each other (and each is a filled area the browser draws).
    detailed = len(devices) <= DETAILED_UP_TO
    humidity = bool(frame["hum_avg"].is_not_null().any())
    st.plotly_chart(ui.history_figure(frame, unit, with_target=detailed, with_heating=detailed, with_band=detailed,
                                      gap_ms=gap_ms, with_humidity=humidity), key="history-chart")
    st.caption("Shaded: share of readings with the heater ON. Band: min–max of each bucket when downsampled. "
               "Dashed: target." if detailed else
               f"Targets, heater shading and min–max bands are drawn for up to {DETAILED_UP_TO} thermostats.")
    st.subheader("Statistics", anchor=False)
    table = ui.guarded(lambda: ui.stats(path, devices, start, end))
    if table is not None and table.height:
        ui.table(stats_table(table, unit))
        minute = " to the minute (1-minute rollup)" if (table["resolution"] == "1m").any() else ""
        st.caption(f"Duty cycle and time below target weigh each reading until the next one{minute}; "
                   f"gaps longer than {get_settings().stale_after_s:.0f} s are not counted.")


page()
