"""Helpers for the browser tests: the system Chromium driven by Playwright, and signing in through the stand-in."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests import needs
from tests.oidc_standin import CLIENT_ID, CLIENT_SECRET, Identity, OidcStandIn

CHROMIUM = "/usr/bin/chromium"  # the distribution's browser: tests never download one
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}
# Every page is saved under docs/screenshots/ (README shows them); THERMOLOG_SCREENSHOT_DIR sends them elsewhere.
SCREENSHOTS = Path(os.environ.get("THERMOLOG_SCREENSHOT_DIR")
                   or Path(__file__).resolve().parent.parent / "docs" / "screenshots")
SIGN_IN_TIMEOUT_MS = 30_000

OPERATOR = Identity(name="Olivia Operator", preferred_username="olivia@example.test",
                    roles=["Thermostat.Viewer", "Thermostat.Operator"])
VIEWER = Identity(name="Vera Viewer", preferred_username="vera@example.test", roles=["Thermostat.Viewer"])


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium from the system (``apt-get install chromium``), closed afterwards."""
    needs.require("browser", "Chromium")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail("Chromium is missing: run tools/test_setup.sh (or `apt-get install -y chromium`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def new_context(browser: Browser) -> BrowserContext:
    """A fresh browser profile; the stand-in's own CA is not in Chromium's store, so its TLS errors are allowed."""
    return browser.new_context(viewport=VIEWPORT, ignore_https_errors=True, accept_downloads=True,
                               timezone_id="UTC")


def entra_env(standin: OidcStandIn, app_port: int) -> dict[str, str]:
    """Environment that points the app's sign-in at the stand-in."""
    return {
        "THERMOLOG_ENTRA_AUTHORITY": standin.authority,
        "THERMOLOG_ENTRA_CLIENT_ID": CLIENT_ID,
        "THERMOLOG_ENTRA_CLIENT_SECRET": CLIENT_SECRET,
        "THERMOLOG_ENTRA_CA_BUNDLE": str(standin.ca_path),
        "THERMOLOG_ENTRA_REDIRECT_URI": f"http://127.0.0.1:{app_port}/",
        "THERMOLOG_ENTRA_LOGOUT_URL": "",  # the stand-in's end_session_endpoint comes from its discovery document
    }


def sign_in(page: Page, base_url: str, standin: OidcStandIn, identity: Identity,
            screenshot: str | None = None) -> None:
    """Open the app, press Sign in, let the stand-in sign ``identity`` in, and wait for the name in the sidebar."""
    standin.next_identity = identity
    page.goto(base_url)
    button = page.get_by_role("link", name="Sign in with 127.0.0.1")
    button.wait_for(timeout=SIGN_IN_TIMEOUT_MS)
    if screenshot:
        save_screenshot(page, screenshot)
    button.click()
    page.get_by_test_id("stSidebar").get_by_text(identity.name, exact=True).wait_for(timeout=SIGN_IN_TIMEOUT_MS)
    assert "code=" not in page.url, "the single-use code must not stay in the address bar"


def save_screenshot(page: Page, name: str) -> Path:
    """Save the page as <SCREENSHOTS>/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
