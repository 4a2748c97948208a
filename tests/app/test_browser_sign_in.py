"""Sign-in in a real browser: Chromium leaves the app for the stand-in identity provider and comes back signed in.

Streamlit serves a minimal page behind ``require_login`` with the sign-in routes and middleware mounted the way
``app/server.py`` mounts them (``st.App``); cookies, reloads, tabs and a second browser are Chromium's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import requests

from tests.browser_support import OPERATOR, SIGN_IN_TIMEOUT_MS, chromium, entra_env, new_context, sign_in
from tests.conftest import free_port
from tests.oidc_standin import OidcStandIn
from tests.waiting import wait_for_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PAGE = """
import streamlit as st
from app.auth import account_area, require_login
user = require_login()
account_area(user)
st.markdown(f"signed in as {user.name}, operator: {user.is_operator}")
st.button("rerun")
"""
SERVER = """
import logging

import streamlit as st
from starlette.middleware import Middleware

from app.auth_routes import ROUTES, SignInGate

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = st.App("page.py", routes=ROUTES, middleware=[Middleware(SignInGate)])
"""


@dataclass
class App:
    url: str
    standin: OidcStandIn
    log: Path


@pytest.fixture
def signed_in_app(tmp_path: Path) -> Iterator[App]:
    """The stand-in and a Streamlit server with the minimal page, sign-in pointed at the stand-in."""
    standin = OidcStandIn(tmp_path).start()
    port = free_port()
    (tmp_path / "page.py").write_text(PAGE)
    (tmp_path / "server.py").write_text(SERVER)
    env = {**os.environ, **entra_env(standin, port), "PYTHONPATH": str(ROOT)}
    log_path = tmp_path / "streamlit.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(tmp_path / "server.py"), "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        yield App(f"http://127.0.0.1:{port}/", standin, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        standin.stop()


def test_sign_in_survives_reloads_and_new_tabs_and_sign_out_ends_it_everywhere(signed_in_app: App) -> None:
    app, standin = signed_in_app, signed_in_app.standin
    with chromium() as browser:
        context = new_context(browser)
        page = context.new_page()
        sign_in(page, app.url, standin, OPERATOR)
        page.get_by_text("signed in as Olivia Operator, operator: True").wait_for()
        assert standin.authorize_requests[-1]["code_challenge_method"] == "S256"
        assert standin.token_errors == []
        cookies = {cookie["name"]: cookie for cookie in context.cookies()}
        assert cookies["thermolog_session"]["httpOnly"] and cookies["thermolog_session"]["sameSite"] == "Lax"
        assert "thermolog_sign_in" not in cookies  # the binding cookie is gone once used
        page.reload()
        page.get_by_text("signed in as Olivia Operator, operator: True").wait_for(timeout=SIGN_IN_TIMEOUT_MS)
        other_tab = context.new_page()
        other_tab.goto(app.url)
        other_tab.get_by_text("signed in as Olivia Operator, operator: True").wait_for(timeout=SIGN_IN_TIMEOUT_MS)
        assert len(standin.authorize_requests) == 1  # neither the reload nor the tab went to the provider

        page.get_by_role("button", name="Sign out").click()
        page.get_by_text("You are signed out.").wait_for()
        assert page.get_by_text("signed in as").count() == 0
        provider_logout = page.get_by_role("link", name="Sign out at 127.0.0.1 as well")
        href = urlparse(provider_logout.get_attribute("href") or "")
        assert f"{href.scheme}://{href.netloc}{href.path}" == f"{standin.authority}/logout"
        assert parse_qs(href.query)["id_token_hint"][0].count(".") == 2  # a JWT
        other_tab.get_by_role("button", name="rerun").click()  # the other tab's next interaction
        other_tab.get_by_role("link", name="Sign in with 127.0.0.1").wait_for()
        assert other_tab.get_by_text("signed in as").count() == 0
        other_tab.reload()
        other_tab.get_by_role("link", name="Sign in with 127.0.0.1").wait_for()
    log = app.log.read_text()
    assert "event=sign_in user=olivia@example.test" in log and "event=sign_out user=olivia@example.test" in log
    assert "id_token" not in log and "refresh_token" not in log


def test_a_return_link_opened_in_another_browser_signs_nobody_in(signed_in_app: App) -> None:
    app, standin = signed_in_app, signed_in_app.standin
    standin.next_identity = OPERATOR
    with chromium() as browser:
        victim = new_context(browser)
        # The victim's browser starts a sign-in (its cookie jar gets the binding cookie) ...
        started = victim.request.get(app.url + "auth/sign-in", max_redirects=0)
        assert started.status == 303
        assert [c["name"] for c in victim.cookies()] == ["thermolog_sign_in"]
        answered = requests.get(started.headers["location"], allow_redirects=False, verify=str(standin.ca_path),
                                timeout=10)
        link = answered.headers["location"]  # ... and the provider's return link (code, state) leaks
        attacker = new_context(browser).new_page()
        attacker.goto(link)
        attacker.get_by_text("this sign-in was started in another browser").wait_for(timeout=SIGN_IN_TIMEOUT_MS)
        assert attacker.get_by_text("signed in as").count() == 0
        assert standin.token_requests == []  # the code was never redeemed
        assert "thermolog_session" not in [c["name"] for c in attacker.context.cookies()]
    assert "event=sign_in_refused reason=this sign-in was started in another browser" in app.log.read_text()


def test_the_browser_that_started_the_sign_in_is_signed_in_by_its_return_link(signed_in_app: App) -> None:
    app, standin = signed_in_app, signed_in_app.standin
    standin.next_identity = OPERATOR
    with chromium() as browser:
        context = new_context(browser)
        started = context.request.get(app.url + "auth/sign-in", max_redirects=0)
        answered = requests.get(started.headers["location"], allow_redirects=False, verify=str(standin.ca_path),
                                timeout=10)
        page = context.new_page()
        page.goto(answered.headers["location"])
        page.get_by_text("signed in as Olivia Operator, operator: True").wait_for(timeout=SIGN_IN_TIMEOUT_MS)
        assert "code=" not in page.url


def test_a_crafted_error_description_is_shown_as_text(signed_in_app: App) -> None:
    app = signed_in_app
    crafted = ("Your session expired. [Sign in again](https://evil.example/phish) "
               "![logo](https://evil.example/logo.png) <b>bold</b> www.evil.example help@evil.example :red[red] "
               ":material/home: $x^2$")
    with chromium() as browser:
        page = new_context(browser).new_page()
        page.goto(app.url + "?" + urlencode({"error": "access_denied", "error_description": crafted}))
        alert = page.get_by_text("the identity provider reported an error: Your session expired.")
        alert.wait_for(timeout=SIGN_IN_TIMEOUT_MS)
        assert "code=" not in page.url and "error=" not in page.url
        box = page.get_by_test_id("stAlertContainer").filter(has_text="reported an error")
        assert box.locator("a").count() == 0 and box.locator("img").count() == 0 and box.locator("b").count() == 0
        shown = box.inner_text().replace("\u2060", "")
        assert crafted in shown, shown  # every character as sent, nothing rendered
        assert box.locator("span.katex, [data-testid='stIconMaterial'], span[class*='Colored']").count() == 0
