"""``thermolog app``: start the Streamlit dashboard on the configured address and port."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from app.auth import InsecureBind, check_bind, sign_in_configured
from thermolog.settings import Settings, get_settings

ENTRYPOINT = Path(__file__).with_name("server.py")  # st.App: the pages plus the sign-in routes and Host check
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``thermolog app``; defaults come from the settings."""
    parser.add_argument("--host", help="address to bind (default THERMOLOG_APP_HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (default THERMOLOG_APP_PORT)")


def streamlit_command(host: str, port: int, settings: Settings | None = None,
                      entrypoint: Path = ENTRYPOINT) -> list[str]:
    """The command line that runs the dashboard (or another ``entrypoint``, as the page benchmark's floor does)
    headless on host:port, with the viewer toolbar.

    In local mode Streamlit's own ``server.allowedHosts`` also refuses WebSockets for any Host but loopback names
    (DNS rebinding), besides the app's middleware; ``THERMOLOG_APP_ALLOW_INSECURE_BIND`` lifts both.
    """
    settings = settings or get_settings()
    command = [
        sys.executable, "-m", "streamlit", "run", str(entrypoint),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        # Dashboard users are viewers: no Deploy button, rerun or clear-cache in the toolbar, even on localhost.
        "--client.toolbarMode", "viewer",
        # A served dashboard does not reload on source edits; the watcher re-scanned every imported module's path
        # after each script run (a third of the app's CPU per page load at 100 thermostats).
        "--server.fileWatcherType", "none",
        # Magic writes bare expressions to the page; our scripts call st.* explicitly.
        "--runner.magicEnabled", "false",
        "--server.disconnectedSessionTTL", str(settings.app_session_ttl_s),
    ]
    if not sign_in_configured(settings) and not settings.app_allow_insecure_bind:
        for name in LOOPBACK_HOSTS:
            command += ["--server.allowedHosts", name]
    return command


def streamlit_env(base: Mapping[str, str]) -> dict[str, str]:
    """The Streamlit process's environment: ``base`` with the project root importable and glibc's arenas capped
    (unless ``base`` sets ``MALLOC_ARENA_MAX``)."""
    env = dict(base)
    # The project root must be importable by the pages (they import app.* and thermolog.*).
    root = str(ENTRYPOINT.parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Streamlit runs every script on a new thread, and glibc spreads threads over up to 8 arenas per core: what
    # ten sessions freed stayed scattered there (30 MiB more in those arenas after the sessions closed, 5 with 2).
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def run(args: argparse.Namespace) -> int:
    """Run Streamlit in the foreground until it exits or Ctrl-C; returns its exit code."""
    settings = get_settings()
    host = args.host or settings.app_host
    port = args.port or settings.app_port
    try:
        check_bind(host, settings)  # without sign-in, only loopback (unless explicitly allowed)
    except InsecureBind as exc:
        log.error("%s", exc)
        return 2
    command = streamlit_command(host, port, settings)
    log.info("dashboard on http://%s:%d", host, port)
    proc = subprocess.Popen(command, env=streamlit_env(os.environ))
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        # A supervisor stopping us stops Streamlit too, instead of leaving it orphaned on the port.
        nonlocal stopping
        stopping = True
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        stopping = True
        proc.terminate()
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    # Streamlit ends with the signal's code when asked to stop; a requested stop is a clean exit.
    return 0 if stopping else code
