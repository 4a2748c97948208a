"""The ingest worker: MQTT (and later other sources) in, journal, DuckDB out. The only process that writes DuckDB.

``IngestWorker`` runs in-process (tests, benchmarks, ``thermolog demo``); ``thermolog ingest`` runs it as a service
that stops gracefully on SIGINT/SIGTERM with a final flush.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ingest.flush_process import FlusherProcess
from ingest.journal import START, Journal, Position
from ingest.journal_binding import (
    JOURNAL_DIR_KEY,
    JournalMismatch,
    adopt_legacy_journal,
    bind_journal,
    check_database_journal,
)
from ingest.sinks.base import JOURNAL_POSITION_KEY
from ingest.sources.mqtt import SESSION_KEY, MqttSource, session_key
from thermolog.settings import Settings, default_journal_dir, get_settings

if TYPE_CHECKING:  # DuckDB (and Polars) load only where the flusher runs: with a flusher process, not here
    from ingest.flusher import Flusher, StateProvider
    from ingest.sinks.duckdb import TransactionHook

log = logging.getLogger(__name__)

DESCRIPTION = """\
Subscribe to the thermostat and edge topics (QoS 1, persistent session with the stable client id
THERMOLOG_INGEST_CLIENT_ID), append every message to the journal before acknowledging it, and move journal
records into DuckDB in batches every THERMOLOG_FLUSH_INTERVAL_S. Invalid messages go to the `rejected` table.
This is the only process that writes the database; readers (app, notebooks, export) open it read-only between
flushes. Stop with Ctrl-C or SIGTERM: the worker flushes what it holds and disconnects; anything not yet
stored stays in the journal and is stored on the next start. While the worker is down the broker queues its
session's messages up to its own limit (Mosquitto max_queued_messages, default 1000: raise it for long
outages). If the journal's disk fills, receiving pauses (nothing unjournalled is acknowledged) and resumes by
itself once THERMOLOG_JOURNAL_RESUME_FREE_BYTES are free. `thermolog status` shows lag and rates.

With THERMOLOG_LAKE_CATALOG and THERMOLOG_LAKE_DATA_PATH set, this is one of any number of workers writing
one DuckLake: each needs its own journal directory; MQTT arrives through leased worker slots and a message
is acknowledged only once stored (docs/architecture.md, "Scaling out").
"""


class Source(Protocol):
    """Something that appends records to the journal while started (MQTT, Event Hubs)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def state(self) -> dict[str, str]: ...


SourceFactory = Callable[[Settings, Journal], Source]
"""Builds an extra source once the journal is open, e.g. ``lambda s, j: EventHubSource(s, j)``."""


