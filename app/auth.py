"""Who is signed in. Interface used by every page; Entra ID (MSAL) sign-in fills it, local mode is bannered.

Pages call ``require_login()`` at the top and ``user.is_operator`` before anything that changes a device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

ROLE_VIEWER = "Thermostat.Viewer"
ROLE_OPERATOR = "Thermostat.Operator"
USER_KEY = "thermolog.user"


@dataclass(frozen=True)
class User:
    """A signed-in person (or the local-mode user) and the app roles the token granted."""

    name: str
    username: str
    roles: frozenset[str] = field(default_factory=frozenset)
    local: bool = False

    @property
    def is_operator(self) -> bool:
        """May send commands."""
        return ROLE_OPERATOR in self.roles

    @property
    def is_viewer(self) -> bool:
        """May look (operators may look too)."""
        return ROLE_VIEWER in self.roles or self.is_operator


LOCAL_USER = User(name="Local user", username="local", roles=frozenset({ROLE_VIEWER, ROLE_OPERATOR}), local=True)


def current_user() -> User | None:
    """The user of this Streamlit session, or None when nobody is signed in."""
    return st.session_state.get(USER_KEY)


def require_login() -> User:
    """Return the signed-in user; without Entra settings this is the bannered local-mode user."""
    user = current_user()
    if user is None:
        user = LOCAL_USER
        st.session_state[USER_KEY] = user
    return user
