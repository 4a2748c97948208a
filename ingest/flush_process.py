"""Run the flusher in its own process, so validation and DuckDB work never compete with receiving for the GIL.

Receiving (paho + journal append) keeps one core; the flusher process reads the journal files from disk
(``JournalReader``) and owns every DuckDB connection. The parent shares its sources' state (MQTT connected,
broker) through a small shared buffer the flusher stores with each flush. The child dies with its parent
(``PR_SET_PDEATHSIG``), so a killed worker never leaves a second writer behind; the flush transaction also checks
the committed position, so even then no record could be stored twice.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ingest.flusher import Flusher
from ingest.journal import JournalReader
from ingest.sinks.duckdb import DatabaseLocked, DuckDBSink, TransactionHook, is_locked
from thermolog.db_lock import retry_while_locked
from thermolog.processes import die_with_parent
from thermolog.settings import Settings

log = logging.getLogger(__name__)

STATE_BYTES = 8192


def _wait_flag(flag: Any, timeout: float) -> bool:
    """Poll a shared lock-free flag (see FlusherProcess) until it is set or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not flag.value:
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(0.05, timeout))
    return True


def _child_main(settings: Settings, hooks: Sequence[TransactionHook], shared: Any, stop: Any, drained: Any,
                parent_pid: int, log_level: int) -> None:
    die_with_parent(signal.SIGKILL, parent_pid)
    # Ctrl-C, `timeout` and service managers signal the whole process group: the parent decides when to stop,
    # after its sources are down, so the final flush holds everything.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[flusher]: %(message)s")
    sink = DuckDBSink(settings.db_path)
    try:
        committed = retry_while_locked(sink.committed_position, math.inf, locked=is_locked,
                                       delay_s=0.5, max_delay_s=0.5, wait=lambda s: _wait_flag(stop, s))
    except DatabaseLocked:
        return  # asked to stop while a reader held the file

    last_good: dict[str, str] = {}

    def parent_state() -> dict[str, str]:
        nonlocal last_good
        try:  # no lock (a dead holder would block the other side forever): a torn read is skipped
            last_good = orjson.loads(shared.value or b"{}")
        except orjson.JSONDecodeError:
            pass
        return last_good

    journal = JournalReader(settings.journal_dir)
    flusher = Flusher(settings, journal, sink, committed, hooks, [parent_state])
    # Store the backlog before the parent starts its sources (an Event Hubs consumer resumes from the checkpoint
    # this flush commits).
    while True:
        flusher.flush(force=True)  # returns once the journal is drained, or early when a reader holds the file
        if not flusher.database_locked or not journal.read(flusher.committed, 1):
            break  # records that arrived during the flush are the regular loop's
        if _wait_flag(stop, min(settings.flush_interval_s, 0.5)):
            break
    drained.value = True
    flusher.start()
    while not _wait_flag(stop, 0.5):
        if os.getppid() != parent_pid:
            log.error("the ingest worker is gone; flusher stops")
            flusher.stop(final_flush=False)
            return
    flusher.stop(final_flush=True)


class FlusherProcess:
    """Parent-side handle: ``start()``, ``stop()`` (final flush), ``ensure_running()``."""

    def __init__(self, settings: Settings, hooks: Sequence[TransactionHook] = (),
                 state_providers: Sequence[Callable[[], dict[str, str]]] = ()) -> None:
        """``hooks`` run in the child, so they must be picklable (module-level functions)."""
        self.settings = settings
        self.hooks = list(hooks)
        self.state_providers = list(state_providers)
        self._ctx = mp.get_context("spawn")  # DuckDB's threads make fork unsafe
        # lock=False: if either process died holding the lock, the other would block forever.
        self._shared = self._ctx.Array("c", STATE_BYTES, lock=False)
        # Flags, not Events: an Event's lock held by a process that died would block the other side forever.
        self._stop = self._ctx.Value("b", False, lock=False)
        self._drained = self._ctx.Value("b", False, lock=False)
        self._process: mp.process.BaseProcess | None = None
        self._publishing = threading.Event()
        self._publisher: threading.Thread | None = None

    def publish_state(self) -> None:
        """Copy the sources' state into the shared buffer the child stores with each flush."""
        values: dict[str, str] = {}
        for provider in self.state_providers:
            values.update(provider())
        data = orjson.dumps(values)
        if len(data) >= STATE_BYTES:
            log.error("source state too large to share (%s bytes); not updated", len(data))
            return
        self._shared.value = data

    def _publish_loop(self) -> None:
        while not self._publishing.wait(self.settings.flush_interval_s / 2):
            try:
                self.publish_state()
            except Exception:
                log.exception("sharing source state failed")

    def start(self, drain_timeout: float = 60.0) -> None:
        """Spawn the flusher process, wait until it stored the journal's backlog, start sharing state."""
        self.publish_state()
        self._spawn()
        if drain_timeout and not _wait_flag(self._drained, drain_timeout):
            log.warning("the journal backlog is not stored after %.0fs (database locked?); starting anyway",
                        drain_timeout)
        self._publisher = threading.Thread(target=self._publish_loop, name="state-share", daemon=True)
        self._publisher.start()

    def _spawn(self) -> None:
        self._process = self._ctx.Process(
            target=_child_main, name="thermolog-flusher",
            args=(self.settings, self.hooks, self._shared, self._stop, self._drained, os.getpid(),
                  logging.getLogger().level),
        )
        self._process.start()
        log.info("flusher process %s started", self._process.pid)

    def ensure_running(self) -> bool:
        """Restart the child if it died; returns False when it had to be restarted."""
        if self._process is not None and self._process.exitcode is not None and not self._stop.value:
            log.error("flusher process exited with %s; restarting it", self._process.exitcode)
            self._spawn()
            return False
        return True

    def stop(self, timeout: float = 60.0) -> None:
        """Share the final state, let the child flush what is left, and wait for it."""
        self._publishing.set()
        if self._publisher is not None:
            self._publisher.join()
        self.publish_state()
        self._stop.value = True
        if self._process is not None:
            self._process.join(timeout)
            if self._process.exitcode is None:
                log.error("flusher process did not finish within %.0fs; killing it", timeout)
                self._process.kill()
                self._process.join()
