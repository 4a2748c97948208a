"""The Health page's alert history (when, what, delivered where, acknowledged by whom) and the operators'
acknowledge / silence form.

Acknowledgements and silences are alert events published on MQTT: the ingest worker, the only writer of the
database, stores them with the rest of the history, and ``thermolog automation`` honours silences.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import streamlit as st

from app import auth, ui
from app.roles import User
from thermolog import contract
from thermolog.alerting import events, history
from thermolog.alerting import rules as alerts
from thermolog.alerting.tracker import ALL_RULES
from thermolog.settings import get_settings

HISTORY_ROWS = 100
SILENCE_CHOICES = {"1 hour": timedelta(hours=1), "4 hours": timedelta(hours=4), "1 day": timedelta(days=1),
                   "1 week": timedelta(weeks=1)}
EVENT_WORDS = {contract.ALERT_STARTED: "started", contract.ALERT_CLEARED: "cleared",
               contract.ALERT_ACKNOWLEDGED: "acknowledged", contract.ALERT_SILENCED: "silenced"}


@st.cache_data(ttl=5, show_spinner=False)
def recent_history(path: str) -> pl.DataFrame:
    """Cached :func:`thermolog.alerting.history.recent`."""
    return history.recent(HISTORY_ROWS, path)


def _joined(values: list[str] | None) -> str:
    return ", ".join(values or [])


def history_table(path: str) -> None:
    """The newest alert events, newest first, or what produces them."""
    st.subheader("Alert history", anchor=False)
    frame = recent_history(path)
    if frame.height == 0:
        st.caption("No alert history yet. `thermolog automation` (started by `thermolog demo`) records every alert "
                   "when it starts and when it clears, and notifies the addresses in THERMOLOG_NOTIFY_URLS.")
        return
    rows = [{
        "when": ui.fmt_time(row["ts"]),
        "device": row["device_id"],
        "alert": "all alerts" if row["rule"] == ALL_RULES else row["rule"].replace("_", " "),
        "event": EVENT_WORDS.get(row["event"], row["event"]),
        "what": row["message"] or "",
        "delivered to": _joined(row["delivered"]),
        "not delivered": _joined(row["failed"]) or (row["note"] or ""),
        "by": row["actor"] or "",
        "until": ui.fmt_time(row["until"]) if row["until"] is not None else "",
    } for row in frame.iter_rows(named=True)]
    st.dataframe(pl.DataFrame(rows), hide_index=True)


def _record(device: str, rule: str, event: str, user: User, until: datetime | None = None) -> None:
    try:
        device, payload = events.new_event(device, rule, event, by=user.username, until=until)
    except contract.ContractError as exc:
        st.error(f"Not recorded: {exc.reason}")
        return
    if events.publish_once(device, payload, get_settings()):
        recent_history.clear()
        st.success(f"{EVENT_WORDS[event].capitalize()}: it shows in the history once the ingest worker has "
                   "stored it (a few seconds).", icon=":material/check_circle:")
    else:
        st.error("Not recorded: the broker could not be reached. Check that it runs and THERMOLOG_MQTT_URL.")


def action_form(found: list[alerts.Alert], user: User) -> None:
    """Acknowledge an active alert, or silence its notices (or all of a device's) for a while; operators only."""
    st.subheader("Acknowledge or silence", anchor=False)
    if not user.is_operator:
        st.caption("Operators can acknowledge alerts and silence their notices.")
        return
    if not found:
        st.caption("Nothing to acknowledge: no alert is active.")
        return
    labels = {f"{a.device_id}: {a.rule.replace('_', ' ')}": a for a in found}
    with st.form("alert_action"):
        chosen = st.selectbox("Alert", list(labels))
        span = st.selectbox("Silence notices for", list(SILENCE_CHOICES))
        whole_device = st.checkbox("Silence every alert of this device")
        acknowledge = st.form_submit_button("Acknowledge")
        silence = st.form_submit_button("Silence")
    alert = labels[chosen]
    if (acknowledge or silence) and not auth.operator_confirmed("Not recorded"):
        return
    if acknowledge:
        _record(alert.device_id, alert.rule, contract.ALERT_ACKNOWLEDGED, user)
    if silence:
        until = datetime.now(UTC) + SILENCE_CHOICES[span]
        _record(alert.device_id, ALL_RULES if whole_device else alert.rule, contract.ALERT_SILENCED, user, until)
