"""Shared view helpers of the dashboard: user preferences (units, time zone), cached queries, formatting, charts.

Stored times are UTC; only what reaches the screen is converted to the user's zone and unit. Charts get numeric
epoch-millisecond x values (shifted to the display zone's wall clock) because numbers travel as compact typed
arrays in the figure JSON, where ISO strings would be several times larger.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import numpy as np
import plotly.graph_objects as go
import polars as pl
import streamlit as st

from app.plain_text import plain
from thermolog import queries
from thermolog.alerting import rules as alerts
from thermolog.reader import DatabaseNotReady
from thermolog.settings import get_settings

# Session-state keys (the widgets own them; every page reads them through the helpers below).
UNITS_KEY = "thermolog.units"
TZ_KEY = "thermolog.tz"

CELSIUS, FAHRENHEIT = "°C", "°F"
UNITS = (CELSIUS, FAHRENHEIT)
COMMON_ZONES = ("UTC", "Europe/London", "Europe/Berlin", "Europe/Helsinki", "America/New_York",
                "America/Chicago", "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney")

LISTED_PER_RULE = 5
"""A rule firing for more devices than this is shown as one summary line (500 silent devices: one box)."""
IDS_IN_SUMMARY = 8

T = TypeVar("T")


SMALL_TABLE_ROWS = 25
"""Tables up to this many rows are plain Markdown; st.dataframe's grid costs the browser about 0.15 s per page."""


# --- preferences ------------------------------------------------------------------------------------------
@cache
def zone_names(default: str) -> tuple[str, ...]:
    """The time zones to offer, ``default`` and common ones first; listing them reads the whole tz database
    (30-160 ms), so once per process."""
    return tuple(dict.fromkeys((default, *COMMON_ZONES, *sorted(available_timezones()))))


def preferences_sidebar() -> None:
    """Units and display time zone, kept in session state for every page: a button in the sidebar that shows
    both and opens the two widgets. The browser builds a popover's content only when it opens, and the time-zone
    list in the open sidebar cost every page load about 0.1 s."""
    zones = zone_names(get_settings().display_timezone)
    with st.sidebar.popover(f"{units()} · {zone().key}", icon=":material/settings:",
                            help="Temperature unit and display time zone"):
        st.radio("Units", UNITS, key=UNITS_KEY, horizontal=True)
        st.selectbox("Time zone", zones, key=TZ_KEY, help="Times are stored in UTC and shown in this zone.")


def units() -> str:
    """The user's temperature unit (°C unless chosen otherwise)."""
    return st.session_state.get(UNITS_KEY, CELSIUS)


def zone() -> ZoneInfo:
    """The user's display time zone (the settings default unless chosen otherwise)."""
    name = st.session_state.get(TZ_KEY) or get_settings().display_timezone
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def to_unit(celsius: float | None, unit: str | None = None) -> float | None:
    """A temperature in °C converted to the user's unit."""
    if celsius is None:
        return None
    return celsius * 9 / 5 + 32 if (unit or units()) == FAHRENHEIT else celsius


def to_unit_array(celsius: np.ndarray, unit: str | None = None) -> np.ndarray:
    """An array of °C values in the user's unit (NaN stays NaN), as float32: half the bytes in the figure JSON
    and still 7 significant digits."""
    values = celsius * 9 / 5 + 32 if (unit or units()) == FAHRENHEIT else celsius
    return np.asarray(values, dtype=np.float32)


def fmt_temp(celsius: float | None, unit: str | None = None) -> str:
    """``21.5 °C`` / ``70.7 °F``; an em dash when unknown."""
    value = to_unit(celsius, unit)
    return "—" if value is None else f"{value:.1f} {unit or units()}"


def fmt_time(value: datetime | None, with_date: bool = True) -> str:
    """A UTC time shown in the user's zone, e.g. ``2025-07-04 02:13:36 CEST``."""
    if value is None:
        return "never"
    local = value.astimezone(zone())
    return local.strftime("%Y-%m-%d %H:%M:%S %Z" if with_date else "%H:%M:%S %Z")


