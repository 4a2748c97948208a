"""Sign-in with Microsoft Entra ID (or any OpenID Connect authority) through MSAL, without Streamlit.

Authorization-code flow with PKCE: ``start_login`` builds the sign-in URL and parks the pending flow in a
server-side store keyed by its ``state``; ``finish_login`` takes the query parameters the browser brings back,
finds the flow, redeems the code and returns the signed-in ``User``.

Why server-side: Streamlit opens a new session when the browser comes back from the identity provider, so
nothing kept in ``st.session_state`` survives the round trip. The store lives in this module (one per app
process, shared by every session), and a flow is used at most once and only within ``entra_flow_ttl_s``.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import msal
import requests

from app.roles import ROLE_OPERATOR, ROLE_VIEWER, User
from thermolog.settings import Settings

log = logging.getLogger(__name__)

ENTRA_HOST = "https://login.microsoftonline.com"
MAX_PENDING = 10_000  # anonymous visitors start flows; bound the memory they can take
CLOCK_SKEW_S = 120


class LoginError(RuntimeError):
    """The sign-in was refused; the message is safe to show to the user."""


def authority_url(settings: Settings) -> str:
    """The OIDC authority: ``entra_authority`` if set, else the Entra authority of ``entra_tenant_id``."""
    if settings.entra_authority:
        return settings.entra_authority.rstrip("/")
    if settings.entra_tenant_id:
        return f"{ENTRA_HOST}/{settings.entra_tenant_id}"
    return ""


def is_configured(settings: Settings) -> bool:
    """True when sign-in is set up (client id and an authority or tenant); otherwise the app runs in local mode."""
    return bool(settings.entra_client_id and authority_url(settings))


def redirect_uri(settings: Settings) -> str:
    """Where the identity provider sends the browser back: the app's root page."""
    return settings.entra_redirect_uri or f"http://{settings.app_host}:{settings.app_port}/"


def logout_url(settings: Settings) -> str:
    """Where Sign out sends the browser: the configured URL, the Entra logout endpoint, or '' (stay in the app)."""
    if settings.entra_logout_url:
        return settings.entra_logout_url
    authority = authority_url(settings)
    if authority.startswith(ENTRA_HOST + "/"):
        return f"{authority}/oauth2/v2.0/logout?{urlencode({'post_logout_redirect_uri': redirect_uri(settings)})}"
    return ""


@dataclass
class _Pending:
    flow: dict[str, Any]
    created: float


class PendingFlows:
    """Started sign-ins keyed by ``state``: shared by all sessions, used once, expiring after ``ttl_s``."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic,
                 max_pending: int = MAX_PENDING) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._max = max_pending
        self._flows: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._flows)

    def put(self, flow: dict[str, Any]) -> None:
        """Park a flow from ``initiate_auth_code_flow`` until the browser returns."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            while len(self._flows) >= self._max:  # oldest first: dicts keep insertion order
                self._flows.pop(next(iter(self._flows)))
            self._flows[flow["state"]] = _Pending(flow, now)

    def peek(self, state: str) -> dict[str, Any] | None:
        """The flow for ``state`` if it is still pending and fresh, without using it up."""
        now = self._clock()
        with self._lock:
            pending = self._flows.get(state)
            if pending is None or now - pending.created > self.ttl_s:
                return None
            return pending.flow

    def pop(self, state: str) -> dict[str, Any]:
        """Take the flow for ``state`` out of the store; raise LoginError if unknown, used or expired."""
        now = self._clock()
        with self._lock:
            pending = self._flows.pop(state, None)
        if pending is None:
            raise LoginError("this sign-in link is unknown or was already used; please sign in again")
        if now - pending.created > self.ttl_s:
            raise LoginError(f"the sign-in took longer than {self.ttl_s:.0f} s and expired; please sign in again")
        return pending.flow

    def _prune(self, now: float) -> None:
        for state in [s for s, p in self._flows.items() if now - p.created > self.ttl_s]:
            del self._flows[state]


class _NoTokenCache(msal.TokenCache):
    """Keeps nothing: the app needs the ID token's claims once, not tokens of every user who ever signed in."""

    def add(self, event: dict[str, Any], now: float | None = None) -> None:
        return None


_store_lock = threading.Lock()
_stores: dict[float, PendingFlows] = {}
_apps: dict[tuple[str, str, str], msal.ConfidentialClientApplication] = {}


def pending_flows(settings: Settings) -> PendingFlows:
    """The process-wide store of pending sign-ins (one per configured TTL)."""
    with _store_lock:
        store = _stores.get(settings.entra_flow_ttl_s)
        if store is None:
            store = _stores[settings.entra_flow_ttl_s] = PendingFlows(settings.entra_flow_ttl_s)
        return store


def http_client(settings: Settings) -> requests.Session | None:
    """The HTTP session MSAL talks to the identity provider with, or None for MSAL's default.

    With ``entra_ca_bundle`` set, the session trusts exactly that bundle; ``trust_env`` is off because
    ``REQUESTS_CA_BUNDLE`` in the environment would otherwise override ``verify``.
    """
    if settings.entra_ca_bundle is None:
        return None
    session = requests.Session()
    session.trust_env = False
    session.verify = str(settings.entra_ca_bundle)
    return session


