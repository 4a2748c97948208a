"""Sign-in: the real MSAL authorization-code flow with PKCE against a loopback OIDC stand-in, and local mode."""

from __future__ import annotations

import argparse
import html
import logging
import re
import string
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from streamlit.testing.v1 import AppTest

from app import auth, auth_flow, auth_routes, sessions
from app.auth import LOCAL_BANNER, USER_KEY, InsecureBind, check_bind
from app.auth_flow import LoginError, PendingFlows, SignIn
from app.auth_routes import SignInGate
from app.plain_text import plain
from app.roles import LOCAL_USER, ROLE_OPERATOR, ROLE_VIEWER, User
from app.sessions import SessionStore
from tests.app_support import visible
from tests.conftest import free_port
from tests.oidc_standin import CLIENT_ID, CLIENT_SECRET, Identity, OidcStandIn
from tests.telemetry_db import build_db, readings
from thermolog import commands
from thermolog import settings as settings_module
from thermolog.settings import Settings

OPERATOR = Identity(name="Olivia Operator", preferred_username="olivia@example.test",
                    roles=["Thermostat.Viewer", "Thermostat.Operator"])
VIEWER = Identity(name="Vera Viewer", preferred_username="vera@example.test", roles=["Thermostat.Viewer"])
REDIRECT = "http://127.0.0.1:8599/"
BROWSER = "cookie-value-of-the-browser-that-started"
ENTRYPOINT = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")

# A page as small as possible: sign-in gate, account area, and what the app would gate on the operator role.
PAGE = """
import streamlit as st
from app.auth import require_login, account_area
user = require_login()
account_area(user)
st.markdown(f"signed in as {user.name}")
st.button("Send setpoint", disabled=not user.is_operator)
"""


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[OidcStandIn]:
    """The identity provider, serving HTTPS on a free loopback port with its own CA."""
    server = OidcStandIn(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def entra_env(standin: OidcStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings (environment) that point sign-in at the stand-in; returns them."""
    env = {
        "THERMOLOG_ENTRA_AUTHORITY": standin.authority,
        "THERMOLOG_ENTRA_CLIENT_ID": CLIENT_ID,
        "THERMOLOG_ENTRA_CLIENT_SECRET": CLIENT_SECRET,
        "THERMOLOG_ENTRA_CA_BUNDLE": str(standin.ca_path),
        "THERMOLOG_ENTRA_REDIRECT_URI": REDIRECT,
    }
    monkeypatch.delenv("THERMOLOG_ENTRA_LOGOUT_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    settings_module.get_settings.cache_clear()
    yield settings_module.get_settings()
    settings_module.get_settings.cache_clear()


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings without any Entra configuration (local mode)."""
    for name in Settings.model_fields:
        if name.startswith("entra_") or name == "app_allow_insecure_bind":
            monkeypatch.delenv(f"THERMOLOG_{name.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)
    settings_module.get_settings.cache_clear()
    yield settings_module.get_settings()
    settings_module.get_settings.cache_clear()


def browser_visit(standin: OidcStandIn, auth_uri: str) -> dict[str, str]:
    """What a browser does at the identity provider: follow the sign-in URL, return the redirect's query."""
    session = requests.Session()
    session.trust_env = False
    response = session.get(auth_uri, allow_redirects=False, verify=str(standin.ca_path), timeout=10)
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT)
    return {key: values[0] for key, values in parse_qs(urlparse(location).query).items()}


# --- the flow functions ------------------------------------------------------------------------------------


def test_login_url_points_at_the_authority_with_pkce_state_and_nonce(entra_env: Settings,
                                                                      standin: OidcStandIn) -> None:
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    url = urlparse(flow["auth_uri"])
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{standin.authority}/authorize"
    assert query["client_id"] == CLIENT_ID
    assert query["response_type"] == "code"
    assert query["redirect_uri"] == REDIRECT
    assert query["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", query["code_challenge"])
    assert query["state"] == flow["state"] and len(flow["state"]) >= 16
    assert query["nonce"]
    assert store.peek(flow["state"]) is flow


def test_round_trip_signs_in_an_operator_with_roles(entra_env: Settings, standin: OidcStandIn) -> None:
    standin.next_identity = OPERATOR
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    user = auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, BROWSER, store=store).user
    assert user.name == "Olivia Operator"
    assert user.username == "olivia@example.test"
    assert user.roles == {ROLE_VIEWER, ROLE_OPERATOR}
    assert user.is_operator and not user.local
    # The stand-in checked the PKCE verifier against the challenge and accepted it.
    assert standin.token_requests[-1]["code_verifier"] and standin.token_errors == []
    assert len(store) == 0


def test_no_tokens_are_kept_after_sign_in(entra_env: Settings, standin: OidcStandIn) -> None:
    store = PendingFlows(ttl_s=60)
    for identity in (OPERATOR, VIEWER):
        standin.next_identity = identity
        flow = auth_flow.start_login(entra_env, BROWSER, store=store)
        auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, BROWSER, store=store)
    assert auth_flow.msal_app(entra_env).get_accounts() == []


