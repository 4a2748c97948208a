"""Sign-in as pages see it (AppTest; the browser's cookies come from the HTTP side) and local mode."""

from __future__ import annotations

import argparse
import html
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from streamlit.testing.v1 import AppTest

from app import auth, sessions
from app.auth import LOCAL_BANNER, USER_KEY, InsecureBind, check_bind
from app.roles import LOCAL_USER
from tests.app.auth_support import (
    ENTRYPOINT,
    OPERATOR,
    REDIRECT,
    VIEWER,
    http_app,
    sign_in_over_http,
)
from tests.app_support import visible
from tests.conftest import free_port
from tests.oidc_standin import Identity, OidcStandIn
from tests.telemetry_db import build_db, readings
from thermolog import commands
from thermolog import settings as settings_module
from thermolog.settings import Settings

# A page as small as possible: sign-in gate, account area, and what the app would gate on the operator role.
PAGE = """
import streamlit as st
from app.auth import require_login, account_area
user = require_login()
account_area(user)
st.markdown(f"signed in as {user.name}")
st.button("Send setpoint", disabled=not user.is_operator)
"""


# --- binding without sign-in -------------------------------------------------------------------------------


def test_local_mode_binds_to_loopback_only(local_env: Settings) -> None:
    check_bind("127.0.0.1", local_env)
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(InsecureBind, match="THERMOLOG_APP_ALLOW_INSECURE_BIND"):
            check_bind(host, local_env)
    check_bind("0.0.0.0", local_env.model_copy(update={"app_allow_insecure_bind": True}))
    check_bind("0.0.0.0", local_env.model_copy(update={"entra_client_id": "c", "entra_tenant_id": "t"}))


