"""Fault tests' tools: `thermolog ingest` as a real process, a device that publishes numbered readings, DB checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.broker_support import TlsBroker
from tests.ingest_support import db_rows, db_value, telemetry
from tests.waiting import wait_until

BASE_TS = datetime(2025, 7, 4, tzinfo=UTC)
"""``tests.ingest_support.telemetry(device, n)`` stamps reading n at BASE_TS + n seconds."""


class IngestProcess:
    """``thermolog ingest`` with the ``ingest`` credentials of a TlsBroker and its own database and journal."""

    def __init__(self, broker: TlsBroker, workdir: Path, **settings: str) -> None:
        self.workdir = workdir
        self.db_path = workdir / "thermolog.duckdb"
        self.journal_dir = workdir / "journal"
        self.log_path = workdir / "ingest.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("THERMOLOG_")}
        env.update(broker.credentials("ingest"))
        env.update({
            "THERMOLOG_DB_PATH": str(self.db_path),
            "THERMOLOG_JOURNAL_DIR": str(self.journal_dir),
            "THERMOLOG_INGEST_CLIENT_ID": f"ingest-{uuid.uuid4().hex[:8]}",
            "THERMOLOG_FLUSH_INTERVAL_S": "0.2",
        })
        env.update({f"THERMOLOG_{k.upper()}": v for k, v in settings.items()})
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_offset = 0

    def start(self) -> IngestProcess:
        """Spawn the process (returns at once; see :meth:`wait_connected`)."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen([sys.executable, "-m", "thermolog.cli", "ingest"], cwd=self.workdir,
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1
        return self

    def wait_connected(self, timeout: float = 30.0) -> None:
        """Wait until this run has logged its MQTT connection and stored ``mqtt_connected = true``."""
        wait_until(self.connecting, timeout, what="ingest to connect")
        wait_until(lambda: db_value(self.db_path, "SELECT value FROM ingest_state WHERE key = 'mqtt_connected'")
                   == "true", timeout, what="ingest subscribed")

    def connecting(self) -> bool:
        """True once the current run has opened its journal and database and is connecting to the broker."""
        return "connecting to" in self.log()[self._log_offset:]

    def kill(self) -> None:
        """SIGKILL: no flush, no disconnect, as a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful) and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Device:
    """A device connection that publishes numbered readings at QoS 1 and remembers which the broker acknowledged."""

    def __init__(self, broker: TlsBroker, device_id: str, first: int = 0) -> None:
        self.broker = broker
        self.device_id = device_id
        self.topic = f"{broker.topic_prefix}/{device_id}/telemetry"
        self.client = broker.connected(device_id, f"pub-{device_id}-{uuid.uuid4().hex[:6]}")
        self.acked: list[int] = []
        self.unacked: list[int] = []
        self.next = first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, count: int, timeout: float = 10.0) -> None:
        """Publish ``count`` readings and wait for each PUBACK (a reading counts as sent once acknowledged)."""
        pending = []
        for _ in range(count):
            pending.append((self.next, self.client.publish(self.topic, telemetry(self.device_id, self.next), qos=1)))
            self.next += 1
        for number, info in pending:
            info.wait_for_publish(timeout)
            (self.acked if info.is_published() else self.unacked).append(number)

    def run_in_background(self, batch: int = 20, pause_s: float = 0.05) -> None:
        """Publish ``batch`` readings every ``pause_s`` until :meth:`stop_background`."""
        def loop() -> None:
            while not self._stop.is_set():
                self.publish(batch)
                self._stop.wait(pause_s)

        self._thread = threading.Thread(target=loop, name=f"publisher-{self.device_id}", daemon=True)
        self._thread.start()

    def stop_background(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stored_numbers(db_path: Path, device_id: str) -> list[int] | None:
    """Reading numbers stored for ``device_id`` (with repeats, if any), or None while the DB is busy."""
    rows = db_rows(db_path, "SELECT ts FROM telemetry WHERE device_id = ? ORDER BY ts", [device_id])
    if rows is None:
        return None
    return [int((ts - BASE_TS) / timedelta(seconds=1)) for (ts,) in rows]


def wait_stored(db_path: Path, device_id: str, numbers: list[int], timeout: float = 60.0) -> list[int]:
    """Wait until every number in ``numbers`` is stored; returns everything stored."""
    wanted = set(numbers)
    return wait_until(lambda: (s := stored_numbers(db_path, device_id)) is not None and wanted <= set(s) and s,
                      timeout, what=f"{len(wanted)} readings of {device_id} in the database")


def loss_and_duplicates(stored: list[int], acked: list[int]) -> tuple[int, int]:
    """(acknowledged readings missing from the database, readings stored more than once)."""
    return len(set(acked) - set(stored)), len(stored) - len(set(stored))