def msal_app(settings: Settings) -> msal.ConfidentialClientApplication:
    """The MSAL confidential client for these settings, built once per process (it fetches the OIDC metadata)."""
    authority = authority_url(settings)
    key = (authority, settings.entra_client_id, str(settings.entra_ca_bundle or ""))
    with _store_lock:
        app = _apps.get(key)
        if app is None:
            kwargs: dict[str, Any] = {
                "client_credential": settings.entra_client_secret,
                "http_client": http_client(settings),
                "token_cache": _NoTokenCache(),
            }
            if authority.startswith(ENTRA_HOST + "/"):
                kwargs["authority"] = authority
            else:
                kwargs["oidc_authority"] = authority
            try:  # fetches the provider's OpenID configuration
                app = msal.ConfidentialClientApplication(settings.entra_client_id, **kwargs)
            except (ValueError, OSError) as exc:  # requests' errors are OSErrors
                log.error("identity provider %s unavailable: %s", authority, exc)
                raise LoginError(f"the identity provider {authority} cannot be reached right now; "
                                 "try again in a minute or tell an administrator") from None
            _apps[key] = app
        return app


def start_login(settings: Settings, app: msal.ConfidentialClientApplication | None = None,
                store: PendingFlows | None = None) -> dict[str, Any]:
    """Begin a sign-in: return the flow (``auth_uri`` to send the browser to, ``state``) and park it server-side."""
    app = msal_app(settings) if app is None else app
    store = pending_flows(settings) if store is None else store  # an empty store is falsy
    with warnings.catch_warnings():
        # MSAL recommends response_mode=form_post, but a Streamlit page can only read the query string.
        warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended")
        flow = app.initiate_auth_code_flow(scopes=[], redirect_uri=redirect_uri(settings), response_mode="query")
    store.put(flow)
    log.info("sign-in started (state %s…)", flow["state"][:6])
    return flow


def is_callback(params: Mapping[str, Any]) -> bool:
    """True when these query parameters are the identity provider's answer to a sign-in."""
    return "state" in params and ("code" in params or "error" in params)


def finish_login(params: Mapping[str, Any], settings: Settings, app: msal.ConfidentialClientApplication | None = None,
                 store: PendingFlows | None = None) -> User:
    """Complete a sign-in from the returned query parameters; raise LoginError when anything is off."""
    app = msal_app(settings) if app is None else app
    store = pending_flows(settings) if store is None else store  # an empty store is falsy
    response = {key: _single(value) for key, value in params.items()}
    flow = store.pop(str(response.get("state", "")))
    if response.get("error"):
        raise LoginError(f"the identity provider refused the sign-in: "
                         f"{response.get('error_description') or response['error']}")
    try:
        result = app.acquire_token_by_auth_code_flow(flow, response)
    except (ValueError, RuntimeError) as exc:  # MSAL raises these for a state or nonce mismatch
        log.warning("sign-in refused: %s", exc)
        raise LoginError(f"sign-in refused: {exc}") from None
    if "error" in result:
        log.warning("token request refused: %s %s", result.get("error"), result.get("error_description"))
        reason = result.get("error_description") or result["error"]
        raise LoginError(f"sign-in refused by the identity provider: {reason}")
    claims = result.get("id_token_claims") or {}
    check_claims(claims, settings)
    user = user_from_claims(claims, settings)
    log.info("signed in %s with roles %s", user.username, sorted(user.roles))
    return user


def check_claims(claims: Mapping[str, Any], settings: Settings, now: float | None = None) -> None:
    """Refuse an ID token meant for another app or already expired (MSAL leaves these checks to the app).

    The signature is not checked: the token came straight from the token endpoint over verified TLS.
    """
    if not claims:
        raise LoginError("sign-in refused: the identity provider returned no ID token")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if settings.entra_client_id not in audiences:
        raise LoginError("sign-in refused: the ID token was issued for another application")
    now = time.time() if now is None else now
    if now - CLOCK_SKEW_S > float(claims.get("exp", 0)):
        raise LoginError("sign-in refused: the ID token has expired")


def user_from_claims(claims: Mapping[str, Any], settings: Settings) -> User:
    """The app's User from ID token claims; token role names (settings) map onto the app's two roles."""
    granted = set(claims.get("roles") or [])
    roles = set()
    if settings.entra_role_viewer in granted:
        roles.add(ROLE_VIEWER)
    if settings.entra_role_operator in granted:
        roles.add(ROLE_OPERATOR)
    username = str(claims.get("preferred_username") or claims.get("upn") or claims.get("email") or claims.get("sub"))
    name = str(claims.get("name") or username)
    return User(name=name, username=username, roles=frozenset(roles))


def _single(value: Any) -> str:
    """Query parameters may come as lists; the OAuth answer has one value per key."""
    if isinstance(value, list | tuple):
        return str(value[0]) if value else ""
    return str(value)
