"""Run the flusher in its own process, so validation and DuckDB work never compete with receiving for the GIL.

Receiving (paho + journal append) keeps one core; the flusher process reads the journal files from disk
(``JournalReader``) and owns every DuckDB connection: it also reads the stored ``ingest_state`` for the parent at
start-up, so the receiving process never loads DuckDB. The two talk over a pair of pipes (``Link``): the parent
sends the settings, its sources' state (MQTT connected, broker; stored with each flush) and when to go and stop;
the child answers with the stored state and once the journal's backlog is stored. A plain ``subprocess`` (not
``multiprocessing``) starts it, so no resource-tracker process comes along. The child dies with its parent
(``PR_SET_PDEATHSIG``, and the pipe's end of file), so a killed worker never leaves a second writer behind; the
flush transaction also checks the committed position, so even then no record could be stored twice.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ingest.journal import START, Position
from ingest.sinks.base import JOURNAL_POSITION_KEY, DatabaseLocked
from thermolog.processes import die_with_parent
from thermolog.settings import Settings

if TYPE_CHECKING:
    from ingest.sinks.duckdb import TransactionHook

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
"""Where the child finds this package first, so it runs the parent's code."""
CHILD_COMMAND = "from ingest.flush_process import main; main()"
NOT_NEEDED = ("pandas", "pyarrow", "numpy", "polars")
"""Blocked in the flusher process (``sys.modules[name] = None`` makes ``import name`` fail): DuckDB 1.5.5 imports
the first three, when installed, on the first query with parameters only to recognise such parameters (the flusher
passes none), and the sink builds its Arrow streams with nanoarrow (``ingest.sinks.columns``). pandas, pyarrow and
NumPy took about 90 MiB of the flusher's memory, Polars about 45."""


class Link:
    """One end of the parent-child pipes: length-prefixed pickled messages out, a thread receiving them in.

    ``on_message`` is called on the receiving thread with each message; ``on_close`` once the other end is gone.
    """

    def __init__(self, inbox: IO[bytes], outbox: IO[bytes], on_message: Callable[[tuple[Any, ...]], None],
                 on_close: Callable[[], None]) -> None:
        self._outbox = outbox
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._receive, args=(inbox, on_message, on_close),
                                        name="flusher-link", daemon=True)

    def start(self) -> None:
        """Start receiving."""
        self._thread.start()

    def send(self, *message: Any) -> bool:
        """Send one message; False when the other process is gone."""
        data = pickle.dumps(message)
        try:
            with self._lock:
                self._outbox.write(struct.pack("!I", len(data)) + data)
                self._outbox.flush()
        except (OSError, ValueError):  # broken pipe, or closed here
            return False
        return True

    def close(self) -> None:
        """Close the sending end: the other process reads end of file."""
        with self._lock:
            try:
                self._outbox.close()
            except OSError:
                pass

    @staticmethod
    def _receive(inbox: IO[bytes], on_message: Callable[[tuple[Any, ...]], None], on_close: Callable[[], None]) -> None:
        with inbox:
            while True:
                header = inbox.read(4)
                if len(header) < 4:
                    break
                (size,) = struct.unpack("!I", header)
                data = inbox.read(size)
                if len(data) < size:
                    break
                on_message(pickle.loads(data))
        on_close()


class ParentLink:
    """The child's view of its parent: the latest source state, and whether to go on, stop, or the parent is gone."""

    def __init__(self, inbox: IO[bytes], outbox: IO[bytes]) -> None:
        self.state: dict[str, str] = {}
        self.go = threading.Event()
        self.stopping = threading.Event()
        """Set by a stop message and when the parent is gone (``parent_gone``)."""
        self.parent_gone = False
        self.woken = threading.Event()
        self.link = Link(inbox, outbox, self._on_message, self._on_close)
        self.link.start()

    def _on_message(self, message: tuple[Any, ...]) -> None:
        if message[0] == "state":
            self.state = message[1]
        elif message[0] == "go":
            self.go.set()
        elif message[0] == "stop":
            self.stopping.set()
        self.woken.set()

    def _on_close(self) -> None:
        if not self.stopping.is_set():
            self.parent_gone = True
            self.stopping.set()
        self.woken.set()

    def wait_for_go(self) -> bool:
        """Wait until the parent says go (True) or stop (False)."""
        while not (self.go.is_set() or self.stopping.is_set()):
            self.woken.wait()
            self.woken.clear()
        return self.go.is_set()


