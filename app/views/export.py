"""Export: raw readings of chosen thermostats and dates as CSV or Parquet, via ``thermolog.export``.

The file is built by the same function as ``thermolog export`` and then offered for download.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import polars as pl
import streamlit as st

from app import ui
from thermolog import export, queries

DEVICES_KEY = "export.devices"
FROM_KEY = "export.from"
TO_KEY = "export.to"
FORMAT_KEY = "export.format"
FILE_KEY = "export.file"
PREPARE_KEY = "export.prepare"
MAX_DOWNLOAD_ROWS = 1_000_000  # ~85 MB of CSV held in the app; larger exports belong to `thermolog export`


@dataclass(frozen=True)
class PreparedFile:
    """An export ready to download, and what it was made from."""

    data: bytes
    name: str
    mime: str
    rows: int
    devices: tuple[str, ...]
    start: datetime
    end: datetime


def chosen_range() -> tuple[datetime, datetime] | None:
    """Whole days in the display zone, as a UTC [start, end)."""
    tz = ui.zone()
    today = datetime.now(UTC).astimezone(tz).date()
    left, right = st.columns(2)
    first = left.date_input("From (inclusive)", value=today - timedelta(days=1), key=FROM_KEY)
    last = right.date_input("To (inclusive)", value=today, key=TO_KEY)
    if not isinstance(first, date) or not isinstance(last, date) or last < first:
        st.warning("Pick a start date on or before the end date.")
        return None
    start = datetime.combine(first, time.min, tz).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, tz).astimezone(UTC)
    return start, end


def page() -> None:
    """Choose, prepare, download."""
    st.title("Export")
    path = ui.db_path()
    state = ui.guarded(lambda: ui.latest_state(path))
    if state is None:
        return
    known = state.filter(pl.col("last_seen").is_not_null())["device_id"].to_list()
    if not known:
        st.info("No readings to export yet. Start `thermolog simulate` (or `thermolog demo`).")
        return
    devices = st.multiselect("Thermostats", known, default=known, key=DEVICES_KEY)
    picked = chosen_range()
    fmt = st.radio("Format", export.FORMATS, key=FORMAT_KEY, horizontal=True,
                   format_func=lambda f: {"csv": "CSV", "parquet": "Parquet"}[f])
    if not devices:
        st.info("Choose at least one thermostat.")
        return
    if picked is None:
        return
    start, end = picked
    st.caption(f"{ui.fmt_time(start)} – {ui.fmt_time(end)} (end excluded); times in the file are UTC.")
    count = ui.guarded(lambda: queries.export_count(devices, start, end, db_path=path))
    if count is None:
        return
    st.write(f"{count:,} readings match.")
    if count > MAX_DOWNLOAD_ROWS:
        st.warning(f"That is more than {MAX_DOWNLOAD_ROWS:,} readings: use `thermolog export --device … "
                   f"--from {start.isoformat()} --to {end.isoformat()} --format {fmt} --out FILE` instead, "
                   "or pick a shorter range.")
        return
    if st.button("Prepare file", key=PREPARE_KEY, type="primary"):
        buffer = io.BytesIO()
        with st.spinner("Exporting…"):
            rows = ui.guarded(lambda: export.export(devices, start, end, fmt, buffer, db_path=path))
        if rows is not None:
            stamp = f"{start:%Y%m%d}-{(end - timedelta(seconds=1)):%Y%m%d}"
            st.session_state[FILE_KEY] = PreparedFile(buffer.getvalue(), f"thermolog-{stamp}.{fmt}",
                                                      export.MEDIA_TYPES[fmt], rows, tuple(sorted(devices)),
                                                      start, end)
    prepared: PreparedFile | None = st.session_state.get(FILE_KEY)
    if prepared is not None and (prepared.devices, prepared.start, prepared.end, prepared.name.rsplit(".", 1)[-1]) \
            == (tuple(sorted(devices)), start, end, fmt):
        st.download_button(f"Download {prepared.name} ({prepared.rows:,} readings, {len(prepared.data):,} bytes)",
                           data=prepared.data, file_name=prepared.name, mime=prepared.mime, key="export.download",
                           on_click="ignore", icon=":material/download:")


page()
