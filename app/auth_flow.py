"""Sign-in with Microsoft Entra ID (or any OpenID Connect authority) through MSAL, without Streamlit.

Authorization-code flow with PKCE: ``start_login`` builds the sign-in URL and parks the pending flow in a
server-side store keyed by its ``state`` together with a digest of a random value the browser keeps in a cookie
(``app.auth_routes`` sets it); ``finish_login`` takes the query parameters the browser brings back, finds the flow,
refuses it unless the same browser (cookie) returns, redeems the code and returns a ``SignIn``: the ``User`` plus
the refresh token and ID token the server-side session keeps for role re-checks and sign-out.

The provider is checked once per process (``provider``): the authority must be https with a path (MSAL's rule),
its discovery document must answer, its ``issuer`` must be the authority, and a multi-tenant authority is refused
unless ``entra_allow_multi_tenant``. ID tokens must carry that issuer (and, multi-tenant, an allowed ``tid``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlparse

import msal
import requests

from app.plain_text import cut
from app.roles import ROLE_OPERATOR, ROLE_VIEWER, User
from thermolog.settings import Settings

log = logging.getLogger(__name__)

ENTRA_HOST = "https://login.microsoftonline.com"
MAX_PENDING = 10_000  # anonymous visitors start flows; bound the memory they can take
CLOCK_SKEW_S = 120
MULTI_TENANT = frozenset({"common", "organizations", "consumers"})
TENANT_PLACEHOLDER = "{tenantid}"
DISCOVERY_TIMEOUT_S = 10


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


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost (names that never leave this machine)."""
    if not host:
        return False
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_host(header: str | None) -> bool:
    """Whether an HTTP Host header (port allowed) names this machine by a loopback name or address."""
    try:
        return is_loopback(urlparse(f"//{header}").hostname) if header else False
    except ValueError:
        return False


def redirect_uri(settings: Settings) -> str:
    """Where the identity provider sends the browser back: the app's root page.

    Raises LoginError unless it is https or points at a loopback host (a code sent over plain http elsewhere
    could be read on the way).
    """
    uri = settings.entra_redirect_uri or f"http://{settings.app_host}:{settings.app_port}/"
    parsed = urlparse(uri)
    if parsed.scheme != "https" and not (parsed.scheme == "http" and is_loopback(parsed.hostname)):
        raise LoginError(f"the sign-in return address {uri} must use https (plain http only for 127.0.0.1 or "
                         "localhost): set THERMOLOG_ENTRA_REDIRECT_URI to the app's https address")
    return uri


def logout_url(settings: Settings, id_token: str = "") -> str:
    """Where to end the session at the identity provider too, or '' when it has no such endpoint.

    ``entra_logout_url`` if set, else the discovery document's ``end_session_endpoint``, with ``id_token_hint``
    (so the provider knows whom to sign out without asking) and ``post_logout_redirect_uri`` (back to the app).
    """
    if settings.entra_logout_url:
        base = settings.entra_logout_url
    else:
        try:
            base = provider(settings).end_session_endpoint
        except LoginError:
            return ""
    if not base:
        return ""
    query = {"post_logout_redirect_uri": redirect_uri(settings), "client_id": settings.entra_client_id}
    if id_token:
        query["id_token_hint"] = id_token
    return f"{base}{'&' if '?' in base else '?'}{urlencode(query)}"


def provider_name(settings: Settings) -> str:
    """How the sign-in page names the identity provider: Microsoft for Entra ID, else the authority's host name."""
    authority = authority_url(settings)
    if authority.startswith(ENTRA_HOST + "/"):
        return "Microsoft"
    return urlparse(authority).hostname or "the identity provider"


@dataclass
class _Pending:
    flow: dict[str, Any]
    created: float
    browser: str  # sha256 of the value in the starting browser's cookie


def browser_digest(value: str) -> str:
    """What the store keeps of a browser's binding cookie (never the value itself)."""
    return hashlib.sha256(value.encode()).hexdigest()


