"""Live: one card per thermostat, or a fleet table (search, sort by status or deviation from target) once there
are more than a screenful; the edge hosts' load, and the alerts. Everything refreshes by itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import streamlit as st

from app import ui
from app.plain_text import plain
from app.schedules import next_change_text, next_changes
from thermolog.contract import STATUS_OFFLINE, STATUS_ONLINE
from thermolog.schedule import ChangePoint
from thermolog.settings import get_settings

CARDS_PER_ROW = 3
SPARK_POINTS = 120
CARDS_UP_TO = 12  # fleets up to this size get a card each (with a sparkline); larger ones one table
FILTER_KEY = "live.filter"
SORT_KEY = "live.sort"
SORT_STATUS, SORT_DEVIATION, SORT_ID = "status", "deviation from target", "device id"
# Sorting by status puts what needs attention first.
STATUS_ORDER = {STATUS_OFFLINE: 0, "stale": 1, "unknown": 2, STATUS_ONLINE: 3}


def device_card(row: dict, spark: pl.DataFrame, now: datetime, name: str | None = None,
                upcoming: ChangePoint | None = None) -> None:
    """One thermostat: readings, target, heater, online/offline, last seen, stale warning, last hour."""
    with st.container(border=True):
        status, derived = ui.presence(row["status"], row["last_seen"], now)
        badge = {STATUS_ONLINE: ":green-badge[online]", STATUS_OFFLINE: ":red-badge[offline]"}.get(
            status, ":gray-badge[status unknown]")
        if derived:  # no last will: staleness decides, and the badge says so
            badge = badge.replace("]", " (from readings)]")
        heating = row["heating"]
        heater = ":orange-badge[heating ON]" if heating else (":blue-badge[heating OFF]" if heating is not None
                                                               else "")
        st.subheader(row["device_id"], anchor=False)
        if name:  # a Zigbee2MQTT friendly name: the id is derived from it, the name is what the owner knows
            st.caption(plain(name))
        st.markdown(f"{badge} {heater}")
        # Two metrics per row: three side by side get cut off in a card a third of the page wide.
        temp, target = st.columns(2)
        temp.metric("Temperature", ui.fmt_temp(row["temperature"]))
        target.metric("Target", ui.fmt_temp(row["target_temp"]))
        hum, _ = st.columns(2)
        hum.metric("Humidity", "—" if row["humidity"] is None else f"{row['humidity']:.0f} %")
        st.caption(f"last seen {ui.fmt_time(row['last_seen'])} ({ui.fmt_ago(row['last_seen'], now)})")
        if row.get("mode") == "off":
            st.markdown(":gray-badge[mode off: heating disabled]")
        if upcoming is not None:
            st.caption(next_change_text(upcoming))
        if ui.is_stale(row["last_seen"], now):
            st.warning(f"No reading for more than {get_settings().stale_after_s:.0f} s: values may be out of date.",
                       icon=":material/schedule:")
        if spark.height > 1:
            st.plotly_chart(ui.sparkline(spark), config={"displayModeBar": False, "staticPlot": True},
                            key=f"spark-{row['device_id']}")


def edge_hosts(system: pl.DataFrame, now: datetime) -> None:
    """CPU, memory and disk of each edge host."""
    st.subheader("Edge hosts", anchor=False)
    if system.height == 0:
        st.caption("No edge host has reported yet. Hosts appear here once the IoT Edge `system_reader` module "
                   "publishes `edge/{host}/system` (see docs/azure.md); the thermostats work without one.")
        return
    for row in system.iter_rows(named=True):
        with st.container(border=True):
            st.markdown(f"**{plain(row['host'])}** · {ui.fmt_ago(row['ts'], now)}")
            cpu, mem, disk = st.columns(3)
            cpu.metric("CPU", f"{row['cpu_usage']:.1f} %" if row["cpu_usage"] is not None else "—")
            mem.metric("Memory", f"{row['memory_usage']:.1f} %" if row["memory_usage"] is not None else "—")
            disk.metric("Disk", f"{row['disk_usage']:.1f} %" if row["disk_usage"] is not None else "—")


def fleet_frame(state: pl.DataFrame, now: datetime, unit: str) -> pl.DataFrame:
    """One row per thermostat for the fleet table: status (``stale`` when silent too long), readings in
    ``unit``, deviation from target and how long ago it was last heard from."""
    stale_us = int(get_settings().stale_after_s * 1_000_000)
    factor, offset = (9 / 5, 32.0) if unit == ui.FAHRENHEIT else (1.0, 0.0)
    silent = pl.lit(now) - pl.col("last_seen")
    return state.select(
        pl.col("device_id").alias("device"),
        pl.when(pl.col("status") == STATUS_OFFLINE).then(pl.lit(STATUS_OFFLINE))
        .when(pl.col("last_seen").is_null() | (silent.dt.total_microseconds() > stale_us)).then(pl.lit("stale"))
        .otherwise(pl.col("status").fill_null("unknown")).alias("status"),
        (pl.col("temperature") * factor + offset).round(1).alias(f"temperature ({unit})"),
        (pl.col("target_temp") * factor + offset).round(1).alias(f"target ({unit})"),
        ((pl.col("temperature") - pl.col("target_temp")) * factor).round(1).alias(f"deviation ({unit})"),
        pl.col("humidity").round(0).alias("humidity (%)"),
        pl.when(pl.col("heating")).then(pl.lit("ON")).when(pl.col("heating").not_()).then(pl.lit("OFF"))
        .alias("heater"),
        (silent.dt.total_seconds()).alias("silent (s)"),
    )


def fleet_table(state: pl.DataFrame, now: datetime) -> None:
    """Summary figures, then every thermostat in one table that can be searched and sorted."""
    unit = ui.units()
    table = fleet_frame(state, now, unit)
    counts = dict(table.group_by("status").len().iter_rows())
    total, online, offline, stale, heating = st.columns(5)
    total.metric("Thermostats", f"{table.height:,}")
    online.metric("Online", f"{counts.get(STATUS_ONLINE, 0):,}")
    offline.metric("Offline", f"{counts.get(STATUS_OFFLINE, 0):,}")
    stale.metric("Silent", f"{counts.get('stale', 0):,}",
                 help=f"No reading for more than {get_settings().stale_after_s:.0f} s")
    heating.metric("Heating", f"{table.filter(pl.col('heater') == 'ON').height:,}")
    search, order = st.columns([2, 1])
    needle = search.text_input("Search thermostats", key=FILTER_KEY, placeholder="part of a device id")
    sort = order.selectbox("Sort by", (SORT_STATUS, SORT_DEVIATION, SORT_ID), key=SORT_KEY)
    if needle:
        table = table.filter(pl.col("device").str.contains(needle, literal=True))
    deviation = f"deviation ({unit})"
    if sort == SORT_STATUS:
        rank = pl.col("status").replace_strict(STATUS_ORDER, default=len(STATUS_ORDER))
        table = table.sort(rank, pl.col(deviation).abs(), "device", descending=[False, True, False],
                           nulls_last=True)
    elif sort == SORT_DEVIATION:
        table = table.sort(pl.col(deviation).abs(), "device", descending=[True, False], nulls_last=True)
    else:
        table = table.sort("device")
    st.caption(f"{table.height:,} of {state.height:,} thermostats" + (" match" if needle else ""))
    st.dataframe(table, hide_index=True, key="live.fleet", column_config={
        "silent (s)": st.column_config.NumberColumn("silent (s)", format="%.0f",
                                                    help="seconds since the last reading"),
    })


def device_cards(state: pl.DataFrame, path: str, now: datetime) -> None:
    """A card per thermostat, three to a row, each with its last hour as a sparkline."""
    devices = tuple(state["device_id"].to_list())
    end = ui.round_down(now, 10) + timedelta(seconds=10)
    spark = ui.guarded(lambda: ui.history(path, devices, end - timedelta(hours=1), end, SPARK_POINTS))
    rows = state.to_dicts()
    names = ui.guarded(lambda: ui.device_names(path)) or {}
    upcoming = next_changes(path, now)
    for start in range(0, len(rows), CARDS_PER_ROW):
        for column, row in zip(st.columns(CARDS_PER_ROW), rows[start:start + CARDS_PER_ROW], strict=False):
            with column:
                mine = spark.filter(pl.col("device_id") == row["device_id"]) if spark is not None else pl.DataFrame()
                device_card(row, mine, now, names.get(row["device_id"]), upcoming.get(row["device_id"]))


@st.fragment(run_every=get_settings().live_refresh_s)
def live() -> None:
    """Everything that refreshes: cards, edge hosts and alerts."""
    path = ui.db_path()
    now = datetime.now(UTC)
    state = ui.guarded(lambda: ui.latest_state(path))
    if state is None:
        return
    if state.height == 0:
        st.info("No thermostats yet. Start `thermolog simulate` (or `thermolog demo`), or connect a device, "
                "and they appear here.")
        return
    found = ui.guarded(lambda: ui.current_alerts(path, ui.units()))
    if found:
        with st.expander(f"{len(found)} alert(s)", expanded=True, icon=":material/warning:"):
            ui.show_alerts(found)
    if state.height > CARDS_UP_TO:
        fleet_table(state, now)
    else:
        device_cards(state, path, now)
    system = ui.guarded(lambda: ui.system_latest(path))
    if system is not None:
        edge_hosts(system, now)
    st.caption(f"Updated {ui.fmt_time(now, with_date=False)} · refreshes every {get_settings().live_refresh_s:.0f} s")


st.title("Live")
live()
