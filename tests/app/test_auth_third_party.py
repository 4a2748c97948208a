"""Sign-in against a third-party OpenID Connect provider (the ``oidc-provider-mock`` package), not our stand-in.

That provider names its issuer after the bare host it is served on (``http://localhost:PORT``), the configuration
the issue found answered with "cannot be reached". MSAL needs an https issuer with a path, so the app must say
exactly that instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import oidc_provider_mock
import pytest
import requests
import werkzeug.serving
from streamlit.testing.v1 import AppTest

from app import auth_flow
from app.auth_flow import LoginError
from tests.app_support import visible
from tests.azure_standins.certs import make_tls_files
from thermolog import settings as settings_module
from thermolog.settings import Settings

PAGE = """
from app.auth import require_login
require_login()
"""


def serve(tmp_path: Path, tls: bool) -> Iterator[tuple[str, Path | None]]:
    """The third-party provider on a free loopback port (over TLS with our own CA when ``tls``); its issuer."""
    files = make_tls_files(tmp_path / "tls") if tls else None
    server = werkzeug.serving.make_server("127.0.0.1", 0, oidc_provider_mock.app(), threaded=True,
                                          ssl_context=(str(files.cert), str(files.key)) if files else None)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        base = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
        document = requests.get(f"{base}/.well-known/openid-configuration", timeout=10,
                                verify=str(files.ca) if files else True).json()
        yield document["issuer"], files.ca if files else None
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def http_provider(tmp_path: Path) -> Iterator[tuple[str, Path | None]]:
    yield from serve(tmp_path, tls=False)


@pytest.fixture
def https_provider(tmp_path: Path) -> Iterator[tuple[str, Path | None]]:
    yield from serve(tmp_path, tls=True)


def settings_for(issuer: str, ca: Path | None) -> Settings:
    return Settings(entra_client_id="thermolog", entra_client_secret="s", entra_authority=issuer,
                    entra_ca_bundle=ca, entra_redirect_uri="http://127.0.0.1:8599/")


def test_http_issuer_is_named_as_the_misconfiguration(http_provider: tuple[str, Path | None]) -> None:
    issuer, _ca = http_provider
    assert issuer.startswith("http://")
    with pytest.raises(LoginError) as refused:
        auth_flow.provider(settings_for(issuer, None))
    assert "is not an https URL" in str(refused.value) and "cannot be reached" not in str(refused.value)


def test_bare_host_issuer_is_named_as_the_misconfiguration(https_provider: tuple[str, Path | None]) -> None:
    issuer, ca = https_provider
    assert issuer.startswith("https://") and issuer.rstrip("/").count("/") == 2  # the bare host
    with pytest.raises(LoginError) as refused:
        auth_flow.provider(settings_for(issuer, ca))
    assert "has no path" in str(refused.value) and "bare host" in str(refused.value)
    assert "cannot be reached" not in str(refused.value)


def test_sign_in_page_explains_a_bare_host_issuer(https_provider: tuple[str, Path | None],
                                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    issuer, ca = https_provider
    for key, value in {"THERMOLOG_ENTRA_AUTHORITY": issuer, "THERMOLOG_ENTRA_CLIENT_ID": "thermolog",
                       "THERMOLOG_ENTRA_CA_BUNDLE": str(ca),
                       "THERMOLOG_ENTRA_REDIRECT_URI": "http://127.0.0.1:8599/"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    settings_module.get_settings.cache_clear()
    try:
        at = AppTest.from_string(PAGE).run(timeout=30)
    finally:
        settings_module.get_settings.cache_clear()
    assert not at.exception
    errors = visible(" ".join(e.value for e in at.error))
    assert "has no path" in errors and "cannot be reached" not in errors
