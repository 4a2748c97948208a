"""A small OpenID Connect identity provider on loopback HTTPS, standing in for Entra ID in tests.

It generates its own CA and a server certificate for 127.0.0.1, and serves discovery, ``/authorize`` (which
signs in whoever the test chose, without a login form, and redirects back with a code and the given state) and
``/token`` (which checks the code, client secret, redirect URI and the PKCE verifier, then returns an ID token
signed with its own RSA key and carrying the nonce, name and roles, plus a refresh token). The refresh-token grant
answers with the account's roles as they are now (``accounts``; ``disable`` refuses it), which is how the app
re-checks roles. Knobs let a test make it misbehave.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.azure_standins.certs import make_tls_files

TENANT = "thermolog-test"
CLIENT_ID = "00000000-0000-4000-8000-00000000c11e"
CLIENT_SECRET = "standin-secret"


@dataclass
class Identity:
    """Who the stand-in signs in next: the claims it puts in the ID token."""

    name: str = "Vera Viewer"
    preferred_username: str = "vera@example.test"
    roles: list[str] = field(default_factory=lambda: ["Thermostat.Viewer"])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class OidcStandIn:
    """The identity provider. ``start()`` it, point the app at ``authority`` and trust ``ca_path``."""

    def __init__(self, directory: Path, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        tls = make_tls_files(directory / "idp-tls")
        self.ca_path, self._cert_path, self._key_path = tls.ca, tls.cert, tls.key
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.next_identity = Identity()
        # Misbehaviour knobs for the refusal tests.
        self.nonce_override: str | None = None
        self.audience_override: str | None = None
        self.issuer_override: str | None = None
        self.expires_in_s = 3600
        self.accounts: dict[str, Identity] = {}  # by preferred_username: what a refresh reports now
        self.disabled: set[str] = set()
        self.refresh_requests: list[dict[str, str]] = []
        self._refresh_tokens: dict[str, str] = {}  # refresh token -> preferred_username
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.token_errors: list[str] = []
        self._codes: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> OidcStandIn:
        """Listen on a free port of 127.0.0.1 over HTTPS in a background thread."""
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                standin._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                standin._handle(self, "POST")

            def log_message(self, *_args: object) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._cert_path, self._key_path)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="oidc-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def authority(self) -> str:
        """The authority URL the app is configured with (also the token issuer)."""
        return f"https://127.0.0.1:{self.port}/{TENANT}"

    # --- HTTP --------------------------------------------------------------------------------------
    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(request.path)
        prefix = f"/{TENANT}"
        path = url.path[len(prefix):] if url.path.startswith(prefix) else None
        if method == "GET" and path == "/.well-known/openid-configuration":
            self._json(request, 200, self.discovery())
        elif method == "GET" and path == "/discovery/keys":
            self._json(request, 200, {"keys": [self._jwk()]})
        elif method == "GET" and path == "/authorize":
            self._authorize(request, {k: v[0] for k, v in parse_qs(url.query).items()})
        elif method == "POST" and path == "/token":
            length = int(request.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(request.rfile.read(length).decode()).items()}
            self._token(request, form)
        elif method == "GET" and path == "/logout":
            self._html(request, 200, "signed out")
        else:
            self._json(request, 404, {"error": "not_found"})

    def discovery(self) -> dict[str, Any]:
        """The OpenID provider metadata."""
        base = self.authority
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/discovery/keys",
            "end_session_endpoint": f"{base}/logout",
            "response_types_supported": ["code"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
        }

    def _authorize(self, request: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        with self._lock:
            self.authorize_requests.append(query)
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            self._json(request, 400, {"error": "invalid_request", "error_description": "unknown client or type"})
            return
        if not query.get("code_challenge") or query.get("code_challenge_method") != "S256":
            self._json(request, 400, {"error": "invalid_request", "error_description": "PKCE S256 required"})
            return
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = {"query": query, "identity": self.next_identity}
        target = query["redirect_uri"] + ("&" if "?" in query["redirect_uri"] else "?") + urlencode(
            {"code": code, "state": query.get("state", ""), "session_state": secrets.token_hex(8)})
        request.send_response(302)
        request.send_header("Location", target)
        request.send_header("Content-Length", "0")
        request.end_headers()

    def set_roles(self, username: str, roles: list[str]) -> None:
        """Change what the provider says about an account from now on (as an administrator would)."""
        with self._lock:
            account = self.accounts[username]
            self.accounts[username] = Identity(account.name, account.preferred_username, list(roles))

    def disable(self, username: str) -> None:
        """Refuse the account's refresh tokens from now on (account disabled or sessions revoked)."""
        with self._lock:
            self.disabled.add(username)

    def _token(self, request: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        if form.get("grant_type") == "refresh_token":
            self._refresh(request, form)
            return
        with self._lock:
            self.token_requests.append(form)
            issued = self._codes.pop(form.get("code", ""), None)
        problem = self._token_problem(form, issued)
        if problem:
            with self._lock:
                self.token_errors.append(problem)
            self._json(request, 400, {"error": "invalid_grant", "error_description": problem})
            return
        assert issued is not None
        query, identity = issued["query"], issued["identity"]
        with self._lock:
            self.accounts.setdefault(identity.preferred_username, identity)
        nonce = self.nonce_override if self.nonce_override is not None else query.get("nonce")
        self._json(request, 200, self._tokens(identity, query.get("scope", "openid profile"), nonce))

    def _refresh(self, request: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        with self._lock:
            self.refresh_requests.append(form)
            username = self._refresh_tokens.pop(form.get("refresh_token", ""), None)
            account = self.accounts.get(username or "")
            refused = username is None or username in self.disabled
        if refused or account is None or form.get("client_secret") != self.client_secret:
            self._json(request, 400, {"error": "invalid_grant", "error_description": "refresh token refused"})
            return
        self._json(request, 200, self._tokens(account, form.get("scope", "openid profile"), None))

    def _tokens(self, identity: Identity, scope: str, nonce: str | None) -> dict[str, Any]:
        """A token response for ``identity``: ID token (with ``nonce`` if given), access and refresh token."""
        now = int(time.time())
        claims = {
            "iss": self.issuer_override or self.authority,
            "aud": self.audience_override or self.client_id,
            "sub": _b64url(hashlib.sha256(identity.preferred_username.encode()).digest())[:43],
            "oid": str(hashlib.md5(identity.preferred_username.encode()).hexdigest()),  # noqa: S324 - an id
            "tid": TENANT,
            "iat": now,
            "nbf": now,
            "exp": now + self.expires_in_s,
            "name": identity.name,
            "preferred_username": identity.preferred_username,
            "roles": list(identity.roles),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        refresh_token = secrets.token_urlsafe(32)
        with self._lock:
            self._refresh_tokens[refresh_token] = identity.preferred_username
        return {
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": 3600,
            "access_token": secrets.token_urlsafe(32),
            "refresh_token": refresh_token,
            "id_token": self._sign(claims),
        }

    def _token_problem(self, form: dict[str, str], issued: dict[str, Any] | None) -> str | None:
        if form.get("grant_type") != "authorization_code":  # refresh_token is answered by _refresh
            return "unsupported grant_type"
        if issued is None:
            return "unknown or already redeemed code"
        query = issued["query"]
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return "client authentication failed"
        if form.get("redirect_uri") != query.get("redirect_uri"):
            return "redirect_uri differs from the authorization request"
        verifier = form.get("code_verifier", "")
        if _b64url(hashlib.sha256(verifier.encode()).digest()) != query.get("code_challenge"):
            return "PKCE code_verifier does not match the code_challenge"
        return None

    def _sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": "standin"}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._signing_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _jwk(self) -> dict[str, str]:
        numbers = self._signing_key.public_key().public_numbers()
        return {"kty": "RSA", "use": "sig", "kid": "standin", "alg": "RS256",
                "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                "e": _b64url(numbers.e.to_bytes(3, "big"))}

    @staticmethod
    def _json(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    @staticmethod
    def _html(request: BaseHTTPRequestHandler, status: int, text: str) -> None:
        data = f"<!doctype html><title>{text}</title><p>{text}</p>".encode()
        request.send_response(status)
        request.send_header("Content-Type", "text/html; charset=utf-8")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