def test_viewer_is_signed_in_but_may_not_send(entra_env: Settings, standin: OidcStandIn) -> None:
    standin.next_identity = VIEWER
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    user = auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, BROWSER, store=store).user
    assert user.name == "Vera Viewer"
    assert user.is_viewer
    assert not user.is_operator


def test_wrong_state_is_refused_before_any_token_request(entra_env: Settings, standin: OidcStandIn) -> None:
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    answer = browser_visit(standin, flow["auth_uri"])
    answer["state"] = "forged-" + answer["state"]
    with pytest.raises(LoginError, match="unknown or was already used"):
        auth_flow.finish_login(answer, entra_env, BROWSER, store=store)
    assert standin.token_requests == []


def test_a_sign_in_answer_is_used_once(entra_env: Settings, standin: OidcStandIn) -> None:
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    answer = browser_visit(standin, flow["auth_uri"])
    auth_flow.finish_login(answer, entra_env, BROWSER, store=store)
    with pytest.raises(LoginError, match="already used"):
        auth_flow.finish_login(answer, entra_env, BROWSER, store=store)


def test_wrong_nonce_is_refused(entra_env: Settings, standin: OidcStandIn) -> None:
    standin.nonce_override = "0" * 64
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    with pytest.raises(LoginError, match="nonce"):
        auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, BROWSER, store=store)


def test_expired_pending_flow_is_refused(entra_env: Settings, standin: OidcStandIn) -> None:
    now = [1000.0]
    store = PendingFlows(ttl_s=300, clock=lambda: now[0])
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    answer = browser_visit(standin, flow["auth_uri"])
    now[0] += 301
    assert store.peek(flow["state"]) is None
    with pytest.raises(LoginError, match="expired"):
        auth_flow.finish_login(answer, entra_env, BROWSER, store=store)
    assert standin.token_requests == []


def test_expired_flows_are_pruned_and_the_store_is_bounded() -> None:
    now = [0.0]
    store = PendingFlows(ttl_s=10, clock=lambda: now[0], max_pending=3)
    for index in range(5):
        store.put({"state": f"s{index}"}, BROWSER)
    assert len(store) == 3 and store.peek("s0") is None and store.peek("s4") is not None
    now[0] = 11
    store.put({"state": "fresh"}, BROWSER)
    assert len(store) == 1


def test_id_token_for_another_application_is_refused(entra_env: Settings, standin: OidcStandIn) -> None:
    standin.audience_override = "someone-else"
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    with pytest.raises(LoginError, match="another application"):
        auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, BROWSER, store=store)


def test_expired_id_token_is_refused(entra_env: Settings, standin: OidcStandIn) -> None:
    standin.expires_in_s = -3600
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    with pytest.raises(LoginError, match="expired"):
        auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, BROWSER, store=store)


def test_pkce_verifier_is_sent_and_checked(entra_env: Settings, standin: OidcStandIn) -> None:
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    answer = browser_visit(standin, flow["auth_uri"])
    store.pop(flow["state"], BROWSER)
    store.put({**flow, "code_verifier": "x" * 43}, BROWSER)  # as if an attacker had only the code, not the verifier
    with pytest.raises(LoginError, match="PKCE"):
        auth_flow.finish_login(answer, entra_env, BROWSER, store=store)


def test_provider_error_is_shown(entra_env: Settings) -> None:
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    answer = {"error": "access_denied", "error_description": "the user declined", "state": flow["state"]}
    with pytest.raises(LoginError, match="the user declined"):
        auth_flow.finish_login(answer, entra_env, BROWSER, store=store)


def test_role_names_are_settings() -> None:
    settings = Settings(entra_client_id="c", entra_role_viewer="Look", entra_role_operator="Turn")
    user = auth_flow.user_from_claims({"name": "N", "preferred_username": "n@x", "roles": ["Turn"]}, settings)
    assert user.is_operator
    default_names = auth_flow.user_from_claims({"preferred_username": "n@x", "roles": [ROLE_OPERATOR]}, settings)
    assert default_names.roles == frozenset() and default_names.name == "n@x"