def _read_stored_state(settings: Settings, parent: ParentLink) -> dict[str, str] | None:
    """``ingest_state`` as stored, waiting while readers hold the file; None when asked to stop meanwhile."""
    from ingest.sinks.duckdb import DuckDBSink

    try:
        return DuckDBSink(settings.db_path).read_state_when_free(math.inf, parent.stopping.wait)
    except DatabaseLocked:
        return None


def _run_child(settings: Settings, hooks: Sequence[TransactionHook], parent: ParentLink) -> None:
    """Report the stored state, wait for go, store the backlog, then flush until told to stop."""
    from ingest.flusher import Flusher
    from ingest.journal import JournalReader
    from ingest.sinks.duckdb import DuckDBSink

    stored = _read_stored_state(settings, parent)
    if stored is None:
        return
    parent.link.send("stored", stored)
    if not parent.wait_for_go():  # the parent could not start (its journal belongs to another database?)
        return
    committed = Position.decode(stored[JOURNAL_POSITION_KEY]) if stored.get(JOURNAL_POSITION_KEY) else START
    journal = JournalReader(settings.journal_dir)
    flusher = Flusher(settings, journal, DuckDBSink(settings.db_path), committed, hooks, [lambda: parent.state])
    # Store the backlog before the parent starts its sources (an Event Hubs consumer resumes from the checkpoint
    # this flush commits).
    while True:
        flusher.flush(force=True)  # returns once the journal is drained, or early when a reader holds the file
        if not flusher.database_locked or not journal.read(flusher.committed, 1):
            break  # records that arrived during the flush are the regular loop's
        if parent.stopping.wait(min(settings.flush_interval_s, 0.5)):
            break
    parent.link.send("drained")
    flusher.start()
    parent.stopping.wait()
    if parent.parent_gone:
        log.error("the ingest worker is gone; flusher stops")
    flusher.stop(final_flush=not parent.parent_gone)


def main() -> None:
    """The flusher process: ``python -c CHILD_COMMAND INBOX_FD OUTBOX_FD PARENT_PID`` (``FlusherProcess`` runs it)."""
    inbox_fd, outbox_fd, parent_pid = (int(arg) for arg in sys.argv[1:4])
    die_with_parent(signal.SIGKILL, parent_pid)
    # Ctrl-C, `timeout` and service managers signal the whole process group: the parent decides when to stop,
    # after its sources are down, so the final flush holds everything.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for name in NOT_NEEDED:
        sys.modules.setdefault(name, None)
    inbox, outbox = os.fdopen(inbox_fd, "rb"), os.fdopen(outbox_fd, "wb")
    header = inbox.read(4)
    if len(header) < 4:
        return  # the parent is gone before it sent the settings
    path, setup = pickle.loads(inbox.read(struct.unpack("!I", header)[0]))[1:]
    sys.path[:] = path  # the parent's, so its hooks (pickled by reference) import here too
    settings, hooks, log_level = pickle.loads(setup)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[flusher]: %(message)s")
    _run_child(settings, hooks, ParentLink(inbox, outbox))


