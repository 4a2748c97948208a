"""Sign-in in a real browser: Chromium leaves the app for the stand-in identity provider and comes back signed in.

Streamlit serves a minimal page behind ``require_login``; the round trip starts a new Streamlit session on return,
which is exactly what the server-side pending-flow store is for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser_support import OPERATOR, chromium, entra_env, new_context, sign_in
from tests.conftest import free_port, wait_for_port
from tests.oidc_standin import OidcStandIn

ROOT = Path(__file__).resolve().parents[2]
PAGE = """
import streamlit as st
from app.auth import account_area, require_login
user = require_login()
account_area(user)
st.markdown(f"signed in as {user.name}, operator: {user.is_operator}")
"""


@pytest.fixture
def signed_in_app(tmp_path: Path) -> Iterator[tuple[str, OidcStandIn]]:
    """The stand-in and a Streamlit server with the minimal page, sign-in pointed at the stand-in."""
    standin = OidcStandIn(tmp_path).start()
    port = free_port()
    (tmp_path / "page.py").write_text(PAGE)
    env = {**os.environ, **entra_env(standin, port), "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(tmp_path / "page.py"), "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        yield f"http://127.0.0.1:{port}/", standin
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        standin.stop()


def test_operator_signs_in_through_the_identity_provider_and_out_again(
        signed_in_app: tuple[str, OidcStandIn]) -> None:
    base_url, standin = signed_in_app
    with chromium() as browser:
        page = new_context(browser).new_page()
        sign_in(page, base_url, standin, OPERATOR)
        page.get_by_text("signed in as Olivia Operator, operator: True").wait_for()
        assert standin.authorize_requests[-1]["code_challenge_method"] == "S256"
        assert standin.token_errors == []
        page.get_by_role("button", name="Sign out").click()
        page.get_by_text("You are signed out.").wait_for()
        assert page.get_by_text("signed in as").count() == 0
        logout = page.get_by_role("link", name="Sign out of your Microsoft account as well")
        assert logout.get_attribute("href") == f"{standin.authority}/logout"
