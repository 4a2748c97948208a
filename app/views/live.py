"""Live: one card per thermostat (refreshing by itself), the edge hosts' load, and the alerts."""

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
MAX_CARDS = 24
FILTER_KEY = "live.filter"


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
    if state.height > MAX_CARDS:  # a fleet: cards for the ones asked for, not thousands at once
        needle = st.text_input("Filter thermostats", key=FILTER_KEY, placeholder="part of a device id")
        matching = state.filter(pl.col("device_id").str.contains(needle, literal=True)) if needle else state
        st.caption(f"{matching.height:,} of {state.height:,} thermostats match"
                   + (f"; showing the first {MAX_CARDS}" if matching.height > MAX_CARDS else ""))
        state = matching.head(MAX_CARDS)
    devices = tuple(state["device_id"].to_list())
    end = ui.round_down(now, 10) + timedelta(seconds=10)
    spark = ui.guarded(lambda: ui.history(path, devices, end - timedelta(hours=1), end, SPARK_POINTS)) \
        if devices else None
    rows = state.to_dicts()
    names = ui.guarded(lambda: ui.device_names(path)) or {}
    upcoming = next_changes(path, now)
    for start in range(0, len(rows), CARDS_PER_ROW):
        for column, row in zip(st.columns(CARDS_PER_ROW), rows[start:start + CARDS_PER_ROW], strict=False):
            with column:
                mine = spark.filter(pl.col("device_id") == row["device_id"]) if spark is not None else pl.DataFrame()
                device_card(row, mine, now, names.get(row["device_id"]), upcoming.get(row["device_id"]))
    system = ui.guarded(lambda: ui.system_latest(path))
    if system is not None:
        edge_hosts(system, now)
    st.caption(f"Updated {ui.fmt_time(now, with_date=False)} · refreshes every {get_settings().live_refresh_s:.0f} s")


st.title("Live")
live()
