"""Who a person is to the app: the app roles of the Entra ID registration and the signed-in user."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLE_VIEWER = "Thermostat.Viewer"
ROLE_OPERATOR = "Thermostat.Operator"


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