class FlusherProcess:
    """Parent-side handle: ``open()`` (returns the stored state), ``start()``, ``stop()`` (final flush),
    ``ensure_running()``."""

    def __init__(self, settings: Settings, hooks: Sequence[TransactionHook] = (),
                 state_providers: Sequence[Callable[[], dict[str, str]]] = ()) -> None:
        """``hooks`` run in the child, so they must be picklable (module-level functions)."""
        self.settings = settings
        self.hooks = list(hooks)
        self.state_providers = list(state_providers)
        self._process: subprocess.Popen[bytes] | None = None
        self._link: Link | None = None
        self._stored: dict[str, str] | None = None
        self._answered = threading.Event()
        self._drained = threading.Event()
        self._stopping = False
        self._publishing = threading.Event()
        self._publisher: threading.Thread | None = None

    def _on_message(self, message: tuple[Any, ...]) -> None:
        if message[0] == "stored":
            self._stored = message[1]
            self._answered.set()
        elif message[0] == "drained":
            self._drained.set()

    def _on_close(self) -> None:  # the child is gone: nobody waits for an answer that cannot come
        self._answered.set()
        self._drained.set()

    def _spawn(self) -> None:
        child_in, parent_out = os.pipe()
        parent_in, child_out = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", CHILD_COMMAND, str(child_in), str(child_out), str(os.getpid())],
                pass_fds=(child_in, child_out), env=env)
        finally:
            os.close(child_in)
            os.close(child_out)
        self._answered.clear()
        self._drained.clear()
        self._link = Link(os.fdopen(parent_in, "rb"), os.fdopen(parent_out, "wb"), self._on_message, self._on_close)
        self._link.start()
        setup = pickle.dumps((self.settings, self.hooks, logging.getLogger().level))
        self._link.send("setup", list(sys.path), setup)
        log.info("flusher process %s started", self._process.pid)

    def open(self, timeout: float = 60.0) -> dict[str, str]:
        """Start the flusher process and return the ``ingest_state`` it read (it flushes nothing before
        ``start()``). Raises DatabaseLocked when readers hold the file for ``timeout`` seconds."""
        self._spawn()
        if not self._answered.wait(timeout):
            self.stop()
            raise DatabaseLocked(f"{self.settings.db_path} is held by another process for {timeout:.0f}s")
        if self._stored is None:
            code = self._process.wait() if self._process is not None else None
            raise RuntimeError(f"the flusher process exited with {code} before reading {self.settings.db_path}")
        return self._stored

    def publish_state(self) -> None:
        """Send the sources' state to the child, which stores it with each flush."""
        values: dict[str, str] = {}
        for provider in self.state_providers:
            values.update(provider())
        if self._link is not None:
            self._link.send("state", values)

    def _publish_loop(self) -> None:
        while not self._publishing.wait(self.settings.flush_interval_s / 2):
            try:
                self.publish_state()
            except Exception:
                log.exception("sharing source state failed")

    def start(self, drain_timeout: float = 60.0) -> None:
        """Let the child flush: wait until it stored the journal's backlog, then keep sharing state."""
        self.publish_state()
        if self._link is not None:
            self._link.send("go")
        if drain_timeout and not self._drained.wait(drain_timeout):
            log.warning("the journal backlog is not stored after %.0fs (database locked?); starting anyway",
                        drain_timeout)
        self._publisher = threading.Thread(target=self._publish_loop, name="state-share", daemon=True)
        self._publisher.start()

    def ensure_running(self) -> bool:
        """Restart the child if it died; returns False when it had to be restarted."""
        if self._process is None or self._stopping or self._process.poll() is None:
            return True
        log.error("flusher process exited with %s; restarting it", self._process.returncode)
        if self._link is not None:
            self._link.close()
        self._spawn()
        self.publish_state()
        if self._link is not None:
            self._link.send("go")
        return False

    def stop(self, timeout: float = 60.0) -> None:
        """Share the final state, let the child flush what is left, and wait for it."""
        self._stopping = True
        self._publishing.set()
        if self._publisher is not None:
            self._publisher.join()
        if self._link is not None:
            self.publish_state()
            self._link.send("stop")
            self._link.close()
        if self._process is not None:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("flusher process did not finish within %.0fs; killing it", timeout)
                self._process.kill()
                self._process.wait()
