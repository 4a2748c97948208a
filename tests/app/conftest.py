"""Fixtures of the app tests: the OIDC stand-in and settings for sign-in or local mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.auth_support import REDIRECT
from tests.oidc_standin import CLIENT_ID, CLIENT_SECRET, OidcStandIn
from thermolog import settings as settings_module
from thermolog.settings import Settings


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
    }
    monkeypatch.delenv("THERMOLOG_ENTRA_LOGOUT_URL", raising=False)
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