def time_texts(column: str, with_date: bool = True) -> pl.Expr:
    """A UTC time column as text in the user's zone (like ``fmt_time``; null stays null).

    Polars evaluates this itself: a ``map_elements(fmt_time)`` would call ``zone()`` on a Polars worker thread,
    where Streamlit's session state is out of reach ("missing ScriptRunContext") and the chosen zone is lost.
    """
    return pl.col(column).dt.convert_time_zone(zone().key).dt.strftime(
        "%Y-%m-%d %H:%M:%S %Z" if with_date else "%H:%M:%S %Z")


def fmt_ago(value: datetime | None, now: datetime | None = None) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``."""
    if value is None:
        return "never"
    seconds = max(0.0, ((now or datetime.now(UTC)) - value).total_seconds())
    for unit_s, name in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= unit_s:
            return f"{seconds / unit_s:.0f} {name} ago"
    return f"{seconds:.0f} s ago"


def fmt_duration(seconds: float) -> str:
    """``43 s``, ``22 min``, ``5 h``, ``2 d`` (rounded to the unit)."""
    for unit_s, name in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= unit_s:
            return f"{seconds / unit_s:.3g} {name}"
    return f"{seconds:.3g} s"


def local_ms(t_ms: pl.Series) -> np.ndarray:
    """UTC epoch milliseconds shifted to the display zone's wall clock (what a plotly date axis should show)."""
    name = zone().key
    if name not in ("UTC", "Etc/UTC"):
        t_ms = (pl.from_epoch(t_ms.cast(pl.Int64), time_unit="ms").dt.replace_time_zone("UTC")
                .dt.convert_time_zone(name).dt.replace_time_zone(None).dt.epoch("ms"))
    # float64: plotly ships it as a base64 typed array; int64 has no JS typed array and would become a list.
    return t_ms.cast(pl.Float64).to_numpy()


# --- data access ------------------------------------------------------------------------------------------
def db_path() -> str:
    """The database file of the current settings (part of every cache key, so tests never share results)."""
    return str(get_settings().db_path)


def guarded(load: Callable[[], T]) -> T | None:
    """Run a load; on DatabaseNotReady show what to do next and return None."""
    try:
        return load()
    except DatabaseNotReady as exc:
        st.error(f"The database is not available: {exc}. Start `thermolog ingest` (or `thermolog demo`) "
                 "and this page fills in by itself.", icon=":material/database:")
        return None


def data_version(path: str) -> tuple[int, ...]:
    """Changes with every commit of the ingest writer (it writes the file or its write-ahead log), so reads
    cached under it are reused until the next flush and never outlive it. A ``stat``, not a query."""
    marks: list[int] = []
    for name in (path, f"{path}.wal"):
        try:
            info = os.stat(name)
        except OSError:
            marks += (0, 0)
        else:
            marks += (info.st_mtime_ns, info.st_size)
    return tuple(marks)


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def _latest_state(path: str, version: tuple[int, ...]) -> pl.DataFrame:
    """``version`` (:func:`data_version`) is only part of the cache key (a leading underscore would drop it)."""
    return queries.latest_state(path)


def latest_state(path: str) -> pl.DataFrame:
    """:func:`thermolog.queries.latest_state`, cached until the next flush."""
    return _latest_state(path, data_version(path))


@st.cache_data(ttl=30, show_spinner=False)
def device_names(path: str) -> dict[str, str]:
    """Cached :func:`thermolog.queries.device_names`."""
    return queries.device_names(path)


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def _system_latest(path: str, version: tuple[int, ...]) -> pl.DataFrame:
    return queries.system_latest(path)


def system_latest(path: str) -> pl.DataFrame:
    """:func:`thermolog.queries.system_latest`, cached until the next flush."""
    return _system_latest(path, data_version(path))


@st.cache_data(ttl=30, show_spinner=False)
def history(path: str, device_ids: tuple[str, ...], start: datetime, end: datetime, max_points: int) -> pl.DataFrame:
    """Cached :func:`thermolog.queries.history`."""
    return queries.history(device_ids, start, end, max_points, path)


def stats(path: str, device_ids: tuple[str, ...], start: datetime, end: datetime) -> pl.DataFrame:
    """:func:`thermolog.queries.stats`, cached by the window it reads (``queries.stats_window``): for a long range
    one query per minute instead of one per 10 s step of History's end (0.5 to 0.8 s each at 1,000 thermostats)."""
    return _stats(path, device_ids, *queries.stats_window(start, end))


