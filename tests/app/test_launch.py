"""``thermolog app`` serves the dashboard on the configured port and takes Streamlit down with it."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from app import launch
from tests.conftest import free_port
from tests.waiting import wait_for_port
from thermolog.settings import Settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_command_runs_the_entrypoint_headless_on_host_and_port() -> None:
    """The Streamlit command line: our st.App server, address, port, headless, no usage statistics, viewer
    toolbar, no source watcher and no magic; with sign-in configured, no Host allow-list (the app may sit behind
    any name)."""
    command = launch.streamlit_command("127.0.0.1", 8599, Settings(entra_client_id="c", entra_tenant_id="t"))
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4].endswith("app/server.py")
    flags = dict(zip(command[5::2], command[6::2], strict=True))
    assert flags == {"--server.address": "127.0.0.1", "--server.port": "8599", "--server.headless": "true",
                     "--browser.gatherUsageStats": "false", "--client.toolbarMode": "viewer",
                     "--server.fileWatcherType": "none", "--runner.magicEnabled": "false",
                     "--server.disconnectedSessionTTL": "120"}
    shorter = launch.streamlit_command("127.0.0.1", 8599, Settings(entra_client_id="c", entra_tenant_id="t",
                                                                   app_session_ttl_s=15))
    assert shorter[shorter.index("--server.disconnectedSessionTTL") + 1] == "15"


def test_local_mode_command_limits_streamlit_to_loopback_host_names() -> None:
    command = launch.streamlit_command("127.0.0.1", 8599, Settings(entra_client_id=""))
    hosts = [value for flag, value in zip(command, command[1:], strict=False) if flag == "--server.allowedHosts"]
    assert hosts == ["127.0.0.1", "localhost", "::1"]
    insecure = launch.streamlit_command("0.0.0.0", 8599, Settings(entra_client_id="", app_allow_insecure_bind=True))
    assert "--server.allowedHosts" not in insecure


def test_streamlit_gets_the_project_root_and_two_malloc_arenas() -> None:
    """The Streamlit process imports the project and caps glibc's arenas, unless the caller chose a number."""
    env = launch.streamlit_env({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"] == f"{ROOT}{os.pathsep}/elsewhere"
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert launch.streamlit_env({"MALLOC_ARENA_MAX": "8"})["MALLOC_ARENA_MAX"] == "8"


def websocket_handshake(port: int, host: str) -> int:
    """The HTTP status the app's WebSocket endpoint answers an upgrade request with Host ``host``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/_stcore/stream", headers={
        "Host": host, "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()})
    status = connection.getresponse().status
    connection.close()
    return status


def test_local_mode_refuses_a_rebound_host_name(tmp_path: Path) -> None:
    """DNS rebinding: a page on rebind.attacker.example that resolves to 127.0.0.1 gets no WebSocket and no page,
    and the refusal reaches the log of the Streamlit process."""
    port = free_port()
    env = {**os.environ, "THERMOLOG_DB_PATH": str(tmp_path / "none.duckdb"), "THERMOLOG_APP_PORT": str(port),
           "THERMOLOG_ENTRA_CLIENT_ID": "", "THERMOLOG_APP_HOST": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    log_path = tmp_path / "app.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "thermolog.cli", "app"], env=env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        assert websocket_handshake(port, f"127.0.0.1:{port}") == 101
        assert websocket_handshake(port, f"localhost:{port}") == 101
        assert websocket_handshake(port, f"rebind.attacker.example:{port}") == 403
        page = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        page.request("GET", "/", headers={"Host": "rebind.attacker.example"})
        assert page.getresponse().status == 403
        page.close()
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    assert "WARNING app.auth_routes: event=request_refused reason=host host=rebind.attacker.example" in (
        log_path.read_text())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_and_stops_on_sigterm(tmp_path: Path, signum: int) -> None:
    """It answers 200 on the port; SIGTERM or Ctrl-C to the launcher ends Streamlit as well, exit code 0."""
    port = free_port()
    env = {**os.environ, "THERMOLOG_DB_PATH": str(tmp_path / "none.duckdb"), "THERMOLOG_APP_PORT": str(port),
           "THERMOLOG_ENTRA_CLIENT_ID": "", "THERMOLOG_APP_HOST": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "thermolog.cli", "app"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "Streamlit runs as the launcher's child"
        assert children[0].environ()["MALLOC_ARENA_MAX"] == "2"
        proc.send_signal(signum)
        assert proc.wait(20) == 0  # Streamlit stopped cleanly and the launcher reported it
        _gone, alive = psutil.wait_procs(children, timeout=20)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.browser
def test_dashboard_users_get_no_developer_toolbar(tmp_path: Path) -> None:
    """On localhost Streamlit would show developer options (the Deploy button); the dashboard never does. The
    browser tab is titled with the page."""
    from tests.browser_support import chromium, new_context

    port = free_port()
    env = {**os.environ, "THERMOLOG_DB_PATH": str(tmp_path / "none.duckdb"), "THERMOLOG_APP_PORT": str(port),
           "THERMOLOG_ENTRA_CLIENT_ID": "", "THERMOLOG_APP_HOST": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "thermolog.cli", "app"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        with chromium() as browser:
            page = new_context(browser).new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_role("heading", name="Live").wait_for(timeout=60_000)
            page.locator('[data-testid="stToolbar"]').wait_for(state="attached", timeout=30_000)
            assert page.locator('[data-testid="stAppDeployButton"]').count() == 0
            page.wait_for_function("document.title === 'Live · thermolog'", timeout=30_000)  # the tab names the page
    finally:
        proc.terminate()
        proc.wait(20)
