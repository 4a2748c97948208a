"""``thermolog demo``: the whole system on one machine: broker, ingest worker, dashboard and simulated thermostats.

Each part runs as its own process (the same commands a deployment runs), in its own process group so that Ctrl-C
reaches only the demo, which then stops them in an order that loses nothing: simulators first (they mark their
devices offline), then, once ingest has received those last messages, the app, the ingest worker (it flushes its
journal into DuckDB on SIGINT) and finally the embedded broker. If any part dies, the demo says which, shows the
end of its log and stops the rest with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from thermolog import reader
from thermolog.cli_types import device_ids, parse_duration
from thermolog.demo.embedded_broker import choose_port
from thermolog.processes import die_with_parent
from thermolog.settings import Settings, get_settings

DESCRIPTION = (
    "Run the whole system on one machine: MQTT broker, ingest worker, dashboard, simulated thermostats and the "
    "alert automation, each as its own process. Without THERMOLOG_MQTT_URL an embedded amqtt broker is started on "
    "127.0.0.1 (port 1883 if free, else a free port). Logs of every part go to --log-dir. Ctrl-C stops everything "
    "in an order that loses nothing."
)
SIM_ID_PREFIX = "sim"
EXIT_OK_AFTER_STOP = {0, 130, -signal.SIGINT, -signal.SIGTERM}
"""Exit statuses that count as a clean stop once the demo asked a part to stop."""
BACKFILL_WAIT_S = 120.0
"""How long the demo waits for the backfill before starting the alert automation anyway."""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``thermolog demo``."""
    settings = get_settings()
    parser.add_argument("--devices", type=int, default=settings.sim_devices,
                        help="simulated thermostats (default THERMOLOG_SIM_DEVICES=%(default)s)")
    parser.add_argument("--interval", type=float, default=settings.sim_interval_s,
                        help="seconds between readings (default THERMOLOG_SIM_INTERVAL_S=%(default)s)")
    parser.add_argument("--backfill", type=parse_duration, default=parse_duration("6h"), metavar="DURATION",
                        help="history the simulators publish first so History has data at once, e.g. 30m, 6h, "
                        "2d; 0 disables (default 6h)")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    parser.add_argument("--no-app", action="store_true", help="do not start the dashboard")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="where each part writes its log (default: logs/ next to the database)")


@dataclass
class Part:
    """One process of the demo."""

    name: str
    command: list[str]
    log_path: Path
    stop_timeout: float = 15.0
    stateless: bool = False
    """Any exit after SIGINT counts as clean (the app holds no data; its launcher reports Streamlit's status)."""
    proc: subprocess.Popen[bytes] | None = None
    stopping: bool = field(default=False)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _own_group_dying_with_demo() -> None:
    """Child side of fork: own process group (Ctrl-C goes to the demo only), SIGTERM if the demo dies."""
    os.setsid()
    die_with_parent(signal.SIGTERM)