class PendingFlows:
    """Started sign-ins keyed by ``state``: shared by all sessions, used once, expiring after ``ttl_s``, and bound
    to the browser that started them."""

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

    def put(self, flow: dict[str, Any], browser: str) -> None:
        """Park a flow from ``initiate_auth_code_flow`` until the browser with cookie value ``browser`` returns."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            while len(self._flows) >= self._max:  # oldest first: dicts keep insertion order
                self._flows.pop(next(iter(self._flows)))
            self._flows[flow["state"]] = _Pending(flow, now, browser_digest(browser))

    def peek(self, state: str) -> dict[str, Any] | None:
        """The flow for ``state`` if it is still pending and fresh, without using it up."""
        now = self._clock()
        with self._lock:
            pending = self._flows.get(state)
            if pending is None or now - pending.created > self.ttl_s:
                return None
            return pending.flow

    def pop(self, state: str, browser: str) -> dict[str, Any]:
        """Take the flow for ``state`` out of the store; raise LoginError if unknown, used, expired, or started by
        another browser (``browser`` is the returning browser's cookie value, '' when it has none)."""
        now = self._clock()
        with self._lock:
            pending = self._flows.pop(state, None)
        if pending is None:
            raise LoginError("this sign-in link is unknown or was already used; please sign in again")
        if now - pending.created > self.ttl_s:
            raise LoginError(f"the sign-in took longer than {self.ttl_s:.0f} s and expired; please sign in again")
        if not hmac.compare_digest(pending.browser, browser_digest(browser)):
            raise LoginError("this sign-in was started in another browser (or its cookie is gone); "
                             "please sign in again here")
        return pending.flow

    def _prune(self, now: float) -> None:
        for state in [s for s, p in self._flows.items() if now - p.created > self.ttl_s]:
            del self._flows[state]


class _NoTokenCache(msal.TokenCache):
    """Keeps nothing: each sign-in's tokens live only in its own server-side session (``app.sessions``)."""

    def add(self, event: dict[str, Any], now: float | None = None) -> None:
        return None


_store_lock = threading.Lock()
_stores: dict[float, PendingFlows] = {}
_providers: dict[tuple[str, str, str, bool], Provider] = {}


@dataclass(frozen=True)
class Provider:
    """The identity provider as checked at first use: MSAL's client and what the discovery document says."""

    app: msal.ConfidentialClientApplication
    issuer: str  # may hold {tenantid} for a multi-tenant Entra authority (only when allowed)
    end_session_endpoint: str


@dataclass(frozen=True)
class SignIn:
    """A completed sign-in: who, and the tokens the server-side session keeps (never sent to the browser)."""

    user: User
    refresh_token: str
    id_token: str


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


def authority_problem(authority: str, allow_multi_tenant: bool) -> str | None:
    """What is wrong with an authority URL before anything is fetched, or None."""
    parsed = urlparse(authority)
    if parsed.scheme != "https" or not parsed.hostname:
        return (f"the sign-in authority {authority} is not an https URL: MSAL talks to identity providers over "
                "https only; set THERMOLOG_ENTRA_AUTHORITY to the provider's https issuer URL")
    if not parsed.path.strip("/"):
        return (f"the sign-in authority {authority} has no path: MSAL needs an issuer with at least one path "
                "segment (https://host/realm); a provider whose issuer is the bare host cannot be used, so "
                "configure the provider with a realm, tenant or application path in its issuer")
    if parsed.path.strip("/").split("/")[-1].lower() in MULTI_TENANT and not allow_multi_tenant:
        return (f"the sign-in authority {authority} is multi-tenant: any organisation's accounts could sign in. "
                "Set THERMOLOG_ENTRA_TENANT_ID to your tenant, or THERMOLOG_ENTRA_ALLOW_MULTI_TENANT=true")
    return None


def discovery_url(authority: str) -> str:
    """Where the authority's OpenID configuration lives (Entra's v2.0 endpoint for Entra authorities)."""
    if authority.startswith(ENTRA_HOST + "/"):
        return f"{authority}/v2.0/.well-known/openid-configuration"
    return f"{authority}/.well-known/openid-configuration"


def fetch_discovery(authority: str, session: requests.Session | None) -> dict[str, Any]:
    """The discovery document; LoginError says whether the provider is unreachable or answers with no such document."""
    url = discovery_url(authority)
    try:
        response = (session or requests).get(url, timeout=DISCOVERY_TIMEOUT_S)
    except requests.RequestException as exc:
        log.error("event=sign_in_provider_unreachable authority=%s error=%s", authority, exc)
        raise LoginError(f"the identity provider {authority} cannot be reached right now; "
                         "try again in a minute or tell an administrator") from None
    try:
        document = response.json() if response.ok else None
    except ValueError:
        document = None
    if not isinstance(document, dict) or not document.get("issuer"):
        log.error("event=sign_in_misconfigured authority=%s status=%s", authority, response.status_code)
        raise LoginError(f"the sign-in authority {authority} serves no OpenID configuration at {url} "
                         f"(HTTP {response.status_code}): check THERMOLOG_ENTRA_AUTHORITY")
    return document


def issuer_problem(authority: str, issuer: str, allow_multi_tenant: bool) -> str | None:
    """Whether the discovery document's issuer fits the authority the app is configured with."""
    if TENANT_PLACEHOLDER in issuer and not allow_multi_tenant:
        return (f"the sign-in authority {authority} is multi-tenant (issuer {issuer}): any organisation's accounts "
                "could sign in. Set THERMOLOG_ENTRA_TENANT_ID to your tenant, or "
                "THERMOLOG_ENTRA_ALLOW_MULTI_TENANT=true")
    if authority.startswith(ENTRA_HOST + "/"):
        return None  # Entra's v2.0 issuer carries the tenant id, not the domain or alias configured
    if issuer.rstrip("/") != authority.rstrip("/"):
        bare = not urlparse(issuer).path.strip("/")
        hint = (" Its issuer is the bare host: MSAL needs an issuer with a path, so this provider must be set up "
                "with a realm or tenant path." if bare else " Set THERMOLOG_ENTRA_AUTHORITY to the issuer.")
        return f"the identity provider at {authority} names its issuer {issuer}, not the configured authority.{hint}"
    return None


def provider(settings: Settings) -> Provider:
    """The checked identity provider for these settings, built once per process (fetches the OIDC metadata)."""
    authority = authority_url(settings)
    allow_multi = settings.entra_allow_multi_tenant
    key = (authority, settings.entra_client_id, str(settings.entra_ca_bundle or ""), allow_multi)
    with _store_lock:
        found = _providers.get(key)
        if found is not None:
            return found
        problem = authority_problem(authority, allow_multi)
        session = http_client(settings)
        document = fetch_discovery(authority, session) if problem is None else {}
        problem = problem or issuer_problem(authority, str(document["issuer"]), allow_multi)
        if problem:
            log.error("event=sign_in_misconfigured %s", problem)
            raise LoginError(problem)
        kwargs: dict[str, Any] = {
            "client_credential": settings.entra_client_secret,
            "http_client": session,
            "token_cache": _NoTokenCache(),
        }
        kwargs["authority" if authority.startswith(ENTRA_HOST + "/") else "oidc_authority"] = authority
        try:  # fetches the provider's OpenID configuration again, its own way
            app = msal.ConfidentialClientApplication(settings.entra_client_id, **kwargs)
        except (ValueError, OSError) as exc:  # requests' errors are OSErrors
            log.error("event=sign_in_misconfigured authority=%s error=%s", authority, exc)
            raise LoginError(f"MSAL cannot use the identity provider {authority}: {exc}") from None
        found = _providers[key] = Provider(app, str(document["issuer"]), str(document.get("end_session_endpoint", "")))
        return found


def msal_app(settings: Settings) -> msal.ConfidentialClientApplication:
    """The MSAL confidential client for these settings (see ``provider``)."""
    return provider(settings).app


def start_login(settings: Settings, browser: str, app: msal.ConfidentialClientApplication | None = None,
                store: PendingFlows | None = None) -> dict[str, Any]:
    """Begin a sign-in for the browser whose binding cookie holds ``browser``: return the flow (``auth_uri`` to
    send the browser to, ``state``) and park it server-side."""
    app = msal_app(settings) if app is None else app
    store = pending_flows(settings) if store is None else store  # an empty store is falsy
    with warnings.catch_warnings():
        # MSAL recommends response_mode=form_post, but a Streamlit page can only read the query string.
        warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended")
        flow = app.initiate_auth_code_flow(scopes=[], redirect_uri=redirect_uri(settings), response_mode="query")
    store.put(flow, browser)
    log.info("event=sign_in_started state=%s…", flow["state"][:6])
    return flow


def is_callback(params: Mapping[str, Any]) -> bool:
    """True when these query parameters are the identity provider's answer to a sign-in (with or without state)."""
    return "code" in params and "state" in params or "error" in params


def finish_login(params: Mapping[str, Any], settings: Settings, browser: str,
                 app: msal.ConfidentialClientApplication | None = None,
                 store: PendingFlows | None = None) -> SignIn:
    """Complete a sign-in from the returned query parameters in the browser whose binding cookie holds ``browser``
    ('' when it has none); raise LoginError when anything is off. Refusals are logged without tokens."""
    try:
        return _finish_login(params, settings, browser, app, store)
    except LoginError as exc:
        log.warning("event=sign_in_refused reason=%s", plain_log(str(exc)))
        raise


def _finish_login(params: Mapping[str, Any], settings: Settings, browser: str,
                  app: msal.ConfidentialClientApplication | None, store: PendingFlows | None) -> SignIn:
    response = {key: _single(value) for key, value in params.items()}
    if response.get("error") and not response.get("state"):  # not an answer to any flow of ours; say what it says
        raise LoginError(f"the identity provider reported an error: "
                         f"{response.get('error_description') or response['error']}")
    store = pending_flows(settings) if store is None else store  # an empty store is falsy
    flow = store.pop(str(response.get("state", "")), browser)
    if response.get("error"):
        raise LoginError(f"the identity provider refused the sign-in: "
                         f"{response.get('error_description') or response['error']}")
    checked = provider(settings) if app is None else None
    app = checked.app if checked else app
    try:
        result = app.acquire_token_by_auth_code_flow(flow, response)
    except (ValueError, RuntimeError) as exc:  # MSAL raises these for a state or nonce mismatch
        raise LoginError(f"sign-in refused: {exc}") from None
    if "error" in result:
        reason = result.get("error_description") or result["error"]
        raise LoginError(f"sign-in refused by the identity provider: {reason}")
    claims = result.get("id_token_claims") or {}
    check_claims(claims, settings, issuer=checked.issuer if checked else provider(settings).issuer)
    user = user_from_claims(claims, settings)
    log.info("event=sign_in user=%s roles=%s", user.username, ",".join(sorted(user.roles)) or "-")
    return SignIn(user, str(result.get("refresh_token") or ""), str(result.get("id_token") or ""))


def refresh(sign_in: SignIn, settings: Settings) -> SignIn:
    """Ask the identity provider again who this is and which roles they hold now (refresh-token grant).

    Raises LoginError when the provider refuses (account disabled, consent or refresh token revoked) or gives no
    ID token; the caller ends the session then. Network trouble raises ``ProviderUnavailable`` instead.
    """
    if not sign_in.refresh_token:
        raise LoginError("the identity provider gave no refresh token, so roles cannot be re-checked; sign in again")
    checked = provider(settings)
    try:
        result = checked.app.acquire_token_by_refresh_token(sign_in.refresh_token, scopes=[])
    except (ValueError, OSError) as exc:
        raise ProviderUnavailable(f"the identity provider cannot be reached to re-check roles: {exc}") from None
    if "error" in result:
        log.warning("event=role_check_refused user=%s error=%s", sign_in.user.username, result.get("error"))
        raise LoginError(f"the identity provider no longer accepts this sign-in ({result['error']}); sign in again")
    claims = result.get("id_token_claims") or {}
    check_claims(claims, settings, issuer=checked.issuer)
    user = user_from_claims(claims, settings)
    if user.username != sign_in.user.username:
        raise LoginError("the identity provider answered for another account; sign in again")
    if user.roles != sign_in.user.roles:
        log.info("event=roles_changed user=%s roles=%s", user.username, ",".join(sorted(user.roles)) or "-")
    return SignIn(user, str(result.get("refresh_token") or sign_in.refresh_token),
                  str(result.get("id_token") or sign_in.id_token))


class ProviderUnavailable(LoginError):
    """The identity provider could not be asked right now (network); the sign-in itself was not refused."""


def check_claims(claims: Mapping[str, Any], settings: Settings, issuer: str, now: float | None = None) -> None:
    """Refuse an ID token from another issuer (or tenant), meant for another app, or already expired (MSAL leaves
    these checks to the app). ``issuer`` is the discovery document's; ``{tenantid}`` in it (multi-tenant Entra,
    only when allowed) is the token's own ``tid``.

    The signature is not checked: the token came straight from the token endpoint over verified TLS.
    """
    if not claims:
        raise LoginError("sign-in refused: the identity provider returned no ID token")
    expected = issuer.replace(TENANT_PLACEHOLDER, str(claims.get("tid", "")))
    if str(claims.get("iss", "")).rstrip("/") != expected.rstrip("/"):
        raise LoginError(f"sign-in refused: the ID token was issued by {claims.get('iss')!s:.200}, "
                         f"not by {expected}")
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


def plain_log(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters for the log (text from outside must not forge log lines)."""
    return cut(text, limit)


def _single(value: Any) -> str:
    """Query parameters may come as lists; the OAuth answer has one value per key."""
    if isinstance(value, list | tuple):
        return str(value[0]) if value else ""
    return str(value)
