"""Control (operators only): send a new target temperature or mode to one or several thermostats and see what
each answered.

The target is validated with the same rules the devices apply (``thermolog.commands.validate_setpoint``) before
anything is sent; −/+ step it by the configured setpoint step. Each command carries the signed-in user's name, a
device whose kind takes no modes is refused with the reason, and the audit below lists every command the ingest
worker saw on the bus with its outcome.
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from app import auth, plain_text, thermal, ui
from app.plain_text import plain
from app.roles import User
from app.schedules import next_change_text, next_changes
from thermolog import commands, contract, queries
from thermolog.settings import get_settings

DEVICE_KEY = "control.device"
ALSO_KEY = "control.also"
TARGET_KEY = "control.target"
MODE_KEY = "control.mode"
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
    st.caption(f"last seen {ui.fmt_time(row['last_seen'])} · mode {plain(row['mode'] or 'not reported')} · "
               + next_change_text(next_changes(ui.db_path()).get(row["device_id"])))
    kind = ui.guarded(lambda: queries.device_kind(row["device_id"], ui.db_path()))
    if kind is not None and kind[0] != "native":
        st.caption(KIND_NOTES.get(kind[0], f"a {kind[0]} device (docs/devices.md)")
                   + (f" · {plain(kind[1])}" if kind[1] else ""))


def show_result(result: commands.CommandResult) -> None:
    """Success, the device's refusal with its reason, or the timeout."""
    if result.outcome == commands.OUTCOME_OK:
        st.success(f"{plain(result.device_id)} accepted the new target {result.target_temp:g} °C."
                   if result.mode is None else f"{plain(result.device_id)} accepted {result.describe()}.",
                   icon=":material/check_circle:")
    elif result.outcome == commands.OUTCOME_REFUSED and not result.request_id:
        st.error(f"Not sent to {plain(result.device_id)} ({result.describe()}): {plain(result.error)}",
                 icon=":material/block:")
    elif result.outcome == commands.OUTCOME_REFUSED:
        st.error(f"{plain(result.device_id)} refused {result.describe()}: {plain(result.error)}",
                 icon=":material/block:")
    else:
        st.warning(f"Timeout: {plain(result.error)}. Check that the thermostat is online (Live page) and try again.",
                   icon=":material/schedule:")


def step_target(delta: int) -> None:
    """−/+: move the typed (else the current) target by one setpoint step, within the allowed range."""
    s = get_settings()
    try:
        value = float(str(st.session_state.get(TARGET_KEY) or "").replace(",", "."))
    except ValueError:
        value = st.session_state.get("control.current") or s.setpoint_min_c
    value = round(round(value / s.setpoint_step_c) * s.setpoint_step_c + delta * s.setpoint_step_c, 3)
    st.session_state[TARGET_KEY] = f"{min(max(value, s.setpoint_min_c), s.setpoint_max_c):g}"


def send_all(devices: list[str], user: User, target: float | None = None, mode: str | None = None) -> None:
    """Send to each device in turn and keep every outcome (a refusal before sending counts as one)."""
    if not auth.operator_confirmed():
        return
    results: list[commands.CommandResult] = []
    for device in devices:
        try:
            results.append(commands.send_command(device, target, issued_by=user.username, mode=mode))
        except commands.InvalidCommand as exc:  # refused before sending: no request id
            results.append(commands.CommandResult("", device, target, commands.OUTCOME_REFUSED, str(exc), mode=mode))
        except OSError as exc:  # the broker is unreachable or refused us; the message says what to check
            results.append(commands.CommandResult("", device, target, commands.OUTCOME_TIMEOUT,
                                                  f"not sent: {exc}", mode=mode))
    st.session_state[RESULT_KEY] = results


def send_form(user: User, state: pl.DataFrame) -> None:
    """Device picker (plus any others to send the same to), target input with −/+ and validation, mode, Send."""
    devices = state["device_id"].to_list()
    device = st.selectbox("Thermostat", devices, key=DEVICE_KEY)
    row = state.filter(pl.col("device_id") == device).row(0, named=True)
    device_panel(row)
    others = st.multiselect("Also send to", [d for d in devices if d != device], key=ALSO_KEY,
                            placeholder="more thermostats (optional)")
    chosen = [device, *others]
    if ui.units() == ui.FAHRENHEIT:
        st.caption("Setpoints are sent in °C, the unit the thermostats work in.")
    current = row["target_temp"]
    st.session_state["control.current"] = current
    minus, field, plus, _ = st.columns([1, 6, 1, 4], vertical_alignment="bottom")
    step = get_settings().setpoint_step_c
    minus.button("−", key="control.minus", on_click=step_target, args=(-1,), help=f"{step:g} °C lower")
    plus.button("+", key="control.plus", on_click=step_target, args=(1,), help=f"{step:g} °C higher")
    text = field.text_input(f"New target (°C, {setpoint_help()})", key=TARGET_KEY,
                            placeholder="" if current is None else f"{current:g}")
    target: float | None = None
    if text.strip():
        try:
            target = commands.validate_setpoint(text)
        except commands.InvalidCommand as exc:
            st.error(f"{exc}. Enter a number in {setpoint_help()}.", icon=":material/error:")
    if target is not None:  # how long the room should take, from its fitted thermal model
        estimate = thermal.time_to_target_caption(ui.db_path(), device, row["temperature"], target)
        if estimate:
            st.caption(estimate)
    label = "Send" if len(chosen) == 1 else f"Send to {len(chosen)} thermostats"
    wait = f"(up to {get_settings().command_timeout_s:g} s each)"
    if st.button(label, type="primary", disabled=target is None, key="control.send"):
        with st.spinner(f"Waiting for {', '.join(chosen)} to answer {wait}…"):
            send_all(chosen, user, target=target)
    mode_col, mode_button = st.columns([3, 2], vertical_alignment="bottom")
    mode = mode_col.segmented_control("Mode", contract.MODES, key=MODE_KEY, default=row["mode"] or contract.MODE_HEAT,
                                      help="off: the heater stays off whatever the temperature")
    if mode_button.button("Set mode", key="control.set_mode", disabled=mode is None):
        with st.spinner(f"Waiting for {', '.join(chosen)} to answer {wait}…"):
            send_all(chosen, user, mode=mode)
    for result in st.session_state.get(RESULT_KEY) or []:
        if result.device_id in chosen:
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
