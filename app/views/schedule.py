"""Schedule: each thermostat's weekly program, its next changes and who changed it when; operators edit it.

The program is edited as the documented file format (docs/schedules.md), presets and overrides (boost, away)
have their own controls; Save validates like ``thermolog schedule set`` and publishes through the broker, so the
ingest worker stores and audits the change and the device gets its change points.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, timedelta

import polars as pl
import streamlit as st

from app import auth, ui
from app.plain_text import plain
from app.roles import User
from app.schedules import stored_programs
from simulator.schedule import SIM_PROGRAM
from thermolog.schedule import DEFAULT_PRESETS, ScheduleError, expand, parse_program
from thermolog.schedule_publish import schedule_history, set_schedule, validate
from thermolog.settings import get_settings

DEVICE_KEY = "schedule.device"
PROGRAM_KEY = "schedule.program"
SAVE_KEY = "schedule.save"
RESULT_KEY = "schedule.result"
SHOWN_CHANGES = 12
HISTORY_ROWS = 20


def slots_toml(program: dict) -> str:
    """The slots of a program as TOML tables (what the editor shows)."""
    lines = []
    for slot in program.get("slots", []):
        lines.append("[[slots]]")
        for key in ("days", "at", "preset", "target"):
            if key in slot:
                value = slot[key]
                lines.append(f"{key} = {value!r}".replace("'", '"') if isinstance(value, str | list)
                             else f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)


def upcoming(program: dict) -> None:
    """The next change points in the program's zone."""
    parsed = parse_program(program, get_settings().display_timezone)
    now = datetime.now(UTC)
    points = [p for p in expand(parsed, now) if p.at > now][:SHOWN_CHANGES]
    if not points:
        st.caption("No change ahead: the program has no slots.")
        return
    st.dataframe(pl.DataFrame({
        f"when ({parsed.tz.key})": [p.at.astimezone(parsed.tz).strftime("%a %Y-%m-%d %H:%M") for p in points],
        "target": [ui.fmt_temp(p.target) for p in points],
        "why": [p.label for p in points],
    }), hide_index=True)


def editor(user: User, device: str, program: dict) -> None:
    """Presets, slots (TOML), boost and away; Save publishes the whole program."""
    st.subheader("Edit", anchor=False)
    presets = {**DEFAULT_PRESETS, **program.get("presets", {})}
    columns = st.columns(len(DEFAULT_PRESETS))
    for column, name in zip(columns, DEFAULT_PRESETS, strict=True):
        presets[name] = column.number_input(f"{name.capitalize()} (°C)", value=float(presets[name]),
                                            step=get_settings().setpoint_step_c, key=f"schedule.preset.{name}")
    text = st.text_area("Weekly slots (from each local time on those days, hold the preset or target)",
                        value=slots_toml(program), height=260, key=PROGRAM_KEY,
                        help="days: daily, weekdays, weekend, mon-fri, sat,sun; at: HH:MM local time; "
                             "preset: comfort, eco or away, or target: °C. Format: docs/schedules.md")
    for override in program.get("overrides", []):
        st.caption(f"Saved override: {plain(str(override))}; Save replaces the overrides with the ones below.")
    boost_col, minutes_col, away_col = st.columns(3)
    boost = boost_col.number_input("Boost to (°C, 0 = none)", value=0.0, step=get_settings().setpoint_step_c,
                                   key="schedule.boost")
    minutes = minutes_col.number_input("for minutes", value=60, min_value=1, max_value=1440,
                                       key="schedule.boost_minutes")
    away = away_col.date_input("Away until (empty = not away)", value=None, key="schedule.away",
                               min_value=date.today() + timedelta(days=1))
    if st.button("Save schedule", type="primary", key=SAVE_KEY):
        if not auth.operator_confirmed("Not saved"):
            return
        try:
            slots = tomllib.loads(text).get("slots", [])
        except tomllib.TOMLDecodeError as exc:
            st.error(f"The slots are not valid TOML: {exc}", icon=":material/error:")
            return
        overrides = []
        if boost:
            overrides.append({"kind": "boost", "target": boost, "minutes": int(minutes)})
        if away is not None:
            overrides.append({"kind": "away", "until": away.isoformat()})
        doc = {"timezone": program.get("timezone") or get_settings().display_timezone, "presets": presets,
               "slots": slots, "overrides": overrides}
        try:
            validate(doc, get_settings())
            set_schedule(device, doc, user.username)
        except ScheduleError as exc:
            st.error(f"Not saved: {plain(str(exc))}", icon=":material/error:")
            return
        except OSError as exc:
            st.error(f"Not saved: {plain(str(exc))}", icon=":material/cloud_off:")
            return
        stored_programs.clear()
        st.session_state[RESULT_KEY] = device
    if st.session_state.get(RESULT_KEY) == device:
        st.success(f"Schedule of {plain(device)} sent; the thermostat follows it from now and the change is "
                   "recorded below once the ingest worker has stored it.", icon=":material/check_circle:")


def history(device: str) -> None:
    """Who changed this device's schedule, when."""
    st.subheader("Changes", anchor=False)
    frame = ui.guarded(lambda: schedule_history(device, HISTORY_ROWS, ui.db_path()))
    if frame is None:
        return
    if frame.height == 0:
        st.caption("No schedule change recorded yet.")
        return
    st.dataframe(pl.DataFrame({"when": [ui.fmt_time(t) for t in frame["changed_at"].to_list()],
                               "who": frame["issued_by"].to_list(), "program": frame["program"].to_list()}),
                 hide_index=True)


def page() -> None:
    """Pick a thermostat; see its program (everyone) and edit it (operators)."""
    st.title("Schedule")
    user = auth.current_user() or auth.require_login()
    state = ui.guarded(lambda: ui.latest_state(ui.db_path()))
    if state is None:
        return
    if state.height == 0:
        st.info("No thermostats known yet. Start `thermolog simulate` (or `thermolog demo`), then set their "
                "weekly programs here.")
        return
    device = st.selectbox("Thermostat", state["device_id"].to_list(), key=DEVICE_KEY)
    stored = stored_programs(ui.db_path()).get(device)
    if stored is None:
        st.info("No schedule yet: the thermostat keeps the target it has. Operators can start from the "
                "example below.", icon=":material/event_busy:")
        program = SIM_PROGRAM
    else:
        program = stored["program"]
        st.caption(f"Set by {plain(stored['issued_by'] or 'unknown')} at {ui.fmt_time(stored['changed_at'])} · "
                   f"time zone {plain(program.get('timezone') or get_settings().display_timezone)}")
        upcoming(program)
    if user.is_operator:
        editor(user, device, program)
    else:
        st.info(f"Only operators can change schedules. You are signed in as {plain(user.name)} without the "
                f"operator role ({get_settings().entra_role_operator}).", icon=":material/lock:")
    history(device)


page()
