"""Sign-in: the real MSAL authorization-code flow with PKCE against a loopback OIDC stand-in, and local mode."""

from __future__ import annotations

import argparse
import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from streamlit.testing.v1 import AppTest

from app import auth_flow
from app.auth import LOCAL_BANNER, USER_KEY, InsecureBind, check_bind
from app.auth_flow import LoginError, PendingFlows
from app.roles import LOCAL_USER, ROLE_OPERATOR, ROLE_VIEWER
from tests.conftest import free_port
from tests.oidc_standin import CLIENT_ID, CLIENT_SECRET, Identity, OidcStandIn
from tests.telemetry_db import build_db, readings
from thermolog import settings as settings_module
from thermolog.settings import Settings

OPERATOR = Identity(name="Olivia Operator", preferred_username="olivia@example.test",
                    roles=["Thermostat.Viewer", "Thermostat.Operator"])
VIEWER = Identity(name="Vera Viewer", preferred_username="vera@example.test", roles=["Thermostat.Viewer"])
REDIRECT = "http://127.0.0.1:8599/"
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
        "THERMOLOG_ENTRA_LOGOUT_URL": f"{standin.authority}/logout",
    }
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
    flow = auth_flow.start_login(entra_env, store=store)
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
    flow = auth_flow.start_login(entra_env, store=store)
    user = auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, store=store)
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
        flow = auth_flow.start_login(entra_env, store=store)
        auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, store=store)
    assert auth_flow.msal_app(entra_env).get_accounts() == []


def test_viewer_is_signed_in_but_may_not_send(entra_env: Settings, standin: OidcStandIn) -> None:
    standin.next_identity = VIEWER
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, store=store)
    user = auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, store=store)
    assert user.name == "Vera Viewer"
    assert user.is_viewer
    assert not user.is_operator


def test_wrong_state_is_refused_before_any_token_request(entra_env: Settings, standin: OidcStandIn) -> None:
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, store=store)
    answer = browser_visit(standin, flow["auth_uri"])
    answer["state"] = "forged-" + answer["state"]
    with pytest.raises(LoginError, match="unknown or was already used"):
        auth_flow.finish_login(answer, entra_env, store=store)
    assert standin.token_requests == []


def test_a_sign_in_answer_is_used_once(entra_env: Settings, standin: OidcStandIn) -> None:
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, store=store)
    answer = browser_visit(standin, flow["auth_uri"])
    auth_flow.finish_login(answer, entra_env, store=store)
    with pytest.raises(LoginError, match="already used"):
        auth_flow.finish_login(answer, entra_env, store=store)


def test_wrong_nonce_is_refused(entra_env: Settings, standin: OidcStandIn) -> None:
    standin.nonce_override = "0" * 64
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, store=store)
    with pytest.raises(LoginError, match="nonce"):
        auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, store=store)


def test_expired_pending_flow_is_refused(entra_env: Settings, standin: OidcStandIn) -> None:
    now = [1000.0]
    store = PendingFlows(ttl_s=300, clock=lambda: now[0])
    flow = auth_flow.start_login(entra_env, store=store)
    answer = browser_visit(standin, flow["auth_uri"])
    now[0] += 301
    assert store.peek(flow["state"]) is None
    with pytest.raises(LoginError, match="expired"):
        auth_flow.finish_login(answer, entra_env, store=store)
    assert standin.token_requests == []


def test_expired_flows_are_pruned_and_the_store_is_bounded() -> None:
    now = [0.0]
    store = PendingFlows(ttl_s=10, clock=lambda: now[0], max_pending=3)
    for index in range(5):
        store.put({"state": f"s{index}"})
    assert len(store) == 3 and store.peek("s0") is None and store.peek("s4") is not None
    now[0] = 11
    store.put({"state": "fresh"})
    assert len(store) == 1


def test_id_token_for_another_application_is_refused(entra_env: Settings, standin: OidcStandIn) -> None:
    standin.audience_override = "someone-else"
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, store=store)
    with pytest.raises(LoginError, match="another application"):
        auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, store=store)


