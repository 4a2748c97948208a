"""Signed-in browsers: a server-side session store and the signed cookies that point into it (no Streamlit).

A browser that completes a sign-in gets an HttpOnly cookie ``<id>.<expiry>.<signature>``; the id is 256 random
bits, the signature an HMAC with this process's key, and the expiry ``entra_session_ttl_s`` after sign-in. The
store keeps, per id, the user, the refresh token (for role re-checks) and the ID token (``id_token_hint`` at
sign-out); nothing of it reaches the browser. Signing out removes the id, which ends the sign-in in every tab and
window that carries the cookie. Sessions live in the app process: a restart signs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from app.auth_flow import SignIn

SESSION_COOKIE = "thermolog_session"
BINDING_COOKIE = "thermolog_sign_in"  # ties a pending sign-in to the browser that started it
NOTICE_COOKIE = "thermolog_notice"  # a message for the next page (a refused sign-in, "signed out")
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    """One signed-in browser (and its tabs)."""

    id: str
    sign_in: SignIn
    expires: float  # wall-clock epoch seconds
    checked: float  # when the roles were last confirmed by the identity provider (monotonic clock)


class Signer:
    """HMAC-SHA256 signatures over cookie values with a key that never leaves the process."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def sign(self, value: str) -> str:
        """``value`` with its signature appended (``value.signature``)."""
        return f"{value}.{self._mac(value)}"

    def unsign(self, signed: str) -> str | None:
        """The value of a signed string, or None when the signature is wrong or missing."""
        value, _, mac = signed.rpartition(".")
        return value if value and hmac.compare_digest(mac, self._mac(value)) else None

    def _mac(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class SessionStore:
    """Sessions by id, bounded (the oldest go first), expiring, revocable."""

    def __init__(self, ttl_s: float, signer: Signer | None = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.signer = signer or Signer()
        self._clock = clock
        self._monotonic = monotonic
        self._max = max_sessions
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def create(self, sign_in: SignIn) -> tuple[Session, str]:
        """A new session for a completed sign-in, and the cookie value that names it."""
        session = Session(secrets.token_urlsafe(32), sign_in, self._clock() + self.ttl_s, self._monotonic())
        with self._lock:
            self._prune()
            while len(self._sessions) >= self._max:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[session.id] = session
        return session, self.signer.sign(f"{session.id}.{int(session.expires)}")

    def get(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, or None (no cookie, bad signature, expired, signed out)."""
        value = self.signer.unsign(cookie or "")
        if value is None:
            return None
        session_id, _, expires = value.rpartition(".")
        if not expires.isdigit() or int(expires) < self._clock():
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires < self._clock():
                del self._sessions[session_id]
                session = None
        return session

    def update(self, session: Session, sign_in: SignIn) -> Session | None:
        """Record a fresh role check; None when the session ended meanwhile (signed out elsewhere)."""
        renewed = replace(session, sign_in=sign_in, checked=self._monotonic())
        with self._lock:
            if session.id not in self._sessions:
                return None
            self._sessions[session.id] = renewed
        return renewed

    def due(self, session: Session, every_s: float) -> bool:
        """Whether the session's roles were last confirmed more than ``every_s`` ago."""
        return self._monotonic() - session.checked >= every_s

    def revoke(self, session_id: str) -> Session | None:
        """End a session everywhere; returns it (for the ID token hint) or None if it had already ended."""
        with self._lock:
            return self._sessions.pop(session_id, None)

    def _prune(self) -> None:
        now = self._clock()
        for session_id in [key for key, found in self._sessions.items() if found.expires < now]:
            del self._sessions[session_id]


PROCESS_SIGNER = Signer()  # one key per app process: the session store lives in this process too
_lock = threading.Lock()
_stores: dict[float, SessionStore] = {}


def encode_notice(message: str, signer: Signer = PROCESS_SIGNER) -> str:
    """A signed cookie value carrying a message for the next page (only this process can make one)."""
    return signer.sign(base64.urlsafe_b64encode(message.encode()).decode().rstrip("="))


def decode_notice(cookie: str | None, signer: Signer = PROCESS_SIGNER) -> str | None:
    """The message of a notice cookie, or None when there is none or it was not made by this process."""
    value = signer.unsign(cookie or "")
    if value is None:
        return None
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode(errors="replace")


def session_store(ttl_s: float) -> SessionStore:
    """The process-wide session store for a session lifetime (one per configured TTL)."""
    with _lock:
        store = _stores.get(ttl_s)
        if store is None:
            store = _stores[ttl_s] = SessionStore(ttl_s, PROCESS_SIGNER)
        return store