class Demo:
    """Starts, watches and stops the parts."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.env = dict(os.environ)
        self.parts: list[Part] = []
        self.stop_requested = threading.Event()
        self.started_at = datetime.now(UTC)

    def spawn(self, name: str, args: list[str], stop_timeout: float = 15.0, stateless: bool = False) -> Part:
        """Start ``python -m <args>`` with the demo's environment, output to ``<log_dir>/<name>.log``."""
        part = Part(name, [sys.executable, "-m", *args], self.log_dir / f"{name}.log", stop_timeout, stateless)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(part.log_path, "ab") as out:
            part.proc = subprocess.Popen(part.command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_own_group_dying_with_demo)  # noqa: PLW1509
        self.parts.append(part)
        log.debug("started %s (pid %s): %s", name, part.proc.pid, " ".join(part.command))
        return part

    def dead(self) -> Part | None:
        """A part that exited without being asked to."""
        return next((p for p in self.parts if not p.stopping and not p.alive()), None)

    def wait_until(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        """Poll ``ready`` until true; raises RuntimeError on timeout, a dead part or Ctrl-C."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.dead() is not None or self.stop_requested.is_set():
                raise RuntimeError(f"stopped while waiting for {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {timeout:.0f}s")
            self.stop_requested.wait(0.2)

    def stop(self, part: Part) -> bool:
        """SIGINT to the part's process group, then SIGTERM, then SIGKILL; True if it stopped cleanly."""
        part.stopping = True
        if part.proc is None or not part.alive():
            return True
        for sig, timeout in ((signal.SIGINT, part.stop_timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(part.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                code = part.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop on %s within %.0fs", part.name, signal.Signals(sig).name, timeout)
                continue
            _reap_group(part.proc.pid)
            if sig == signal.SIGINT and (code in EXIT_OK_AFTER_STOP or part.stateless):
                return True
            print(f"thermolog demo: {part.name} ended with status {code} after {signal.Signals(sig).name}",
                  file=sys.stderr)
            return False
        return False


def _reap_group(pgid: int) -> None:
    """Make sure nothing of a stopped part's process group is left (e.g. Streamlit under its launcher)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _query_or_none(sql: str, params: list[object]) -> object:
    """First value of a read-only query, or None while the database is missing, locked or being created."""
    try:
        with reader.read_connection(retry_s=0.5) as con:
            row = con.execute(sql, params).fetchone()
    except Exception as exc:  # a first flush may be creating the file; the caller polls again
        log.debug("database not readable yet: %s", exc)
        return None
    return None if row is None else row[0]


def _ingest_subscribed(since: datetime) -> Callable[[], bool]:
    """True once the ingest worker has recorded a live MQTT subscription after ``since``."""
    return lambda: _query_or_none(
        "SELECT value FROM ingest_state WHERE key = 'mqtt_connected' AND updated_at >= ?", [since]) == "true"


def _caught_up(ids: list[str], within_min: float) -> Callable[[], bool]:
    """True once every simulator's newest stored reading is recent: its backfill is in."""
    return lambda: _query_or_none(
        "SELECT count(DISTINCT device_id) FROM telemetry WHERE list_contains(?, device_id) AND ts >= ?",
        [ids, datetime.now(UTC) - timedelta(minutes=within_min)]) == len(ids)


def _start_automation(demo: Demo, ids: list[str], settings: Settings) -> None:
    """Start `thermolog automation` once the backfill is stored, so it does not announce the hours the backfill
    has not reached yet as silent thermostats."""
    try:
        demo.wait_until("the simulators' backfill", _caught_up(ids, settings.alert_offline_min), BACKFILL_WAIT_S)
    except RuntimeError:
        if demo.dead() is not None or demo.stop_requested.is_set():
            raise
        print("thermolog demo: the backfill is still arriving; alerts may call the thermostats silent until it has",
              flush=True)
    demo.spawn("automation", ["thermolog.cli", "automation"])


def _offline_recorded(ids: list[str], since: datetime) -> Callable[[], bool]:
    """True once ingest stored the 'offline' the simulators publish last: everything before it has arrived."""
    return lambda: _query_or_none(
        "SELECT count(DISTINCT device_id) FROM device_status WHERE status = 'offline' AND ts >= ? "
        "AND list_contains(?, device_id)", [since, ids]) == len(ids)


def backfill_gap(wanted_s: float, ids: list[str]) -> float:
    """Seconds of history to backfill: ``wanted_s``, shortened to the gap since an earlier demo's last reading
    so that running the demo again does not publish a second, overlapping history."""
    last = _query_or_none("SELECT max(ts) FROM telemetry WHERE list_contains(?, device_id)", [ids])
    if not isinstance(last, datetime):
        return wanted_s
    gap = (datetime.now(UTC) - last).total_seconds()
    return max(0.0, min(wanted_s, float(int(gap))))


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False
    return check


def run(args: argparse.Namespace) -> int:
    """Start everything, print what runs where, and keep running until Ctrl-C or a part dies."""
    settings = get_settings()
    demo = Demo(settings, args.log_dir or settings.db_path.parent / "logs")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: demo.stop_requested.set())
    ids = device_ids(args.devices, SIM_ID_PREFIX)
    app_url = f"http://{settings.app_host}:{settings.app_port}"
    broker_part: Part | None = None
    failure: str | None = None
    try:
        if settings.mqtt_url:
            broker_url, broker_note = settings.mqtt_url, "external (THERMOLOG_MQTT_URL)"
        else:
            port = choose_port("127.0.0.1")
            broker_url, broker_note = f"mqtt://127.0.0.1:{port}", "embedded amqtt (THERMOLOG_MQTT_URL is empty)"
            broker_part = demo.spawn("broker", ["thermolog.demo.embedded_broker", "--port", str(port)], 10)
            demo.wait_until("the embedded broker", lambda: _accepts("127.0.0.1", port), 20)
        demo.env["THERMOLOG_MQTT_URL"] = broker_url
        print(f"thermolog demo: broker {broker_url}; starting ingest...", flush=True)
        demo.spawn("ingest", ["thermolog.cli", "ingest"], stop_timeout=60)
        demo.wait_until(f"the ingest worker's subscription (is {broker_url} reachable?)",
                        _ingest_subscribed(demo.started_at), 60)
        if not args.no_app:
            demo.spawn("app", ["thermolog.cli", "app", "--host", settings.app_host, "--port",
                               str(settings.app_port)], stateless=True)
        backfill = backfill_gap(args.backfill, ids)
        if backfill < args.backfill:
            print(f"thermolog demo: history exists up to {backfill / 3600:.2f} h ago; backfilling only that gap",
                  flush=True)
            args.backfill = backfill
        sim_args = ["thermolog.cli", "simulate", "--devices", str(args.devices), "--interval", str(args.interval),
                    "--seed", str(args.seed), "--id-prefix", SIM_ID_PREFIX, "--backfill", f"{backfill:g}"]
        demo.spawn("simulate", [*sim_args, "--ha-discovery", "--schedule"])
        demo.spawn("host-metrics", ["thermolog.cli", "host-metrics"], stateless=True)
        _start_automation(demo, ids, settings)
        if not args.no_app:
            demo.wait_until(f"the dashboard on {app_url}", _http_ok(app_url), 90)
        _print_table(settings, broker_url, broker_note, ids, args, app_url, demo.log_dir)
        while not demo.stop_requested.wait(0.5):
            dead = demo.dead()
            if dead is not None:
                failure = f"{dead.name} exited unexpectedly with status {dead.proc.returncode}"
                break
    except RuntimeError as exc:
        dead = demo.dead()
        if dead is not None:
            failure = f"{dead.name} exited with status {dead.proc.returncode} while starting"
        elif not demo.stop_requested.is_set():
            failure = str(exc)
    if failure:
        dead = demo.dead()
        print(f"\nthermolog demo: {failure}", file=sys.stderr)
        if dead is not None:
            print(f"--- last lines of {dead.log_path} ---\n{_tail(dead.log_path)}\n---", file=sys.stderr)
    print("thermolog demo: stopping...", flush=True)
    clean = _shutdown(demo, ids, broker_part)
    print("thermolog demo: stopped" + ("" if clean else " (not every part stopped cleanly: see the logs)"),
          flush=True)
    return 1 if failure or not clean else 0


def _shutdown(demo: Demo, ids: list[str], broker_part: Part | None) -> bool:
    """Stop in the order that loses nothing; returns True when every part stopped cleanly."""
    clean = True
    by_name = {p.name: p for p in demo.parts}
    stop_time = datetime.now(UTC)
    if "simulate" in by_name:
        clean &= demo.stop(by_name["simulate"])
        ingest = by_name.get("ingest")
        if ingest is not None and ingest.alive():
            # The simulators' retained 'offline' is the last thing they publish; once ingest has stored it,
            # every earlier reading has reached the journal too.
            deadline = time.monotonic() + 15
            check = _offline_recorded(ids, stop_time)
            while not check() and time.monotonic() < deadline and ingest.alive():
                time.sleep(0.2)
    for name in ("automation", "app", "ingest"):  # automation before ingest: its last alert events get stored
        if name in by_name:
            clean &= demo.stop(by_name[name])
    if broker_part is not None:
        clean &= demo.stop(broker_part)
    for part in demo.parts:
        if not part.stopping:
            clean &= demo.stop(part)
    return clean


def _print_table(settings: Settings, broker_url: str, broker_note: str, ids: list[str], args: argparse.Namespace,
                 app_url: str, log_dir: Path) -> None:
    backfill = f", {args.backfill / 3600:g} h of history first" if args.backfill else ""
    rows = [
        ("MQTT broker", f"{broker_url}  [{broker_note}]"),
        ("ingest worker", f"{settings.db_path} (journal {settings.journal_dir}); `thermolog status` shows its lag"),
        ("simulators", f"{len(ids)} thermostats {ids[0]}..{ids[-1]} on {settings.topic_prefix}/<id>/..., "
                       f"a reading every {args.interval:g} s{backfill}"),
        ("sim parameters", str(settings.db_path.parent / "sim_params.json")),
        ("host metrics", f"this machine on edge/<host>/system every {settings.edge_system_interval_s:g} s"),
        ("Home Assistant", f"discovery on {settings.ha_discovery_prefix}/climate/<id>/config: point HA at the "
                           "broker"),
        ("dashboard", "not started (--no-app)" if args.no_app else app_url),
        ("alert automation", f"alert rules every {settings.alert_check_interval_s:g} s; notices to "
                             + ("THERMOLOG_NOTIFY_URLS" if settings.notify_urls else "nobody (NOTIFY_URLS empty)")),
        ("logs", f"{log_dir}/<part>.log"),
    ]
    width = max(len(name) for name, _ in rows)
    print("\nthermolog demo is running (Ctrl-C stops everything):")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(flush=True)
