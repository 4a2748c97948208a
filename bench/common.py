"""Shared benchmark plumbing: results, a private Mosquitto, the compiled publisher, polling the database."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import psutil

from ingest.flush_process import CHILD_COMMAND

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"


@dataclass
class Result:
    """One measured figure and, where the issue sets one, its target."""

    benchmark: str
    metric: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""


def is_flusher(proc: psutil.Process) -> bool:
    """Whether ``proc`` is an ingest worker's flusher process (its command line runs ``ingest.flush_process``)."""
    try:
        return CHILD_COMMAND in proc.cmdline()
    except psutil.Error:
        return False


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@contextmanager
def private_mosquitto(extra: str = "") -> Iterator[int]:
    """A Mosquitto on a free loopback port for the duration of the block; yields the port."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-mosq-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"persistence false\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
            f"max_queued_messages 1000000\nmax_inflight_messages 0\n{extra}"
        )
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not wait_until(lambda: _listening(port), 10):
                raise RuntimeError("mosquitto did not start")
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def c_binary(name: str) -> Path:
    """Compile bench/{name}.c against libmosquitto once (needs gcc and libmosquitto-dev) and return its path."""
    BUILD.mkdir(exist_ok=True)
    binary = BUILD / name
    source = HERE / f"{name}.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        if shutil.which("gcc") is None or not Path("/usr/include/mosquitto.h").exists():
            raise RuntimeError(f"bench/{name}.c needs gcc and libmosquitto-dev: apt-get install libmosquitto-dev")
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(source), "-lmosquitto"], check=True)
    return binary


def publisher_binary() -> Path:
    """The C publisher (bench/publisher.c), compiled."""
    return c_binary("publisher")


def subscriber_binary() -> Path:
    """The C subscriber baseline (bench/subscriber.c), compiled."""
    return c_binary("subscriber")


def publish(port: int, prefix: str, count: int, devices: int = 10, rate: float = 0.0) -> subprocess.Popen[str]:
    """Start the C publisher; returns the running process (its stdout says how long it took)."""
    return subprocess.Popen(
        [str(publisher_binary()), "127.0.0.1", str(port), prefix, str(count), str(devices), str(rate)],
        stdout=subprocess.PIPE,
        text=True,
    )


def bench_env(tmp: Path, port: int, prefix: str, **extra: str) -> dict[str, str]:
    """Environment for a thermolog process using a private broker and a database in ``tmp``."""
    env = dict(os.environ)
    env.update(
        THERMOLOG_MQTT_URL=f"mqtt://127.0.0.1:{port}",
        THERMOLOG_DB_PATH=str(tmp / "bench.duckdb"),
        THERMOLOG_JOURNAL_DIR=str(tmp / "journal"),
        THERMOLOG_TOPIC_PREFIX=prefix,
        THERMOLOG_INGEST_CLIENT_ID=f"bench-ingest-{prefix}",
    )
    env.update(extra)
    return env


def ingest_subscribed(db: Path) -> bool:
    """Whether the ingest worker writing ``db`` reports itself connected and subscribed."""
    from thermolog.reader import DatabaseNotReady, read_connection

    try:
        with read_connection(db, retry_s=1.0) as con:
            row = con.execute("SELECT value FROM ingest_state WHERE key = 'mqtt_connected'").fetchone()
    except DatabaseNotReady:
        return False
    return row is not None and row[0] == "true"


class FlushLog:
    """Follows a worker's debug log: how many readings its flushes have committed so far.

    The flusher logs each transaction right after its commit, so this tells when the last row is in DuckDB
    without opening the database (a reader's open can make the writer's next flush wait).
    """

    _FLUSHED = re.compile(rb"flushed \d+ records \((\d+) readings")

    def __init__(self, stream: IO[bytes]) -> None:
        self.readings = 0
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._follow, args=(stream,), daemon=True)
        self._thread.start()

    def _follow(self, stream: IO[bytes]) -> None:
        for line in stream:  # read to the end, so the worker never blocks on a full pipe
            match = self._FLUSHED.search(line)
            if match:
                with self._changed:
                    self.readings += int(match.group(1))
                    self._changed.notify_all()

    def wait_for(self, readings: int, timeout: float) -> bool:
        """Wait until flushes have committed at least ``readings`` readings; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.readings >= readings, timeout)


class RunningIngest(NamedTuple):
    """What :func:`running_ingest` yields."""

    process: subprocess.Popen[bytes]
    db: Path
    flushes: FlushLog


@contextmanager
def running_ingest(tmp: Path, port: int, prefix: str) -> Iterator[RunningIngest]:
    """``thermolog -v ingest`` on the private broker, subscribed before the block starts."""
    import sys

    env = bench_env(tmp, port, prefix)
    db = Path(env["THERMOLOG_DB_PATH"])
    worker = subprocess.Popen([sys.executable, "-m", "thermolog.cli", "-v", "ingest"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert worker.stderr is not None
    flushes = FlushLog(worker.stderr)
    try:
        # Messages published before the worker has subscribed are not for it: wait until it says so.
        if not wait_until(lambda: ingest_subscribed(db), 60, 0.2):
            raise RuntimeError("ingest worker did not connect and subscribe")
        yield RunningIngest(worker, db, flushes)
    finally:
        worker.terminate()
        worker.wait(30)
