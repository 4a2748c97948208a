"""The dashboard's entrypoint: sign-in, the sidebar (account, units, time zone) and navigation; nothing else.

Each page is one file in ``app/views`` (not ``pages/``: Streamlit treats a ``pages/`` folder beside the entrypoint as
a legacy multipage app, which takes over deep links like ``/history`` until this script has run once).
``thermolog app`` serves this file through ``app/server.py`` (Streamlit's server plus the sign-in routes).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/streamlit_app.py` puts app/ on sys.path, not the project root that holds `app` and `thermolog`.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import ui  # noqa: E402
from app.auth import account_area, require_login  # noqa: E402

PAGES = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="thermolog", page_icon=":material/thermostat:", layout="wide")
user = require_login()
account_area(user)
ui.preferences_sidebar()

navigation = st.navigation({
    "Thermostats": [
        st.Page(PAGES / "live.py", title="Live", icon=":material/sensors:", default=True),
        st.Page(PAGES / "history.py", title="History", icon=":material/show_chart:"),
        st.Page(PAGES / "control.py", title="Control", icon=":material/tune:"),
        st.Page(PAGES / "schedule.py", title="Schedule", icon=":material/calendar_month:"),
        st.Page(PAGES / "insights.py", title="Insights", icon=":material/insights:"),
    ],
    "Data": [
        st.Page(PAGES / "export.py", title="Export", icon=":material/download:"),
        st.Page(PAGES / "health.py", title="Health", icon=":material/monitor_heart:"),
    ],
})
# The browser tab names the page, so several open tabs can be told apart.
st.set_page_config(page_title=f"{navigation.title} · thermolog")
navigation.run()
