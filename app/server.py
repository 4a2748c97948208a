"""The dashboard's server: Streamlit's own (``st.App``) with the sign-in routes and middleware of ``app.auth_routes``.

``thermolog app`` runs ``streamlit run app/server.py``; Streamlit finds ``app`` below and serves
``streamlit_app.py`` with these additions. The process also gets the project's log format here, so sign-ins,
sign-outs and refusals reach the log (the launcher's own logging stays in the launcher's process).
"""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from app.auth_routes import ROUTES, SignInGate

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """The project's log lines on stderr, unless this process already has a handler on the root logger."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format=LOG_FORMAT)


configure_logging()
app = st.App(Path(__file__).with_name("streamlit_app.py"), routes=ROUTES, middleware=[Middleware(SignInGate)])
