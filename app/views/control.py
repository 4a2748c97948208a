"""Control (operators only): send a new target temperature to a thermostat and see what it answered.

The target is validated with the same rules the devices apply (``thermolog.commands.validate_setpoint``) before
anything is sent; the command carries the signed-in user's name, and the audit below lists every command the
ingest worker saw on the bus with its outcome.
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from app import auth, plain_text, thermal, ui
from app.plain_text import plain
from app.roles import User
from thermolog import commands, queries
from thermolog.settings import get_settings

DEVICE_KEY = "control.device"
TARGET_KEY = "control.target"
RESULT_KEY = "control.result"
AUDIT_ROWS = 50
KIND_NOTES = {
    "original": "original firmware: whole degrees only; confirmed by its next reading",
    "zigbee2mqtt": "Zigbee2MQTT device: confirmed by the state it republishes",
}


def setpoint_help() -> str:
    """The accepted range and step, in words."""
    s = get_settings()
    return f"{s.setpoint_min_c:g}–{s.setpoint_max_c:g} °C in steps of {s.setpoint_step_c:g} °C"


def device_panel(row: dict) -> None:
    """The chosen device's current target, temperature and heater beside the input."""
    target, temp, heating, status = st.columns(4)
    target.metric("Current target", ui.fmt_temp(row["target_temp"]))
    temp.metric("Temperature", ui.fmt_temp(row["temperature"]))
    heating.metric("Heating", "—" if row["heating"] is None else ("ON" if row["heating"] else "OFF"))
    shown, derived = ui.presence(row["status"], row["last_seen"])
    status.metric("Status", f"{shown} (from readings)" if derived else shown)
    st.caption(f"last seen {ui.fmt_time(row['last_seen'])}")
    kind = ui.guarded(lambda: queries.device_kind(row["device_id"], ui.db_path()))
    if kind is not None and kind[0] != "native":
        st.caption(KIND_NOTES.get(kind[0], f"a {kind[0]} device (docs/devices.md)")
                   + (f" · {plain(kind[1])}" if kind[1] else ""))


def show_result(result: commands.CommandResult) -> None:
    """Success, the device's refusal with its reason, or the timeout."""
    if result.outcome == commands.OUTCOME_OK:
        st.success(f"{plain(result.device_id)} accepted the new target {result.describe()}.",
                   icon=":material/check_circle:")
    elif result.outcome == commands.OUTCOME_REFUSED:
        st.error(f"{plain(result.device_id)} refused {result.describe()}: {plain(result.error)}",
                 icon=":material/block:")
    else:
        st.warning(f"Timeout: {plain(result.error)}. Check that the thermostat is online (Live page) and try again.",
                   icon=":material/schedule:")


def send_form(user: User, state: pl.DataFrame) -> None:
    """Device picker, target input with validation, Send."""
    devices = state["device_id"].to_list()
    device = st.selectbox("Thermostat", devices, key=DEVICE_KEY)
    row = state.filter(pl.col("device_id") == device).row(0, named=True)
    device_panel(row)
    if ui.units() == ui.FAHRENHEIT:
        st.caption("Setpoints are sent in °C, the unit the thermostats work in.")
    current = row["target_temp"]
    text = st.text_input(f"New target (°C, {setpoint_help()})", key=TARGET_KEY,
                         placeholder="" if current is None else f"{current:g}")
    target: float | None = None
    if text.strip():
        try:
            target = commands.validate_setpoint(text)
        except commands.InvalidCommand as exc:
            st.error(f"{plain(exc)}. Enter a number in {setpoint_help()}.", icon=":material/error:")
    if target is not None:  # how long the room should take, from its fitted thermal model
        estimate = thermal.time_to_target_caption(ui.db_path(), device, row["temperature"], target)
        if estimate:
            st.caption(estimate)
    if st.button("Send", type="primary", disabled=target is None, key="control.send"):
        confirmed = auth.confirm_roles()  # roles as the identity provider sees them now, not at sign-in
        if confirmed is None or not confirmed.is_operator:
            if confirmed is not None:
                st.error("Not sent: your operator role has been removed. Reload the page.", icon=":material/lock:")
            return
        with st.spinner(f"Waiting for {device} to answer (up to {get_settings().command_timeout_s:g} s)…"):
            try:
                st.session_state[RESULT_KEY] = commands.send_command(device, target, issued_by=user.username)
            except commands.InvalidCommand as exc:
                st.error(f"Not sent: {plain(exc)}.")
            except OSError as exc:  # the broker is unreachable or refused us; the message says what to check
                st.error(f"Not sent: {plain(exc)}", icon=":material/cloud_off:")
    result = st.session_state.get(RESULT_KEY)
    if result is not None and result.device_id == device:
        show_result(result)


def audit() -> None:
    """Recent commands: who, when, what, outcome."""
    st.subheader("Recent commands", anchor=False)
    frame = ui.guarded(lambda: queries.recent_commands(AUDIT_ROWS, db_path=ui.db_path()))
    if frame is None:
        return
    if frame.height == 0:
        st.caption("No commands recorded yet. Operators send a new target above; every command, who sent it and "
                   "what the thermostat answered appears here.")
        return
    shown = frame.select(
        ui.time_texts("sent_at").alias("when"),
        pl.col("issued_by").alias("who"),
        pl.col("device_id").alias("device"),
        pl.col("target_temp").alias("target (°C)"),
        "mode",
        "outcome",
        pl.col("error").str.slice(0, plain_text.MAX_CHARS).alias("reason"),
    )
    st.dataframe(shown, hide_index=True)


def page() -> None:
    """Operators get the form; everyone sees the audit."""
    st.title("Control")
    user = auth.current_user() or auth.require_login()
    if not user.is_operator:
        st.info(f"Only operators can change setpoints. You are signed in as {plain(user.name)} without the operator "
                f"role ({get_settings().entra_role_operator}); ask an administrator if you need it.",
                icon=":material/lock:")
    else:
        state = ui.guarded(lambda: ui.latest_state(ui.db_path()))
        if state is not None and state.height == 0:
            st.info("No thermostats known yet. Start `thermolog simulate` (or `thermolog demo`).")
        elif state is not None:
            send_form(user, state)
    audit()


page()
