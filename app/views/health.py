"""Health: ingest lag, message rates, broker connection, journal size, rejected messages and alerts."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import streamlit as st

from app import ui
from thermolog import queries
from thermolog.settings import get_settings

REJECTED_ROWS = 20


def _age(iso: str | None, now: datetime) -> str:
    if not iso:
        return "never"
    try:
        return ui.fmt_ago(datetime.fromisoformat(iso), now)
    except ValueError:
        return iso


def _bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GB"


def ingest_panel(state: dict[str, str], rates: dict[str, float], now: datetime) -> None:
    """Lag, rates, broker and journal as metrics."""
    settings = get_settings()
    endpoint = settings.mqtt_endpoint()
    lag, flushed, rate, journal = st.columns(4)
    lag.metric("Ingest lag", f"{int(state.get('journal_lag_records', '0') or 0):,} records",
               help="Messages journalled but not yet in the database.")
    flushed.metric("Last flush", _age(state.get("last_flush_at"), now))
    rate.metric("Readings / s (last minute)", f"{rates['telemetry_per_s']:.1f}")
    journal.metric("Journal on disk", _bytes(ui.journal_bytes(settings.journal_dir)),
                   help=str(settings.journal_dir))
    worker, reachable, rejected, system = st.columns(4)
    connected = state.get("mqtt_connected")
    worker.metric("Ingest ↔ broker", {"true": "connected", "false": "disconnected"}.get(connected or "", "unknown"))
    reachable.metric(f"Broker {endpoint.host}:{endpoint.port}",
                     "reachable" if ui.broker_reachable(endpoint.host, endpoint.port) else "unreachable",
                     help="Whether this app can open a connection to the broker.")
    rejected.metric("Rejected / s (last minute)", f"{rates['rejected_per_s']:.2f}")
    system.metric("Edge metrics / s (last minute)", f"{rates['system_per_s']:.2f}")
    if connected == "false":
        st.error("The ingest worker has lost the broker: check that the broker runs and THERMOLOG_MQTT_URL.")
    last_flush = state.get("last_flush_at")
    if not last_flush:
        st.warning("The ingest worker has never flushed into this database: start `thermolog ingest`.")


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
        latest.select(pl.col("received_at").map_elements(ui.fmt_time, return_dtype=pl.Utf8).alias("received"),
                      "topic", "reason", pl.col("payload_size").alias("bytes"), "source", "preview"),
        hide_index=True,
    )


@st.fragment(run_every=get_settings().live_refresh_s)
def health() -> None:
    """Everything that refreshes."""
    path = ui.db_path()
    now = datetime.now(UTC)
    loaded = ui.guarded(lambda: (queries.ingest_state(path), queries.message_rates(60.0, path)))
    if loaded is None:
        return
    state, rates = loaded
    ingest_panel(state, rates, now)
    st.subheader("Alerts", anchor=False)
    found = ui.guarded(lambda: ui.current_alerts(path, ui.units()))
    if found is not None:
        ui.show_alerts(found)
    ui.guarded(lambda: rejected_panel(path))
    with st.expander("Ingest bookkeeping (ingest_state)"):
        st.dataframe(pl.DataFrame({"key": list(state), "value": list(state.values())}), hide_index=True)
    st.caption(f"Updated {ui.fmt_time(now, with_date=False)}")


st.title("Health")
health()
