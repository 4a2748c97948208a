"""The HTTP side of sign-in, mounted into Streamlit's server (``st.App`` routes and middleware in ``app.server``).

A Streamlit page cannot set cookies, so the steps that must are plain HTTP:

- ``GET /auth/sign-in`` starts a flow, gives the browser a random HttpOnly binding cookie (its digest is parked
  with the flow) and redirects to the identity provider;
- the provider's answer on the redirect URI (``?code&state`` or ``?error``) is redeemed here, only in the browser
  that holds the binding cookie, and answered with the session cookie and a redirect to the clean address; a
  refusal becomes a notice cookie the page shows (escaped);
- in local mode (no sign-in configured) every HTTP and WebSocket request whose Host is not a loopback name is
  refused, so a web page on a rebound DNS name cannot drive the app.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlparse

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app import auth_flow, sessions
from app.auth_flow import LoginError
from thermolog.settings import Settings, get_settings

log = logging.getLogger(__name__)

SIGN_IN_PATH = "/auth/sign-in"


def secure_cookies(settings: Settings) -> bool:
    """Cookies get ``Secure`` when the app is reached over https (its redirect URI says so)."""
    return urlparse(settings.entra_redirect_uri).scheme == "https"


def set_cookie(response: Response, name: str, value: str, max_age: float, settings: Settings) -> None:
    """An HttpOnly, SameSite=Lax cookie for the whole app (Lax: sent when the provider redirects back)."""
    response.set_cookie(name, value, max_age=int(max_age), path="/", httponly=True, samesite="lax",
                        secure=secure_cookies(settings))


def with_notice(response: Response, message: str, settings: Settings) -> Response:
    """``response`` carrying a message for the next page (a refused sign-in)."""
    set_cookie(response, sessions.NOTICE_COOKIE, sessions.encode_notice(message[:1000]), 300, settings)
    return response


def app_root(settings: Settings) -> str:
    """The path of the redirect URI: where the provider's answer arrives and where signed-in browsers land."""
    try:
        return urlparse(auth_flow.redirect_uri(settings)).path or "/"
    except LoginError:
        return "/"


async def sign_in(request: Request) -> Response:
    """Start a sign-in bound to this browser and send it to the identity provider."""
    settings = get_settings()
    if not auth_flow.is_configured(settings):
        return PlainTextResponse("sign-in is not configured (local mode)", status_code=404)
    browser = secrets.token_urlsafe(32)
    try:
        flow = await run_in_threadpool(auth_flow.start_login, settings, browser)
    except LoginError as exc:
        return with_notice(RedirectResponse(app_root(settings), status_code=303), str(exc), settings)
    response = RedirectResponse(flow["auth_uri"], status_code=303)
    set_cookie(response, sessions.BINDING_COOKIE, browser, settings.entra_flow_ttl_s, settings)
    response.delete_cookie(sessions.NOTICE_COOKIE, path="/")
    return response


async def finish_sign_in(request: Request, settings: Settings) -> Response:
    """Redeem the provider's answer in the browser that started the flow; set the session cookie."""
    params = dict(parse_qsl(request.url.query, keep_blank_values=True))
    browser = request.cookies.get(sessions.BINDING_COOKIE, "")
    response: Response = RedirectResponse(app_root(settings), status_code=303)  # the code never stays in the URL
    response.delete_cookie(sessions.BINDING_COOKIE, path="/")
    try:
        signed_in = await run_in_threadpool(auth_flow.finish_login, params, settings, browser)
    except LoginError as exc:
        return with_notice(response, str(exc), settings)
    store = sessions.session_store(settings.entra_session_ttl_s)
    _session, cookie = store.create(signed_in)
    set_cookie(response, sessions.SESSION_COOKIE, cookie, settings.entra_session_ttl_s, settings)
    response.delete_cookie(sessions.NOTICE_COOKIE, path="/")
    return response


class SignInGate:
    """ASGI middleware: the provider's answer on the redirect URI, and the Host check of local mode."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        if not auth_flow.is_configured(settings):
            host = Headers(scope=scope).get("host")
            if not settings.app_allow_insecure_bind and not auth_flow.is_loopback_host(host):
                log.warning("event=request_refused reason=host host=%s path=%s", auth_flow.plain_log(str(host), 100),
                            scope.get("path"))
                await refuse(scope, receive, send)
                return
        elif scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") == app_root(settings):
            query: dict[str, Any] = dict(parse_qsl(scope.get("query_string", b"").decode(errors="replace")))
            if auth_flow.is_callback(query):
                response = await finish_sign_in(Request(scope, receive), settings)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
    """403 for HTTP; a WebSocket is closed before it is accepted (the server answers 403)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    response = PlainTextResponse("this address is not served: local mode answers only 127.0.0.1 and localhost",
                                 status_code=403)
    await response(scope, receive, send)


ROUTES = [Route(SIGN_IN_PATH, sign_in, methods=["GET"])]
