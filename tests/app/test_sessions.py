"""Sessions and cookies, text from outside, and the HTTP side of sign-in (routes and middleware before Streamlit)."""

from __future__ import annotations

import re
import string
import time

import pytest
from starlette.testclient import TestClient

from app import auth_routes, sessions
from app.auth_flow import SignIn
from app.plain_text import plain
from app.roles import ROLE_OPERATOR, User
from app.sessions import SessionStore
from tests.app.auth_support import (
    OPERATOR,
    REDIRECT,
    http_app,
    sign_in_over_http,
)
from tests.app_support import visible
from tests.oidc_standin import OidcStandIn
from thermolog import settings as settings_module
from thermolog.settings import Settings

# --- sessions ----------------------------------------------------------------------------------------------


def a_sign_in(name: str = "Olivia Operator") -> SignIn:
    return SignIn(User(name=name, username="olivia@example.test", roles=frozenset({ROLE_OPERATOR})), "rt", "idt")


def test_session_cookie_is_signed_expires_and_can_be_revoked() -> None:
    now = [1_000_000.0]
    store = SessionStore(ttl_s=8 * 3600, clock=lambda: now[0])
    session, cookie = store.create(a_sign_in())
    assert store.get(cookie) == session
    session_id, expires, _mac = cookie.split(".")
    assert session_id == session.id and int(expires) == 1_000_000 + 8 * 3600
    assert store.get(f"{session_id}.{int(expires) + 3600}.{_mac}") is None  # a longer life cannot be forged
    assert store.get(SessionStore(ttl_s=60).create(a_sign_in())[1]) is None  # another key's cookie
    assert store.get(None) is None and store.get("garbage") is None
    now[0] += 8 * 3600 + 1
    assert store.get(cookie) is None
    session, cookie = store.create(a_sign_in())
    assert len(store) == 1  # the expired one was dropped
    assert store.revoke(session.id) == session
    assert store.get(cookie) is None and store.update(session, a_sign_in()) is None


def test_session_store_is_bounded_and_knows_when_roles_are_due() -> None:
    tick = [0.0]
    store = SessionStore(ttl_s=60, monotonic=lambda: tick[0], max_sessions=2)
    cookies = [store.create(a_sign_in())[1] for _ in range(3)]
    assert len(store) == 2 and store.get(cookies[0]) is None and store.get(cookies[2]) is not None
    session = store.get(cookies[2])
    assert session is not None and not store.due(session, 300)
    tick[0] = 300
    assert store.due(session, 300)
    renewed = store.update(session, a_sign_in("Olivia O."))
    assert renewed is not None and not store.due(renewed, 300)
    assert store.get(cookies[2]).sign_in.user.name == "Olivia O."


def test_notice_cookie_only_from_this_process() -> None:
    assert sessions.decode_notice(sessions.encode_notice("the user declined ✓")) == "the user declined ✓"
    assert sessions.decode_notice(sessions.encode_notice("x", sessions.Signer())) is None
    assert sessions.decode_notice(None) is None


# --- text from outside (item 10) --------------------------------------------------------------------------


def test_plain_text_escapes_markdown_html_and_directives_and_cuts() -> None:
    hostile = "Click [here](https://evil.example) ![x](https://evil.example/i.png) <img src=x> :red[big] $x$ _a_"
    shown = plain(hostile)
    characters = re.findall(r"\\.|.", shown)  # an escaped character or a plain one
    assert [c for c in characters if len(c) == 1 and c in string.punctuation] == []  # every one escaped
    assert "https:" not in shown and "evil.example" not in shown  # nothing left for GFM to autolink
    assert visible(shown) == hostile  # as Markdown shows it, it is exactly the input
    assert visible(plain("&#58; \\ olivia@example.test www.x.y")) == "&#58; \\ olivia@example.test www.x.y"
    assert re.search(r"https?://|www\.|@\w", shown.replace("\\", "")) is None  # GFM's autolink patterns
    long = plain("a" * 5000 + "\n\n# heading", limit=100)
    assert len(long) == 100 and long.endswith("…") and "\n" not in long
    assert plain("two\nlines") == "two lines"


# --- the HTTP side: routes and middleware mounted into Streamlit's server (app.auth_routes) ----------------


@pytest.mark.parametrize("ttl_s", [None, 60])
def test_http_round_trip_sets_a_session_cookie_for_the_browser_that_started(entra_env: Settings, standin: OidcStandIn,
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            ttl_s: int | None) -> None:
    if ttl_s is not None:
        monkeypatch.setenv("THERMOLOG_ENTRA_SESSION_TTL_S", str(ttl_s))
        settings_module.get_settings.cache_clear()
    lifetime = ttl_s or 8 * 3600  # the default: 8 h
    with TestClient(http_app(), base_url=REDIRECT.rstrip("/"), follow_redirects=False) as browser:
        answer = sign_in_over_http(browser, standin, OPERATOR)
        back = browser.get("/", params=answer)
        assert back.status_code == 303 and back.headers["location"] == "/"  # the code leaves the address bar
        cookie = browser.cookies.get(sessions.SESSION_COOKIE)
        assert "HttpOnly" in back.headers["set-cookie"] and f"Max-Age={lifetime}" in back.headers["set-cookie"]
        session = sessions.session_store(float(lifetime)).get(cookie)
        assert session is not None and session.sign_in.user.name == "Olivia Operator"
        assert time.time() + lifetime - 5 < session.expires <= time.time() + lifetime
        assert browser.get("/").text == "the Streamlit page"


def test_http_return_link_in_another_browser_gets_no_session(entra_env: Settings, standin: OidcStandIn) -> None:
    with TestClient(http_app(), base_url=REDIRECT.rstrip("/"), follow_redirects=False) as victim, \
            TestClient(http_app(), base_url=REDIRECT.rstrip("/"), follow_redirects=False) as other:
        answer = sign_in_over_http(victim, standin, OPERATOR)
        back = other.get("/", params=answer)
        assert back.status_code == 303
        assert sessions.SESSION_COOKIE not in other.cookies
        notice = sessions.decode_notice(other.cookies.get(sessions.NOTICE_COOKIE))
        assert notice is not None and "started in another browser" in notice
        assert standin.token_requests == []


def test_local_mode_middleware_refuses_other_host_names(local_env: Settings) -> None:
    with TestClient(http_app(), base_url="http://127.0.0.1:8501") as client:
        assert client.get("/").status_code == 200
        assert client.get("/", headers={"Host": "localhost:8501"}).status_code == 200
        assert client.get("/", headers={"Host": "[::1]:8501"}).status_code == 200
        assert client.get("/", headers={"Host": "rebind.attacker.example:8501"}).status_code == 403
        assert client.get("/auth/sign-in").status_code == 404  # nothing to sign in to in local mode
    insecure = local_env.model_copy(update={"app_allow_insecure_bind": True})
    settings_module.get_settings.cache_clear()
    with TestClient(http_app(), base_url="http://127.0.0.1:8501") as client:
        auth_routes.get_settings = lambda: insecure  # type: ignore[assignment]
        try:
            assert client.get("/", headers={"Host": "192.168.1.20:8501"}).status_code == 200
        finally:
            auth_routes.get_settings = settings_module.get_settings
