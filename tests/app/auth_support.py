"""What the sign-in tests share: the people, the addresses, a browser at the identity provider, the HTTP side."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from app import auth_routes, sessions
from app.auth_routes import SignInGate
from tests.oidc_standin import Identity, OidcStandIn

OPERATOR = Identity(name="Olivia Operator", preferred_username="olivia@example.test",
                    roles=["Thermostat.Viewer", "Thermostat.Operator"])
VIEWER = Identity(name="Vera Viewer", preferred_username="vera@example.test", roles=["Thermostat.Viewer"])
REDIRECT = "http://127.0.0.1:8599/"
BROWSER = "cookie-value-of-the-browser-that-started"
ENTRYPOINT = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")


def browser_visit(standin: OidcStandIn, auth_uri: str) -> dict[str, str]:
    """What a browser does at the identity provider: follow the sign-in URL, return the redirect's query."""
    session = requests.Session()
    session.trust_env = False
    response = session.get(auth_uri, allow_redirects=False, verify=str(standin.ca_path), timeout=10)
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT)
    return {key: values[0] for key, values in parse_qs(urlparse(location).query).items()}


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