def test_expired_id_token_is_refused(entra_env: Settings, standin: OidcStandIn) -> None:
    standin.expires_in_s = -3600
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, store=store)
    with pytest.raises(LoginError, match="expired"):
        auth_flow.finish_login(browser_visit(standin, flow["auth_uri"]), entra_env, store=store)


def test_pkce_verifier_is_sent_and_checked(entra_env: Settings, standin: OidcStandIn) -> None:
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, store=store)
    answer = browser_visit(standin, flow["auth_uri"])
    store.pop(flow["state"])
    store.put({**flow, "code_verifier": "x" * 43})  # as if an attacker had only the code, not the verifier
    with pytest.raises(LoginError, match="PKCE"):
        auth_flow.finish_login(answer, entra_env, store=store)


def test_provider_error_is_shown(entra_env: Settings) -> None:
    store = PendingFlows(ttl_s=60)
    flow = auth_flow.start_login(entra_env, store=store)
    answer = {"error": "access_denied", "error_description": "the user declined", "state": flow["state"]}
    with pytest.raises(LoginError, match="the user declined"):
        auth_flow.finish_login(answer, entra_env, store=store)


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


def test_authority_from_tenant_and_entra_logout() -> None:
    settings = Settings(entra_client_id="c", entra_tenant_id="contoso.onmicrosoft.com", app_host="127.0.0.1",
                        app_port=8501)
    assert auth_flow.authority_url(settings) == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert auth_flow.logout_url(settings) == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/logout"
        "?post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A8501%2F")
    assert auth_flow.is_configured(settings)
    assert not auth_flow.is_configured(Settings(entra_tenant_id="contoso.onmicrosoft.com"))
    assert auth_flow.redirect_uri(Settings(app_host="127.0.0.1", app_port=8600)) == "http://127.0.0.1:8600/"


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


# --- the Streamlit side (AppTest) --------------------------------------------------------------------------


def sign_in_link(at: AppTest) -> str:
    """The href of the sign-in button on the page."""
    for block in at.markdown:
        found = re.search(r'href="([^"]+)"', block.value)
        if found:
            return html.unescape(found.group(1))
    raise AssertionError("no sign-in link on the page")


def page_text(at: AppTest) -> str:
    return "\n".join(str(element.value) for element in [*at.markdown, *at.error, *at.warning, *at.success,
                                                         *at.caption])


def signed_in_page(standin: OidcStandIn, identity: Identity) -> AppTest:
    """Visit the app, follow its sign-in link, and come back in a new session as a browser would."""
    standin.next_identity = identity
    first = AppTest.from_string(PAGE).run(timeout=20)
    answer = browser_visit(standin, sign_in_link(first))
    back = AppTest.from_string(PAGE)
    back.query_params.update(answer)
    return back.run(timeout=20)


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


def test_unauthenticated_visitor_sees_only_the_sign_in_link(entra_env: Settings, standin: OidcStandIn) -> None:
    at = AppTest.from_string(PAGE).run(timeout=20)
    assert not at.exception
    assert USER_KEY not in at.session_state
    assert "signed in as" not in page_text(at)
    assert len(at.button) == 0
    assert sign_in_link(at).startswith(f"{standin.authority}/authorize?")
    # A rerun in the same session reuses its pending sign-in instead of piling up new ones.
    link = sign_in_link(at)
    assert sign_in_link(at.run(timeout=20)) == link


def test_returning_operator_is_signed_in_in_a_new_session(entra_env: Settings, standin: OidcStandIn) -> None:
    at = signed_in_page(standin, OPERATOR)
    assert not at.exception
    user = at.session_state[USER_KEY]
    assert user.name == "Olivia Operator" and user.is_operator
    assert "signed in as Olivia Operator" in page_text(at)
    assert "**Olivia Operator**" in page_text(at)  # the sidebar account area
    assert at.button(key="thermolog.sign_out") is not None
    send = [b for b in at.button if b.label == "Send setpoint"]
    assert send and not send[0].disabled
    assert at.query_params == {}  # the single-use code does not stay in the address bar