def test_identity_provider_ca_is_exactly_the_configured_bundle(tmp_path: Path) -> None:
    assert auth_flow.http_client(Settings()) is None  # production: MSAL's default verification
    session = auth_flow.http_client(Settings(entra_ca_bundle=tmp_path / "ca.pem"))
    assert session is not None
    assert session.trust_env is False  # else REQUESTS_CA_BUNDLE would override verify
    assert session.verify == str(tmp_path / "ca.pem")


def test_authority_from_tenant_and_redirect_uri() -> None:
    settings = Settings(entra_client_id="c", entra_tenant_id="contoso.onmicrosoft.com", app_host="127.0.0.1",
                        app_port=8501)
    assert auth_flow.authority_url(settings) == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert auth_flow.discovery_url(auth_flow.authority_url(settings)) == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration")
    assert auth_flow.provider_name(settings) == "Microsoft"
    assert auth_flow.is_configured(settings)
    assert not auth_flow.is_configured(Settings(entra_tenant_id="contoso.onmicrosoft.com"))
    assert auth_flow.redirect_uri(Settings(app_host="127.0.0.1", app_port=8600)) == "http://127.0.0.1:8600/"


# --- browser binding, redirect URI, issuer, tenant (items 7, 8 and the OIDC list of issue 13) --------------


def test_a_return_link_opened_in_another_browser_is_refused(entra_env: Settings, standin: OidcStandIn) -> None:
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    answer = browser_visit(standin, flow["auth_uri"])
    for other in ("", "cookie-of-another-browser"):
        store.put(flow, BROWSER)  # put back: the refusal used it up
        with pytest.raises(LoginError, match="started in another browser"):
            auth_flow.finish_login(answer, entra_env, other, store=store)
    assert standin.token_requests == []  # the code was never redeemed
    assert len(store) == 0


@pytest.mark.parametrize(("uri", "accepted"), [
    ("https://thermolog.example/", True), ("http://127.0.0.1:8501/", True), ("http://localhost:8501/", True),
    ("http://[::1]:8501/", True), ("http://thermolog.example/", False), ("http://192.168.1.20:8501/", False),
])
def test_redirect_uri_must_be_https_unless_loopback(uri: str, accepted: bool) -> None:
    settings = Settings(entra_client_id="c", entra_tenant_id="t", entra_redirect_uri=uri)
    if accepted:
        assert auth_flow.redirect_uri(settings) == uri
    else:
        with pytest.raises(LoginError, match="must use https"):
            auth_flow.redirect_uri(settings)


def test_id_token_from_another_issuer_is_refused(entra_env: Settings, standin: OidcStandIn) -> None:
    standin.issuer_override = "https://127.0.0.1:1/someone-else"
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    with pytest.raises(LoginError, match="issued by https://127.0.0.1:1/someone-else"):
        auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, BROWSER, store=store)


def test_issuer_check_pins_the_tenant_of_a_multi_tenant_issuer() -> None:
    settings = Settings(entra_client_id="c")
    issuer = "https://login.microsoftonline.com/{tenantid}/v2.0"
    claims = {"iss": "https://login.microsoftonline.com/t-1/v2.0", "tid": "t-1", "aud": "c", "exp": 2e9}
    auth_flow.check_claims(claims, settings, issuer, now=1e9)
    with pytest.raises(LoginError, match="issued by"):
        auth_flow.check_claims({**claims, "tid": "t-2"}, settings, issuer, now=1e9)


def test_multi_tenant_authority_is_refused_unless_allowed() -> None:
    for tenant in ("common", "organizations", "consumers"):
        settings = Settings(entra_client_id="c", entra_tenant_id=tenant)
        with pytest.raises(LoginError, match="multi-tenant.*THERMOLOG_ENTRA_ALLOW_MULTI_TENANT"):
            auth_flow.provider(settings)  # refused before anything is fetched
        assert auth_flow.authority_problem(auth_flow.authority_url(settings), allow_multi_tenant=True) is None
    template = "https://login.microsoftonline.com/{tenantid}/v2.0"
    assert "multi-tenant" in auth_flow.issuer_problem("https://idp.example/x", template, allow_multi_tenant=False)
    assert auth_flow.issuer_problem("https://login.microsoftonline.com/common", template, True) is None


def test_http_authority_names_the_misconfiguration(entra_env: Settings) -> None:
    settings = entra_env.model_copy(update={"entra_authority": "http://127.0.0.1:9/realm"})
    with pytest.raises(LoginError, match="is not an https URL") as refused:
        auth_flow.provider(settings)
    assert "cannot be reached" not in str(refused.value)


