"""Sign-in without Streamlit: the MSAL flow with PKCE against the OIDC stand-in, browser binding, issuer, tenant and
provider checks, role re-checks, logging."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from app import auth_flow
from app.auth_flow import LoginError, PendingFlows
from app.roles import ROLE_OPERATOR, ROLE_VIEWER
from tests.app.auth_support import (
    BROWSER,
    OPERATOR,
    REDIRECT,
    VIEWER,
    browser_visit,
)
from tests.oidc_standin import CLIENT_ID, CLIENT_SECRET, OidcStandIn
from thermolog.settings import Settings

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
    assert auth_flow.provider_name(entra_env) == "127.0.0.1"


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