class IngestWorker:
    """Journal + flusher + MQTT source (+ extra sources); ``start()`` / ``stop()``."""

    def __init__(self, settings: Settings | None = None, *, hooks: Sequence[TransactionHook] = (),
                 state_providers: Sequence[StateProvider] = (), extra_sources: Sequence[SourceFactory] = (),
                 mqtt: bool = True, flusher_process: bool = False) -> None:
        """``hooks`` run inside every flush transaction (e.g. to write an Event Hubs checkpoint).

        ``flusher_process``: flush from a separate process (what ``thermolog ingest`` does) so validation and
        DuckDB use another core than receiving; hooks must then be picklable (module-level functions, partials).
        """
        self.settings = settings or get_settings()
        self.hooks = list(hooks)
        self.state_providers = list(state_providers)
        self.extra_sources = list(extra_sources)
        self.use_mqtt = mqtt
        self.use_flusher_process = flusher_process
        self.journal: Journal | None = None
        self.flusher: Flusher | None = None
        self.flush_process: FlusherProcess | None = None
        self.mqtt: MqttSource | None = None
        self.sources: list[Source] = []
        self.receiving_paused = False
        """True while MQTT receiving is stopped because the journal could not take a message (disk full)."""
        self._space_logged_at = 0.0

    def _stored_state(self, timeout: float) -> dict[str, str]:
        if self.use_flusher_process:  # the flusher process reads it: this one never opens DuckDB
            self.flush_process = FlusherProcess(self.settings, self.hooks)
            return self.flush_process.open(timeout)
        from ingest.sinks.duckdb import DuckDBSink

        def pause(seconds: float) -> bool:
            time.sleep(seconds)
            return False  # never gives up before the timeout

        return DuckDBSink(self.settings.db_path).read_state_when_free(timeout, pause)

    def open(self, lock_timeout: float = 60.0) -> None:
        """Open the database and the journal and start flushing (replays any backlog); no source yet."""
        stored = self._stored_state(lock_timeout)
        try:
            self._open(stored)
        except Exception:
            if self.flush_process is not None:  # it waits for the go: let it end without flushing
                self.flush_process.stop()
            raise

    def _open(self, stored: dict[str, str]) -> None:
        committed = Position.decode(stored[JOURNAL_POSITION_KEY]) if stored.get(JOURNAL_POSITION_KEY) else START
        if self.settings.journal_dir == default_journal_dir(self.settings.db_path):
            adopt_legacy_journal(self.settings.journal_dir, self.settings.db_path, committed)
        bind_journal(self.settings.journal_dir, self.settings.db_path, committed)
        check_database_journal(stored, self.settings.journal_dir, committed)
        self.journal = Journal.from_settings(self.settings, min_segment=committed.segment)
        log.info("database %s, journal %s, resuming after journal position %s",
                 self.settings.db_path, self.settings.journal_dir, committed.encode())
        journal_dir = str(Path(self.settings.journal_dir).resolve())
        providers = [*self.state_providers, lambda: {JOURNAL_DIR_KEY: journal_dir}]
        if self.use_mqtt:
            # The session an earlier run subscribed with should still be there: if it is not, say so.
            self.mqtt = MqttSource(self.settings, self.journal,
                                   session_expected=stored.get(SESSION_KEY) == session_key(self.settings))
            providers.append(self.mqtt.state)
        for factory in self.extra_sources:
            source = factory(self.settings, self.journal)
            self.sources.append(source)
            providers.append(source.state)
        if self.flush_process is not None:
            self.flush_process.state_providers = providers
            # Wait for the child to store a backlog first (sources resume from what it commits); none: go on.
            self.flush_process.start(drain_timeout=60.0 if self.journal.read(committed, 1) else 0.0)
        else:
            from ingest.flusher import Flusher
            from ingest.sinks.duckdb import DuckDBSink

            self.flusher = Flusher(self.settings, self.journal, DuckDBSink(self.settings.db_path), committed,
                                   self.hooks, providers)
            self.flusher.flush(force=True)
            self.flusher.start()

    def start_sources(self, connect_timeout: float = 10.0) -> None:
        """Connect MQTT and start the extra sources; raises ConnectionError when the broker is unreachable."""
        if self.mqtt is not None:
            self.mqtt.start(timeout=connect_timeout)
        for source in self.sources:
            source.start()

    def start(self, connect_timeout: float = 10.0) -> None:
        """Open everything and connect; raises ConnectionError when the broker is unreachable."""
        self.open()
        try:
            self.start_sources(connect_timeout)
        except Exception:
            self.stop()
            raise

    @property
    def failed(self) -> bool:
        """True when a source could not journal a message (disk full?) and stopped receiving."""
        return self.mqtt is not None and self.mqtt.failed.is_set()

    def check_journal_space(self) -> None:
        """After a failed journal write, keep receiving paused until the journal's disk has
        ``journal_resume_free_bytes`` free, then reopen the journal and resume the same MQTT session.

        Nothing is lost meanwhile: the message that could not be journalled was never acknowledged, so the broker
        keeps it with everything queued behind it for the persistent session. Call this periodically.
        """
        if self.mqtt is None or self.journal is None or not (self.receiving_paused or self.failed):
            return
        directory = self.settings.journal_dir
        if not self.receiving_paused:
            self.mqtt.halt()
            self.receiving_paused = True
            log.error("the journal in %s cannot take messages (disk full?); receiving paused, nothing more is "
                      "acknowledged and the broker keeps the rest. Free space there: receiving resumes by itself "
                      "once %s bytes are free (THERMOLOG_JOURNAL_RESUME_FREE_BYTES)", directory,
                      f"{self.settings.journal_resume_free_bytes:,}")
        free = shutil.disk_usage(directory).free
        if free < self.settings.journal_resume_free_bytes:
            if time.monotonic() - self._space_logged_at >= 30.0:
                self._space_logged_at = time.monotonic()
                log.warning("receiving still paused: %s bytes free in %s, waiting for %s", f"{free:,}", directory,
                            f"{self.settings.journal_resume_free_bytes:,}")
            return
        try:
            self.journal.reopen()
            self.mqtt.start()
        except (OSError, ConnectionError) as exc:
            log.warning("cannot resume receiving yet (%s); trying again", exc)
            self.mqtt.halt()
            self.mqtt.failed.set()
            return
        self.receiving_paused = False
        log.info("the journal has room again (%s bytes free); receiving resumed", f"{free:,}")

    def stop(self) -> None:
        """Disconnect the sources, flush what is left, close the journal."""
        for source in [*self.sources, *([self.mqtt] if self.mqtt else [])]:
            try:
                source.stop()
            except Exception:
                log.exception("stopping %s failed", type(source).__name__)
        if self.flusher is not None:
            self.flusher.stop(final_flush=True)
        if self.flush_process is not None:
            self.flush_process.stop()
        if self.journal is not None:
            self.journal.close()
        log.info("ingest worker stopped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``thermolog ingest``."""
    parser.add_argument("--db", type=Path, metavar="PATH",
                        help="DuckDB file to write (default: THERMOLOG_DB_PATH, data/thermolog.duckdb)")
    parser.add_argument("--journal-dir", type=Path, metavar="DIR",
                        help="journal directory (default: THERMOLOG_JOURNAL_DIR, else beside the database: "
                        "data/thermolog.journal)")


def run(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM; returns the exit status."""
    overrides = {}
    if args.db is not None:
        overrides["db_path"] = args.db
    if args.journal_dir is not None:
        overrides["journal_dir"] = args.journal_dir
    settings = Settings(**overrides) if overrides else get_settings()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if settings.lake_catalog:  # one of several workers writing the lake
        from ingest import lake_worker

        return lake_worker.run(settings, stop)
    options = {}
    if settings.eventhub_connection_string:  # IoT Hub ingest; the Azure SDK is loaded only when it is used
        from ingest.sources.eventhub import worker_options

        options = worker_options(settings)
    worker = IngestWorker(settings, flusher_process=True, **options)
    try:
        worker.open()
    except JournalMismatch as exc:
        log.error("thermolog ingest: %s", exc)
        return 2
    try:
        delay = 1.0
        while not stop.is_set():
            try:
                worker.start_sources()
                break
            except ConnectionError as exc:
                log.warning("%s; retrying in %.0fs", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        while not stop.wait(1.0):
            worker.check_journal_space()
            if worker.flush_process is not None:
                worker.flush_process.ensure_running()
    finally:
        worker.stop()
    return 0
