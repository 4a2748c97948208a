"""Health: ingest lag, message rates, broker connection, journal size, rejected messages, alerts and their history
(acknowledge or silence them here).

The ingest figures come from ``ingest.status.collect_status``, the same report ``thermolog status`` prints.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import streamlit as st

from app import alert_panel, auth, ui
from app.plain_text import MAX_CHARS
from ingest.status import IngestStatus, collect_status
from thermolog import queries
from thermolog.reader import DatabaseNotReady
from thermolog.settings import get_settings
from thermolog.units import format_bytes

REJECTED_ROWS = 20


def _connection(status: IngestStatus) -> str:
    if status.mqtt_connected is None:
        return "unknown"
    word = "connected" if status.mqtt_connected else "disconnected"
    return word if status.worker_running else f"last known {word}"


def ingest_panel(status: IngestStatus) -> None:
    """Worker, lag, rates, broker and journal as metrics, with what to do when something is off."""
    settings = get_settings()
    endpoint = settings.mqtt_endpoint()
    worker, lag, flushed, journal = st.columns(4)
    worker.metric("Ingest worker", "running" if status.worker_running else "not running",
                  help="Running: it flushed or sent its heartbeat within the last 90 s.")
    lag.metric("Ingest lag", f"{status.journal_lag_records:,} records",
               help=f"Journalled but not yet in the database ({format_bytes(status.journal_lag_bytes)}).")
    flushed.metric("Last flush", ui.fmt_ago(status.last_flush_at, status.checked_at))
    journal.metric("Journal on disk", format_bytes(ui.journal_bytes(settings.journal_dir)),
                   help=f"{status.journal_dir}, {status.journal_segments} segment(s) not yet flushed")
    connection, reachable, rate, rejected = st.columns(4)
    connection.metric("Ingest ↔ broker", _connection(status), help=status.mqtt_broker)
    reachable.metric(f"Broker {endpoint.host}:{endpoint.port}",
                     "reachable" if ui.broker_reachable(endpoint.host, endpoint.port) else "unreachable",
                     help="Whether this app can open a connection to the broker.")
    rate.metric("Readings / s", f"{status.telemetry_rate_1m:.1f}",
                help=f"last minute; {status.telemetry_rate_5m:.1f} over the last 5 minutes")
    rejected.metric("Rejected / s", f"{status.rejected_rate_1m:.2f}", help="last minute")
    st.caption(f"{status.messages_total:,} messages stored or rejected in total · {status.rejected_total:,} "
               f"rejected · {status.duplicates_total:,} repeated readings dropped")
    if status.mqtt_sessions_lost:
        st.error(f"The broker lost the ingest worker's session {status.mqtt_sessions_lost:,} time(s), last "
                 f"{ui.fmt_ago(status.mqtt_session_lost_at, status.checked_at)}: messages queued for it while it "
                 "was away are gone. Another client may be using its client id (give ingest the unguessable "
                 "THERMOLOG_INGEST_CLIENT_ID from `broker init`), or the broker restarted without persistence.")
    if status.last_flush_at is None:
        st.warning("The ingest worker has never flushed into this database: start `thermolog ingest`.")
    elif not status.worker_running:
        st.warning(f"The ingest worker last flushed {ui.fmt_ago(status.last_flush_at, status.checked_at)}: "
                   "it is probably not running. Start `thermolog ingest`; the journal keeps what arrived.")
    elif status.journal_write_failed:
        st.error(f"The ingest worker's journal disk is full ({status.journal_dir}): receiving is paused, nothing is "
                 "lost (the broker keeps the messages). Free space there and receiving resumes by itself.")
    elif status.mqtt_connected is False:
        st.error("The ingest worker has lost the broker and keeps reconnecting: check that the broker runs and "
                 "THERMOLOG_MQTT_URL.")


def lake_panel() -> None:
    """The lake's files, size and snapshots (``thermolog lake maintain`` keeps them in check)."""
    from thermolog import lake
    from thermolog.lake_maintain import health as lake_health

    with lake.read_connection() as con:
        figures = lake_health(con)
    st.subheader("Lake", anchor=False)
    files, size, snapshots, parts = st.columns(4)
    files.metric("Data files", f"{figures.files:,}", help=f"{figures.delete_files:,} delete files")
    size.metric("Lake size", format_bytes(figures.bytes))
    snapshots.metric("Snapshots", f"{figures.snapshots:,}")
    parts.metric("Rollup rows", f"{figures.rollup_parts:,}", help="partial aggregates, merged by maintenance")
    if figures.files > 1000 or figures.snapshots > 10000:
        st.warning("Many small files or snapshots: run `thermolog lake maintain` (compaction, snapshot expiry).")


def rejected_panel(path: str) -> None:
    """Counts by reason and the newest rejected payloads."""
    st.subheader("Rejected messages", anchor=False)
    counts = queries.rejected_counts(path)
    if counts.height == 0:
        st.caption("Nothing rejected.")
        return
    st.dataframe(counts, hide_index=True)
    latest = queries.recent_rejected(REJECTED_ROWS, db_path=path)
    st.dataframe(
        latest.select(ui.time_texts("received_at").alias("received"),
                      *(pl.col(name).str.slice(0, MAX_CHARS) for name in ("topic", "reason")),
                      pl.col("payload_size").alias("bytes"), "source", "preview"),
        hide_index=True,
    )


@st.fragment(run_every=get_settings().live_refresh_s)
def health() -> None:
    """Everything that refreshes."""
    path = ui.db_path()
    status = collect_status(get_settings())
    if not status.database_ready:
        st.error(f"The database is not available: {status.problem}. Start `thermolog ingest` (or "
                 "`thermolog demo`) and this page fills in by itself.", icon=":material/database:")
        if status.journal_lag_records:
            st.info(f"{status.journal_lag_records:,} records wait in the journal ({status.journal_dir}).")
        return
    ingest_panel(status)
    if get_settings().lake_catalog:
        ui.guarded(lake_panel)
    st.subheader("Alerts", anchor=False)
    found = ui.guarded(lambda: ui.current_alerts(path, ui.units()))
    if found is not None:
        ui.show_alerts(found)
    ui.guarded(lambda: alert_panel.history_table(path))
    ui.guarded(lambda: rejected_panel(path))
    st.caption(f"Updated {ui.fmt_time(datetime.now(UTC), with_date=False)}")


def actions() -> None:
    """The acknowledge / silence form, outside the refreshing part so a half-filled form is not reset."""
    user = auth.current_user() or auth.require_login()
    try:
        found = ui.current_alerts(ui.db_path(), ui.units())
    except DatabaseNotReady:
        return  # the part above already says what to start
    alert_panel.action_form(found, user)


st.title("Health")
health()
actions()
