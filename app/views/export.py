"""Export: raw readings of chosen thermostats and dates as CSV or Parquet, via ``thermolog.export``.

The file is built by the same function as ``thermolog export`` and then offered for download.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta

import streamlit as st

from app import ui
from thermolog import export, queries

ALL_KEY = "export.all"
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
    return ui.day_range(FROM_KEY, TO_KEY, default_days=1)


def page() -> None:
    """Choose, prepare, download."""
    st.title("Export")
    path = ui.db_path()
    found = ui.devices_with_readings(path, "No readings to export yet. Start `thermolog simulate` "
                                           "(or `thermolog demo`).")
    if found is None:
        return
    _state, known = found
    # A switch rather than every id preselected: a thousand chips in a box cost the browser over half a second.
    everyone = st.toggle(f"All {len(known):,} thermostats", value=True, key=ALL_KEY)
    devices = known if everyone else st.multiselect("Thermostats", known, key=DEVICES_KEY)
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