def test_returning_viewer_may_not_send(entra_env: Settings, standin: OidcStandIn) -> None:
    at = signed_in_page(standin, VIEWER)
    assert not at.exception
    assert at.session_state[USER_KEY].is_operator is False
    send = [b for b in at.button if b.label == "Send setpoint"]
    assert send and send[0].disabled


def test_user_without_a_role_is_stopped(entra_env: Settings, standin: OidcStandIn) -> None:
    at = signed_in_page(standin, Identity(name="Nina Norole", preferred_username="nina@example.test", roles=[]))
    assert not at.exception
    assert "has no thermolog role" in page_text(at)
    assert "signed in as" not in page_text(at)


def test_unreachable_identity_provider_is_explained(entra_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THERMOLOG_ENTRA_AUTHORITY", f"https://127.0.0.1:{free_port()}/nobody-listens")
    settings_module.get_settings.cache_clear()
    at = AppTest.from_string(PAGE).run(timeout=30)
    assert not at.exception
    assert any("cannot be reached" in e.value for e in at.error)
    assert "signed in as" not in page_text(at)
    assert not any('href="' in m.value for m in at.markdown)


def test_forged_state_shows_an_error_and_no_user(entra_env: Settings, standin: OidcStandIn) -> None:
    first = AppTest.from_string(PAGE).run(timeout=20)
    answer = browser_visit(standin, sign_in_link(first))
    back = AppTest.from_string(PAGE)
    back.query_params.update({**answer, "state": "forged"})
    back.run(timeout=20)
    assert not back.exception
    assert USER_KEY not in back.session_state
    assert any("unknown or was already used" in e.value for e in back.error)
    assert sign_in_link(back).startswith(f"{standin.authority}/authorize?")


def test_sign_out_clears_the_session_and_links_to_the_provider_logout(entra_env: Settings,
                                                                      standin: OidcStandIn) -> None:
    at = signed_in_page(standin, OPERATOR)
    at.session_state["thermolog.some_page_state"] = "kept until sign-out"
    at.button(key="thermolog.sign_out").click().run(timeout=20)
    assert not at.exception
    assert USER_KEY not in at.session_state
    assert "thermolog.some_page_state" not in at.session_state
    assert "You are signed out." in page_text(at)
    assert f"({standin.authority}/logout)" in page_text(at)
    assert "signed in as" not in page_text(at)


# --- the real dashboard: the Control page after a real sign-in ---------------------------------------------


def dashboard_after_sign_in(standin: OidcStandIn, identity: Identity, tmp_path: Path) -> AppTest:
    """The dashboard's entrypoint, signed in through the stand-in, switched to the Control page."""
    (tmp_path / "data").mkdir()  # the default THERMOLOG_DB_PATH, relative to the test's working directory
    build_db(tmp_path / "data" / "thermolog.duckdb",
             [readings("dev-1", datetime.now(UTC) - timedelta(minutes=10), 60, 10.0)])
    standin.next_identity = identity
    first = AppTest.from_file(ENTRYPOINT, default_timeout=60).run()
    answer = browser_visit(standin, sign_in_link(first))
    at = AppTest.from_file(ENTRYPOINT, default_timeout=60)
    at.query_params.update(answer)
    at.run()
    assert at.session_state[USER_KEY].name == identity.name
    return at.switch_page("views/control.py").run()


def test_signed_in_viewer_gets_no_send_on_the_control_page(entra_env: Settings, standin: OidcStandIn,
                                                            tmp_path: Path) -> None:
    at = dashboard_after_sign_in(standin, VIEWER, tmp_path)
    assert not at.exception
    assert any("Only operators can change setpoints" in i.value for i in at.info)
    assert [b.label for b in at.button if b.label == "Send"] == []
    assert len(at.text_input) == 0


def test_signed_in_operator_gets_the_setpoint_form(entra_env: Settings, standin: OidcStandIn,
                                                   tmp_path: Path) -> None:
    at = dashboard_after_sign_in(standin, OPERATOR, tmp_path)
    assert not at.exception
    assert [b.label for b in at.button if b.label == "Send"] == ["Send"]
    assert len(at.text_input) == 1