def test_app_launcher_refuses_a_public_address_in_local_mode(local_env: Settings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from app import launch

    def no_server(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the server must not start")

    monkeypatch.setattr(launch.subprocess, "Popen", no_server)
    assert launch.run(argparse.Namespace(host="0.0.0.0", port=8599)) == 2


@pytest.mark.parametrize(("address", "host", "refused"), [
    ("127.0.0.1", "127.0.0.1:8501", None), ("127.0.0.1", "localhost:8501", None),
    ("", "127.0.0.1:8501", "listens on every address"), ("0.0.0.0", "127.0.0.1:8501", "listens on 0.0.0.0"),
    ("127.0.0.1", "rebind.attacker.example:8501", "not rebind"),
])
def test_require_login_itself_checks_address_and_host_in_local_mode(local_env: Settings,
                                                                     monkeypatch: pytest.MonkeyPatch, address: str,
                                                                     host: str, refused: str | None) -> None:
    monkeypatch.setattr(auth, "served_address", lambda: address)
    monkeypatch.setattr(auth, "request_host", lambda: host)
    at = AppTest.from_string(PAGE).run(timeout=20)
    assert not at.exception
    if refused is None:
        assert [w.value for w in at.warning] == [LOCAL_BANNER] and "signed in as Local user" in page_text(at)
    else:
        assert any(refused in e.value for e in at.error), [e.value for e in at.error]
        assert "signed in as" not in page_text(at) and USER_KEY not in at.session_state


def test_insecure_bind_banner_says_so(local_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THERMOLOG_APP_ALLOW_INSECURE_BIND", "true")
    settings_module.get_settings.cache_clear()
    monkeypatch.setattr(auth, "served_address", lambda: "0.0.0.0")
    monkeypatch.setattr(auth, "request_host", lambda: "192.168.1.20:8501")
    at = AppTest.from_string(PAGE).run(timeout=20)
    assert [w.value for w in at.warning] == [auth.INSECURE_BANNER.format(address="0.0.0.0")]


# --- the Streamlit side (AppTest; the browser's cookies stand in through auth.request_cookie) ----------------


def sign_in_link(at: AppTest) -> str:
    """The href of the sign-in button on the page."""
    for block in at.markdown:
        found = re.search(r'href="([^"]+)"', block.value)
        if found:
            return html.unescape(found.group(1))
    raise AssertionError("no sign-in link on the page")


def page_text(at: AppTest, raw: bool = False) -> str:
    """The page's text as a reader sees it (Markdown escapes removed), or its Markdown source (``raw``)."""
    text = "\n".join(str(element.value) for element in [*at.markdown, *at.error, *at.warning, *at.success,
                                                         *at.caption, *at.info])
    return text if raw else visible(text)


class Browser:
    """One browser's cookie jar, shared by the HTTP routes (TestClient) and the Streamlit page (AppTest)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.client = TestClient(http_app(), base_url=REDIRECT.rstrip("/"), follow_redirects=False)
        monkeypatch.setattr(auth, "request_cookie", lambda name: self.client.cookies.get(name))

    def sign_in(self, standin: OidcStandIn, identity: Identity) -> None:
        answer = sign_in_over_http(self.client, standin, identity)
        assert self.client.get("/", params=answer).status_code == 303

    def open(self, script: str = PAGE) -> AppTest:
        """A new tab (or a reload): a new Streamlit session with this browser's cookies."""
        return AppTest.from_string(script).run(timeout=20)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    found = Browser(monkeypatch)
    yield found
    found.client.close()


def test_local_mode_is_bannered_and_needs_no_sign_in(local_env: Settings) -> None:
    at = AppTest.from_string(PAGE).run(timeout=20)
    assert not at.exception
    assert [w.value for w in at.warning] == [LOCAL_BANNER]
    assert at.session_state[USER_KEY] == LOCAL_USER
    assert "signed in as Local user" in page_text(at)


def test_dashboard_in_local_mode_shows_the_banner_once(local_env: Settings) -> None:
    at = AppTest.from_file(ENTRYPOINT, default_timeout=60).run()
    assert not at.exception
    assert [w.value for w in at.warning].count(LOCAL_BANNER) == 1
    assert "**Local user**" in [m.value for m in at.sidebar.markdown]


def test_unauthenticated_visitor_sees_only_the_sign_in_link(entra_env: Settings, standin: OidcStandIn,
                                                            browser: Browser) -> None:
    at = browser.open()
    assert not at.exception
    assert USER_KEY not in at.session_state
    assert "signed in as" not in page_text(at)
    assert len(at.button) == 0
    assert sign_in_link(at) == "/auth/sign-in"
    assert "Sign in with 127.0.0.1" in page_text(at)


def test_signed_in_browser_stays_signed_in_across_reloads_and_tabs(entra_env: Settings, standin: OidcStandIn,
                                                                   browser: Browser) -> None:
    browser.sign_in(standin, OPERATOR)
    for _tab in range(2):
        at = browser.open()
        assert not at.exception
        user = at.session_state[USER_KEY]
        assert user.name == "Olivia Operator" and user.is_operator
        assert "signed in as Olivia Operator" in page_text(at)
        assert "**Olivia Operator**" in page_text(at)  # the sidebar account area
        send = [b for b in at.button if b.label == "Send setpoint"]
        assert send and not send[0].disabled
    assert standin.refresh_requests == []  # roles are not asked again before they are due


def test_returning_viewer_may_not_send(entra_env: Settings, standin: OidcStandIn, browser: Browser) -> None:
    browser.sign_in(standin, VIEWER)
    at = browser.open()
    assert not at.exception
    assert at.session_state[USER_KEY].is_operator is False
    send = [b for b in at.button if b.label == "Send setpoint"]
    assert send and send[0].disabled


def test_user_without_a_role_is_stopped(entra_env: Settings, standin: OidcStandIn, browser: Browser) -> None:
    browser.sign_in(standin, Identity(name="Nina [Norole](https://evil.example)",
                                      preferred_username="nina@example.test", roles=[]))
    at = browser.open()
    assert not at.exception
    assert "has no thermolog role" in page_text(at)
    assert "signed in as" not in page_text(at)
    assert "[Norole](" not in page_text(at, raw=True)  # the name is shown as text


def test_roles_are_rechecked_when_due_and_a_removed_role_takes_effect(entra_env: Settings, standin: OidcStandIn,
                                                                      browser: Browser,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THERMOLOG_ENTRA_ROLE_RECHECK_S", "10")
    settings_module.get_settings.cache_clear()
    browser.sign_in(standin, OPERATOR)
    standin.set_roles(OPERATOR.preferred_username, ["Thermostat.Viewer"])
    assert browser.open().session_state[USER_KEY].is_operator  # not due yet: the sign-in's roles
    store = sessions.session_store(settings_module.get_settings().entra_session_ttl_s)
    session = store.get(browser.client.cookies.get(sessions.SESSION_COOKIE))
    store._sessions[session.id] = replace(session, checked=session.checked - 11)  # noqa: SLF001 - 11 s later
    at = browser.open()
    assert not at.session_state[USER_KEY].is_operator and len(standin.refresh_requests) == 1
    standin.disable(OPERATOR.preferred_username)
    store._sessions[session.id] = replace(store.get(browser.client.cookies.get(sessions.SESSION_COOKIE)),  # noqa: SLF001
                                          checked=0.0)
    at = browser.open()
    assert "Your sign-in has ended" in page_text(at) and USER_KEY not in at.session_state
    assert sign_in_link(at) == "/auth/sign-in"


def test_unreachable_identity_provider_is_explained(entra_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THERMOLOG_ENTRA_AUTHORITY", f"https://127.0.0.1:{free_port()}/nobody-listens")
    settings_module.get_settings.cache_clear()
    at = AppTest.from_string(PAGE).run(timeout=30)
    assert not at.exception
    assert any("cannot be reached" in e.value for e in at.error)
    assert "signed in as" not in page_text(at)
    assert not any('href="' in m.value for m in at.markdown)


def test_plain_http_redirect_uri_is_explained_on_the_sign_in_page(entra_env: Settings,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THERMOLOG_ENTRA_REDIRECT_URI", "http://thermolog.example/")
    settings_module.get_settings.cache_clear()
    at = AppTest.from_string(PAGE).run(timeout=20)
    assert "must use https" in page_text(at) and not any('href="' in m.value for m in at.markdown)


def test_refused_sign_in_notice_is_shown_as_text(entra_env: Settings, standin: OidcStandIn,
                                                 browser: Browser) -> None:
    crafted = {"error": "access_denied",
               "error_description": "Session expired. [Sign in again](https://evil.example) ![](https://evil.example/x)"}
    back = browser.client.get("/", params=crafted)  # no state: not an answer to any flow of ours
    assert back.status_code == 303 and sessions.SESSION_COOKIE not in browser.client.cookies
    at = browser.open()
    errors = [e.value for e in at.error]
    assert "reported an error: Session expired. [Sign in again](https://evil.example)" in page_text(at)
    assert not any("](" in e for e in errors)
    assert sign_in_link(at) == "/auth/sign-in"


def test_sign_out_ends_the_session_in_every_tab_and_links_to_the_provider(entra_env: Settings,
                                                                         standin: OidcStandIn,
                                                                         browser: Browser) -> None:
    browser.sign_in(standin, OPERATOR)
    other_tab = browser.open()
    at = browser.open()
    at.session_state["thermolog.some_page_state"] = "kept until sign-out"
    at.button(key="thermolog.sign_out").click().run(timeout=20)
    assert not at.exception
    assert USER_KEY not in at.session_state
    assert "thermolog.some_page_state" not in at.session_state
    assert "You are signed out." in page_text(at)
    link = re.search(r"\]\((https://[^)]+)\)", page_text(at))
    assert link and link.group(1).startswith(f"{standin.authority}/logout?") and "id_token_hint=" in link.group(1)
    assert "Sign out at 127.0.0.1 as well" in page_text(at)
    assert "signed in as" not in page_text(at)
    other_tab.run(timeout=20)  # the other tab's next interaction
    assert "signed in as" not in page_text(other_tab) and sign_in_link(other_tab) == "/auth/sign-in"
    assert "signed in as" not in page_text(browser.open())  # a reload


# --- the real dashboard: the Control page after a real sign-in ---------------------------------------------


def dashboard_after_sign_in(standin: OidcStandIn, identity: Identity, tmp_path: Path, browser: Browser) -> AppTest:
    """The dashboard's entrypoint, signed in through the stand-in, switched to the Control page."""
    (tmp_path / "data").mkdir()  # the default THERMOLOG_DB_PATH, relative to the test's working directory
    build_db(tmp_path / "data" / "thermolog.duckdb",
             [readings("dev-1", datetime.now(UTC) - timedelta(minutes=10), 60, 10.0)])
    browser.sign_in(standin, identity)
    at = AppTest.from_file(ENTRYPOINT, default_timeout=60).run()
    assert at.session_state[USER_KEY].name == identity.name
    return at.switch_page("views/control.py").run()


def test_signed_in_viewer_gets_no_send_on_the_control_page(entra_env: Settings, standin: OidcStandIn,
                                                            tmp_path: Path, browser: Browser) -> None:
    at = dashboard_after_sign_in(standin, VIEWER, tmp_path, browser)
    assert not at.exception
    assert any("Only operators can change setpoints" in i.value for i in at.info)
    assert [b.label for b in at.button if b.label == "Send"] == []
    assert len(at.text_input) == 0


def test_signed_in_operator_gets_the_setpoint_form(entra_env: Settings, standin: OidcStandIn,
                                                   tmp_path: Path, browser: Browser) -> None:
    at = dashboard_after_sign_in(standin, OPERATOR, tmp_path, browser)
    assert not at.exception
    assert [b.label for b in at.button if b.label == "Send"] == ["Send"]
    assert len(at.text_input) == 1


def test_roles_are_asked_again_before_a_command(entra_env: Settings, standin: OidcStandIn, tmp_path: Path,
                                                browser: Browser, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[object] = []
    monkeypatch.setattr(commands, "send_command", lambda *args, **kwargs: sent.append(args))
    at = dashboard_after_sign_in(standin, OPERATOR, tmp_path, browser)
    standin.set_roles(OPERATOR.preferred_username, ["Thermostat.Viewer"])  # removed a minute after sign-in
    at.text_input(key="control.target").input("21.5").run()
    at.button(key="control.send").click().run()
    assert not at.exception
    assert sent == [] and len(standin.refresh_requests) == 1
    assert any("operator role has been removed" in e.value for e in at.error)
