"""``thermolog app`` serves the dashboard on the configured port and takes Streamlit down with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from app import launch
from tests.conftest import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def test_command_runs_the_entrypoint_headless_on_host_and_port() -> None:
    """The Streamlit command line: our entrypoint, address, port, headless, no usage statistics."""
    command = launch.streamlit_command("127.0.0.1", 8599)
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4].endswith("app/streamlit_app.py")
    flags = dict(zip(command[5::2], command[6::2], strict=True))
    assert flags == {"--server.address": "127.0.0.1", "--server.port": "8599", "--server.headless": "true",
                     "--browser.gatherUsageStats": "false"}


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
        proc.send_signal(signum)
        assert proc.wait(20) == 0  # Streamlit stopped cleanly and the launcher reported it
        _gone, alive = psutil.wait_procs(children, timeout=20)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