def test_provider_error_without_state_is_reported(entra_env: Settings) -> None:
    answer = {"error": "invalid_request", "error_description": "redirect_uri is not registered"}
    assert auth_flow.is_callback(answer)
    with pytest.raises(LoginError, match="reported an error: redirect_uri is not registered"):
        auth_flow.finish_login(answer, entra_env, "", store=PendingFlows(ttl_s=60))


def test_sign_out_url_comes_from_the_discovery_document_with_the_id_token_hint(entra_env: Settings,
                                                                              standin: OidcStandIn) -> None:
    url = urlparse(auth_flow.logout_url(entra_env, "the.id.token"))
    assert f"{url.scheme}://{url.netloc}{url.path}" == standin.discovery()["end_session_endpoint"]
    assert parse_qs(url.query) == {"id_token_hint": ["the.id.token"], "post_logout_redirect_uri": [REDIRECT],
                                   "client_id": [CLIENT_ID]}
    assert auth_flow.provider_name(entra_env) == f"127.0.0.1:{standin.port}"


def test_sign_in_and_refusals_are_logged_without_tokens(entra_env: Settings, standin: OidcStandIn,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app")
    store = PendingFlows(ttl_s=60)
    standin.next_identity = OPERATOR
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    signed_in = auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, BROWSER, store=store)
    with pytest.raises(LoginError):
        auth_flow.finish_login({"error": "access_denied", "error_description": "x\nforged line"}, entra_env, "",
                               store=store)
    text = caplog.text
    assert "event=sign_in user=olivia@example.test roles=Thermostat.Operator,Thermostat.Viewer" in text
    assert "event=sign_in_refused reason=the identity provider reported an error: x forged line" in text
    for secret in (signed_in.refresh_token, signed_in.id_token, CLIENT_SECRET, flow["code_verifier"]):
        assert secret and secret not in text


def test_roles_are_asked_again_with_the_refresh_token(entra_env: Settings, standin: OidcStandIn) -> None:
    standin.next_identity = OPERATOR
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, BROWSER, store=store)
    signed_in = auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, BROWSER, store=store)
    assert signed_in.user.is_operator and signed_in.refresh_token
    standin.set_roles(OPERATOR.preferred_username, ["Thermostat.Viewer"])
    again = auth_flow.refresh(signed_in, entra_env)
    assert again.user.is_viewer and not again.user.is_operator
    assert again.refresh_token != signed_in.refresh_token  # the provider rotated it
    standin.disable(OPERATOR.preferred_username)
    with pytest.raises(LoginError, match="no longer accepts"):
        auth_flow.refresh(again, entra_env)


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


def http_app() -> Starlette:
    """The sign-in routes and middleware in front of a stand-in for Streamlit's page."""
    async def page(_request: object) -> PlainTextResponse:
        return PlainTextResponse("the Streamlit page")

    return Starlette(routes=[*auth_routes.ROUTES, Route("/", page)], middleware=[Middleware(SignInGate)])


def sign_in_over_http(client: TestClient, standin: OidcStandIn, identity: Identity) -> dict[str, str]:
    """A browser's round trip: the sign-in route, the provider, the answer on the redirect URI; its query."""
    standin.next_identity = identity
    started = client.get("/auth/sign-in")
    assert started.status_code == 303, started.text
    binding = started.headers["set-cookie"]
    assert f"{sessions.BINDING_COOKIE}=" in binding and "HttpOnly" in binding and "samesite=lax" in binding.lower()
    return browser_visit(standin, started.headers["location"])


def test_http_round_trip_sets_a_session_cookie_for_the_browser_that_started(entra_env: Settings,
                                                                            standin: OidcStandIn) -> None:
    with TestClient(http_app(), base_url=REDIRECT.rstrip("/"), follow_redirects=False) as browser:
        answer = sign_in_over_http(browser, standin, OPERATOR)
        back = browser.get("/", params=answer)
        assert back.status_code == 303 and back.headers["location"] == "/"  # the code leaves the address bar
        cookie = browser.cookies.get(sessions.SESSION_COOKIE)
        assert "HttpOnly" in back.headers["set-cookie"] and f"Max-Age={8 * 3600}" in back.headers["set-cookie"]
        session = sessions.session_store(entra_env.entra_session_ttl_s).get(cookie)
        assert session is not None and session.sign_in.user.name == "Olivia Operator"
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
    assert f"Sign in with 127.0.0.1:{standin.port}" in page_text(at)


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
    assert f"Sign out at 127.0.0.1:{standin.port} as well" in page_text(at)
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
