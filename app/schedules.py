"""Schedules in the app: each device's stored program and its next change (Live, Control and Schedule pages)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb
import streamlit as st

from app import ui
from thermolog.reader import DatabaseNotReady
from thermolog.schedule import ChangePoint, ScheduleError, next_change, parse_program
from thermolog.schedule_publish import current_programs
from thermolog.settings import get_settings


@st.cache_data(ttl=5, show_spinner=False)
def stored_programs(path: str) -> dict[str, dict[str, Any]]:
    """Cached :func:`thermolog.schedule_publish.current_programs`; empty for a database without schedules (or
    none yet), so the next-change captions never break a page; the Schedule page reports database problems."""
    try:
        return current_programs(path)
    except (duckdb.CatalogException, DatabaseNotReady):  # a file from before schedules existed, or no file yet
        return {}


def next_changes(path: str, now: datetime | None = None) -> dict[str, ChangePoint]:
    """Each scheduled device's next change after ``now``."""
    now = now or datetime.now(UTC)
    out = {}
    for device_id, stored in stored_programs(path).items():
        try:
            point = next_change(parse_program(stored["program"], get_settings().display_timezone), now)
        except ScheduleError:
            continue
        if point is not None:
            out[device_id] = point
    return out


def next_change_text(point: ChangePoint | None) -> str:
    """``Next: Mon 22:00 → 18.0 °C (eco)`` in the chosen zone and unit, or a hint when nothing is scheduled."""
    if point is None:
        return "No schedule (Schedule page)."
    return f"Next: {ui.fmt_time(point.at)} → {ui.fmt_temp(point.target)} ({point.label})"
