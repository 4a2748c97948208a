"""Helpers for the AppTest page tests: a database of recent readings, the app entrypoint, figure decoding."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app import auth, auth_flow, sessions
from app.plain_text import WORD_JOINER
from app.roles import User
from tests.telemetry_db import build_db, readings
from thermolog import settings as settings_module

ENTRYPOINT = str(Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py")
TIMEOUT_S = 60
DEVICES = ("living-room", "bedroom")
STALE_DEVICE = "attic"
YEAR_DEVICE = "cellar"


def recent_db(path: Path, now: datetime | None = None) -> Path:
    """Two live thermostats (2 h of 30 s readings up to now), a stale one, a year of 10-minute readings, an edge
    host, commands and a rejected payload."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    live_start = now - timedelta(hours=2)
    return build_db(
        path,
        [
            readings(DEVICES[0], live_start, 240, 30, target=21.0, base=20.5),
            readings(DEVICES[1], live_start, 240, 30, target=19.0, base=19.5),
            readings(STALE_DEVICE, now - timedelta(hours=5), 60, 60, target=18.0, base=18.0),
            readings(YEAR_DEVICE, now - timedelta(days=365), 365 * 144, 600, target=16.0, base=15.0,
                     period_s=86400),
        ],
        status=[(DEVICES[0], live_start, "online"), (DEVICES[1], live_start, "online"),
                (STALE_DEVICE, now - timedelta(hours=4), "offline")],
        state=[(DEVICES[0], live_start, 21.0), (DEVICES[1], live_start, 19.0)],
        system=[("edge-gw", now - timedelta(seconds=20), 12.5, 40.0, 7.5)],
        commands=[("r1", DEVICES[0], now - timedelta(minutes=30), "alice@example.com", 21.0,
                   now - timedelta(minutes=30), True, None, "mqtt"),
                  ("r2", DEVICES[1], now - timedelta(minutes=20), "bob@example.com", 30.0,
                   now - timedelta(minutes=20), False, "window open, heating locked", "mqtt")],
        rejected=[(now - timedelta(minutes=5), "thermostats/bad/telemetry", "not JSON", b"\x00garbage")],
    )


def use_db(monkeypatch: pytest.MonkeyPatch, db: Path, **env: str) -> None:
    """Point the settings (and so the app) at ``db``, with extra ``THERMOLOG_*`` values; clears caches."""
    monkeypatch.setenv("THERMOLOG_DB_PATH", str(db))
    for key, value in env.items():
        monkeypatch.setenv(f"THERMOLOG_{key.upper()}", value)
    settings_module.get_settings.cache_clear()
    st.cache_data.clear()


class SignedInBrowser:
    """The browser's side of a sign-in for page tests: a server-side session whose cookie the page sees, and an
    identity provider that confirms the roles whenever asked (the sign-in itself is tested against the OIDC
    stand-in in test_auth.py and test_browser_sign_in.py)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cookie: str | None = None
        monkeypatch.setattr(auth, "request_cookie",
                            lambda name: self.cookie if name == sessions.SESSION_COOKIE else None)
        monkeypatch.setattr(auth_flow, "refresh", lambda sign_in, _settings: sign_in)

    def sign_in(self, user: User) -> None:
        """From now on this browser is signed in as ``user``."""
        store = sessions.session_store(settings_module.get_settings().entra_session_ttl_s)
        _session, self.cookie = store.create(auth_flow.SignIn(user, "refresh-token", "id-token"))


def app(page: str | None = None, session: dict | None = None) -> AppTest:
    """Run the app (optionally with session values set first) and switch to ``views/{page}.py``."""
    at = AppTest.from_file(ENTRYPOINT, default_timeout=TIMEOUT_S)
    for key, value in (session or {}).items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    return at


def visible(markdown: str) -> str:
    """What Markdown made by ``app.plain_text.plain`` shows: backslash escapes resolved, word joiners gone."""
    return re.sub(r"\\(.)", r"\1", markdown).replace(WORD_JOINER, "")


def shown_table(at: AppTest, index: int = 0) -> pd.DataFrame:
    """The ``index``-th table on the page, whether a grid (st.dataframe) or Markdown (``app.ui.table``), as a
    pandas frame; Markdown cells that read as numbers become numbers, a dash None."""
    tables = [element for element in at.markdown if str(element.value).startswith("| ")]
    if not tables:
        return at.dataframe[index].value
    lines = str(tables[index].value).splitlines()
    rows = [[visible(cell.strip()) for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    frame = pd.DataFrame([[None if cell == "—" else cell for cell in row] for row in rows[2:]], columns=rows[0])
    for column in frame.columns:
        try:
            frame[column] = pd.to_numeric(frame[column])
        except (ValueError, TypeError):
            pass
    return frame


def texts(elements) -> list[str]:
    """The ``value`` of each element (markdown, alerts, subheaders...)."""
    return [str(element.value) for element in elements]


def figure_traces(at: AppTest) -> list[dict]:
    """Every trace of every plotly chart on the page, as plotly JSON."""
    return [trace for chart in at.get("plotly_chart") for trace in json.loads(chart.proto.spec)["data"]]


def figure_series(at: AppTest) -> list[tuple[str | None, int]]:
    """(trace name, number of x values) of every trace of every plotly chart on the page."""
    found = []
    for trace in figure_traces(at):
        x = trace["x"]
        if isinstance(x, dict):  # typed array: {"dtype": "f8", "bdata": base64}
            count = len(base64.b64decode(x["bdata"])) // int(x["dtype"][1:])
        else:
            count = len(x)
        found.append((trace.get("name"), count))
    return found