@st.cache_data(ttl=60, show_spinner=False)
def _stats(path: str, device_ids: tuple[str, ...], start: datetime, end: datetime) -> pl.DataFrame:
    return queries.stats(device_ids, start, end, db_path=path)


@st.cache_data(ttl=5, max_entries=16, show_spinner=False)
def _current_alerts(path: str, unit: str, version: tuple[int, ...]) -> list[alerts.Alert]:
    return alerts.current_alerts(db_path=path, temp=lambda c: fmt_temp(c, unit))


def current_alerts(path: str, unit: str) -> list[alerts.Alert]:
    """:func:`thermolog.alerting.rules.current_alerts`, temperatures in ``unit``, cached until the next flush (and
    at most 5 s: silence grows without any flush)."""
    return _current_alerts(path, unit, data_version(path))


@st.cache_data(ttl=10, show_spinner=False)
def broker_reachable(host: str, port: int) -> bool:
    """Whether the app can open a TCP connection to the broker right now."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def journal_bytes(directory: Path) -> int:
    """Total size of the ingest journal's files (0 when the directory does not exist)."""
    if not directory.is_dir():
        return 0
    return sum(item.stat().st_size for item in directory.rglob("*") if item.is_file())


def round_down(moment: datetime, step_s: int) -> datetime:
    """``moment`` floored to a multiple of ``step_s`` seconds (keeps cache keys stable between reruns)."""
    return datetime.fromtimestamp(moment.timestamp() // step_s * step_s, UTC)


# --- views ------------------------------------------------------------------------------------------------
def rule_summary(rule: str) -> str:
    """What a rule means, in words, for a summary of many devices."""
    s = get_settings()
    return {
        alerts.RULE_OFFLINE: f"offline for more than {s.alert_offline_min:g} min",
        alerts.RULE_SILENT: f"silent for more than {s.alert_offline_min:g} min (or never heard from)",
        alerts.RULE_TEMP_LOW: f"below {fmt_temp(s.alert_temp_low_c)}",
        alerts.RULE_TEMP_HIGH: f"above {fmt_temp(s.alert_temp_high_c)}",
        alerts.RULE_HEATING_NO_RISE: f"heating for {s.alert_heating_no_rise_min:g} min without the temperature "
                                     "rising",
    }.get(rule, rule)


def show_alerts(found: list[alerts.Alert]) -> None:
    """One warning line per alert; a rule firing for many devices as one summary line, with every alert in a
    table underneath; or a quiet confirmation."""
    if not found:
        st.success("No alerts.", icon=":material/check_circle:")
        return
    by_rule: dict[str, list[alerts.Alert]] = {}
    for alert in found:
        by_rule.setdefault(alert.rule, []).append(alert)
    for rule, group in by_rule.items():
        if len(group) <= LISTED_PER_RULE:
            for alert in group:
                st.warning(f"**{plain(alert.device_id)}**: {plain(alert.message)}", icon=":material/warning:")
            continue
        ids = ", ".join(plain(alert.device_id) for alert in group[:IDS_IN_SUMMARY])
        more = f" and {len(group) - IDS_IN_SUMMARY:,} more" if len(group) > IDS_IN_SUMMARY else ""
        st.warning(f"**{len(group):,} thermostats** {rule_summary(rule)}: {ids}{more}", icon=":material/warning:")
    if any(len(group) > LISTED_PER_RULE for group in by_rule.values()):
        with st.expander(f"All {len(found):,} alerts", icon=":material/list:"):
            st.dataframe(pl.DataFrame({"device": [a.device_id for a in found], "rule": [a.rule for a in found],
                                       "alert": [a.message for a in found]}), hide_index=True)


def table(frame: pl.DataFrame) -> None:
    """``frame`` as a table: Markdown up to SMALL_TABLE_ROWS rows (every cell shown literally), st.dataframe
    (scrolling, sorting) beyond."""
    if frame.height > SMALL_TABLE_ROWS:
        st.dataframe(frame, hide_index=True)
    else:
        st.markdown(markdown_table(frame))


def markdown_table(frame: pl.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``frame``: numbers right-aligned, missing values as a dash."""
    def cell(value: object) -> str:
        return "—" if value is None else plain(value)

    numeric = [dtype.is_numeric() for dtype in frame.dtypes]
    lines = ["| " + " | ".join(cell(name) for name in frame.columns) + " |",
             "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def _layout(fig: go.Figure, height: int, **extra: Any) -> go.Figure:
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 30, "b": 40}, template="none",
                      hovermode="x unified", legend={"orientation": "h", "x": 0, "y": -0.12, "yanchor": "top"},
                      **extra)
    fig.update_xaxes(type="date")
    return fig


def sparkline(frame: pl.DataFrame) -> go.Figure:
    """A tiny temperature line (bucket averages) without axes."""
    fig = go.Figure(go.Scatter(x=local_ms(frame["t_ms"]), y=to_unit_array(frame["temp_avg"].to_numpy()),
                               mode="lines", line={"width": 2}, hoverinfo="y"))
    fig.update_layout(height=70, margin={"l": 0, "r": 0, "t": 0, "b": 0}, template="none", showlegend=False,
                      xaxis={"visible": False, "type": "date"}, yaxis={"visible": False})
    return fig


def with_gaps(part: pl.DataFrame, gap_ms: float) -> pl.DataFrame:
    """One device's buckets with an empty row after every silence longer than ``gap_ms`` (and than three of its
    usual spacings, so a device that reports every 10 min is not cut into dots), so lines break there instead of
    bridging an outage."""
    spacing = part["t_ms"].diff().median()
    limit = max(gap_ms, 3 * spacing) if spacing is not None else gap_ms
    breaks = part.filter(pl.col("t_ms").diff().shift(-1) > limit)
    if breaks.height == 0:
        return part
    blanks = breaks.select(pl.col("device_id"), pl.col("t_ms") + 1).with_columns(
        [pl.lit(None, dtype=part.schema[name]).alias(name) for name in part.columns if name not in ("device_id",
                                                                                                     "t_ms")])
    return pl.concat([part, blanks.select(part.columns)]).sort("t_ms")


def history_figure(frame: pl.DataFrame, unit: str, with_target: bool = False, with_heating: bool = False,
                   gap_ms: float | None = None, with_band: bool = True, with_humidity: bool = False) -> go.Figure:
    """Temperature lines per device (``temp_avg`` in ``unit``), a min–max band where buckets hold several
    readings, optional target line and heating shading (the share of readings with the heater ON, on a hidden
    0..1 axis); ``with_band=False`` leaves the bands out. ``with_humidity`` adds a humidity row below on the same
    time axis: one chart, so zooming one zooms both, and the browser builds one plot instead of two.

    Lines break where consecutive points are more than ``gap_ms`` apart.
    """
    fig = go.Figure()
    temp_axis, hum_axis = ("y", "y3") if with_humidity else ("y", None)
    to_temperature = partial(to_unit_array, unit=unit)
    for index, (device_id,) in enumerate(frame.select("device_id").unique(maintain_order=True).iter_rows()):
        part = frame.filter(pl.col("device_id") == device_id)
        if gap_ms is not None:
            part = with_gaps(part, gap_ms)
        x = local_ms(part["t_ms"])
        color = _COLORS[index % len(_COLORS)]
        band = with_band and (part["n"].max() or 0) > 1  # downsampled: show the spread of each bucket
        if with_heating:
            fig.add_trace(go.Scatter(x=x, y=part["heating"].to_numpy().astype(np.float32), yaxis="y2", mode="none",
                                     fill="tozeroy", line={"shape": "hv"}, fillcolor=_rgba(color, 0.12),
                                     hoverinfo="skip", name=f"{device_id} heating", legendgroup=device_id,
                                     showlegend=False))
        _series(fig, x, part, "temp", to_temperature, device_id, color, band, temp_axis)
        if with_target:
            target = to_temperature(part["target_avg"].to_numpy())
            fig.add_trace(go.Scatter(x=x, y=target, mode="lines", yaxis=temp_axis,
                                     line={"color": color, "width": 1, "dash": "dash", "shape": "hv"},
                                     name=f"{device_id} target", legendgroup=device_id))
        if hum_axis:
            _series(fig, x, part, "hum", _as_float32, device_id, color, band, hum_axis, " humidity")
    return _layout(fig, 620 if with_humidity else 360, **_history_axes(unit, with_heating, with_humidity))


def _as_float32(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32)


def _series(fig: go.Figure, x: np.ndarray, part: pl.DataFrame, metric: str,  # noqa: PLR0913 - one trace set
            convert: Callable[[np.ndarray], np.ndarray], device_id: str, color: str, band: bool, axis: str,
            suffix: str = "") -> None:
    """One device's ``{metric}_avg`` line on ``axis`` (values through ``convert``), after its min–max band when
    ``band``; only the temperature line (no ``suffix``) is in the legend, whose entry toggles all of the device's
    traces."""
    def values(column: str) -> np.ndarray:
        return convert(part[column].to_numpy())

    if band:
        fig.add_trace(go.Scatter(x=x, y=values(f"{metric}_max"), mode="lines", yaxis=axis, line={"width": 0},
                                 hoverinfo="skip", showlegend=False, legendgroup=device_id))
        fig.add_trace(go.Scatter(x=x, y=values(f"{metric}_min"), mode="lines", yaxis=axis, line={"width": 0},
                                 fill="tonexty", fillcolor=_rgba(color, 0.2), hoverinfo="skip",
                                 name=f"{device_id}{suffix} min–max", legendgroup=device_id, showlegend=False))
    fig.add_trace(go.Scatter(x=x, y=values(f"{metric}_avg"), mode="lines", yaxis=axis,
                             line={"color": color, "width": 2}, name=f"{device_id}{suffix}", legendgroup=device_id,
                             showlegend=not suffix))


def _history_axes(unit: str, with_heating: bool, with_humidity: bool) -> dict[str, Any]:
    """Layout of the history chart: temperature on top (and the hidden heating axis over it), humidity below."""
    temperature = f"Temperature ({unit})"
    axes: dict[str, Any] = {"title": {"text": temperature, "x": 0, "font": {"size": 14}}}
    if with_heating:
        axes["yaxis2"] = {"overlaying": "y", "range": [0, 1], "visible": False}
    if with_humidity:
        axes["title"]["text"] = f"{temperature} and humidity (%)"
        axes["yaxis"] = {"domain": [0.45, 1], "title": {"text": unit}}
        axes["yaxis3"] = {"domain": [0, 0.35], "anchor": "x", "title": {"text": "%"}}
    return axes


_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def presence(status: str | None, last_seen: datetime | None, now: datetime | None = None) -> tuple[str, bool]:
    """``(online/offline, derived)``: the device's own status, or for a device that sends none (no last will:
    the original firmware, Zigbee2MQTT without availability) online while it reports and offline once stale."""
    if status:
        return status, False
    return ("offline" if is_stale(last_seen, now) else "online"), True


def is_stale(last_seen: datetime | None, now: datetime | None = None) -> bool:
    """Silent longer than the stale-after setting (or never heard from)."""
    if last_seen is None:
        return True
    return (now or datetime.now(UTC)) - last_seen > timedelta(seconds=get_settings().stale_after_s)


# --- pickers shared by pages ------------------------------------------------------------------------------
def devices_with_readings(path: str, empty_message: str) -> tuple[pl.DataFrame, list[str]] | None:
    """Latest state and the ids of devices that have sent readings; None (with a message) when there are none."""
    state = guarded(lambda: latest_state(path))
    if state is None:
        return None
    known = state.filter(pl.col("last_seen").is_not_null())["device_id"].to_list()
    if not known:
        st.info(empty_message)
        return None
    return state, known


def day_range(from_key: str, to_key: str, default_days: int,
              now: datetime | None = None) -> tuple[datetime, datetime] | None:
    """Whole days picked in the display zone, as a UTC [start, end); None (with a message) when inverted."""
    tz = zone()
    today = (now or datetime.now(UTC)).astimezone(tz).date()
    left, right = st.columns(2)
    first = left.date_input("From (inclusive)", value=today - timedelta(days=default_days), key=from_key)
    last = right.date_input("To (inclusive)", value=today, key=to_key)
    if not isinstance(first, date) or not isinstance(last, date) or last < first:
        st.warning("Pick a start date on or before the end date.")
        return None
    start = datetime.combine(first, time.min, tz).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, tz).astimezone(UTC)
    return start, end
