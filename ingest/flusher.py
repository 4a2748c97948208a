"""The flusher: every ``flush_interval_s`` it moves journal records after the committed position into DuckDB.

Between intervals it looks at the journal every ``flush_quiet_s``: when records wait and none arrived since the
last look, it flushes at once, so the end of a burst or a lone reading does not wait out the interval, while a
steady stream is still batched per interval (``FlushPolicy``).

Each flush is one transaction holding the rows, the rejected records, the counters and the new journal position,
so a crash at any point replays exactly the uncommitted records. When a reader holds the database file the flush
fails, the records stay in the journal and the next interval tries again: lag grows, nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ingest.batching import BatchSizer
from ingest.journal import Lag, Position, Record
from ingest.parse import Batch, epoch_us, parse_records, reject
from ingest.sinks.duckdb import DatabaseLocked, DuckDBSink, FlushResult, PositionMoved, TransactionHook
from thermolog.profiles import profiles_from_settings
from thermolog.settings import Settings

log = logging.getLogger(__name__)

StateProvider = Callable[[], dict[str, str]]
"""Returns ``ingest_state`` values to store with each flush (e.g. ``{"mqtt_connected": "true"}``)."""

HEARTBEAT_S = 30.0
"""An idle flusher still records its state this often, so `thermolog status` can tell it is alive."""
RETENTION_EVERY_S = 300.0
"""How often the flusher looks for raw readings older than ``raw_retention_days`` (when some are left after a
round, it goes on at the next interval)."""
RETENTION_BATCH_ROWS = 50_000
"""Most raw readings one retention transaction deletes: each holds the file about as long as a flush."""


class JournalView(Protocol):
    """What the flusher needs of the journal: ``Journal`` in-process, ``JournalReader`` in a flusher process."""

    def read(self, after: Position, max_records: int | None = None) -> list[Record]: ...
    def bytes_after(self, position: Position) -> int: ...
    def lag(self, after: Position) -> Lag: ...
    def release(self, committed: Position) -> list[int]: ...


class FlushPolicy:
    """When to flush: every ``interval`` seconds, and early once records wait and the journal did not grow between
    two looks ``quiet`` seconds apart (the end of a burst, a lone reading). An early flush is never followed by
    another before the next interval, so a stream with pauses between its messages is still batched: at most two
    flushes per interval, each of which holds the database file for tens of milliseconds."""

    def __init__(self, interval: float, quiet: float, now: float) -> None:
        self.interval = interval
        self.quiet = quiet
        self._due = now + interval
        self._waiting = 0
        self._early_allowed = True

    def wait(self, now: float) -> float:
        """Seconds until the next look."""
        until_due = max(0.0, self._due - now)
        return min(self.quiet, until_due) if self.quiet else until_due

    def should_flush(self, now: float, waiting: int) -> bool:
        """Whether to flush now, given the journal bytes waiting after the committed position."""
        if now >= self._due:
            self._due, self._waiting, self._early_allowed = now + self.interval, 0, True
            return True
        went_quiet = self.quiet > 0 and waiting > 0 and waiting == self._waiting
        self._waiting = waiting
        if not (went_quiet and self._early_allowed):
            return False
        self._due, self._waiting, self._early_allowed = now + self.interval, 0, False
        return True


class Flusher:
    """Moves journal records into the sink on a background thread (or on demand with :meth:`flush`)."""

    def __init__(self, settings: Settings, journal: JournalView, sink: DuckDBSink, committed: Position,
                 hooks: Sequence[TransactionHook] = (), state_providers: Sequence[StateProvider] = ()) -> None:
        self.settings = settings
        self.journal = journal
        self.sink = sink
        self.committed = committed
        self.hooks: list[TransactionHook] = list(hooks)
        self.state_providers: list[StateProvider] = list(state_providers)
        self.commit_listeners: list[Callable[[Position], None]] = []
        """Called with the new committed position after each flush that stored records (e.g. to acknowledge)."""
        self.device_profiles = profiles_from_settings(settings)
        try:
            self.device_profiles.known.update(sink.device_ids())
        except DatabaseLocked:  # known again from the next device list or reading; availability waits till then
            log.warning("could not read the known devices of a profile: the database is locked")
        self.flushed_records = 0
        self.failed_flushes = 0
        self._last_state: dict[str, str] = {}
        self._last_write = 0.0
        self._locked_since: float | None = None
        self.sizer = BatchSizer(settings.flush_max_records)
        self.retention_batch_rows = RETENTION_BATCH_ROWS
        self._retention_due = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def database_locked(self) -> bool:
        """Whether the last flush found the database held by a reader (its records still wait)."""
        return self._locked_since is not None

    # --- lag ----------------------------------------------------------------------------------------------
    def lag_records(self) -> int:
        """Records journalled but not yet committed to the database."""
        return self.journal.lag(self.committed).records

    def lag_bytes(self) -> int:
        """Journal bytes after the committed position."""
        return self.journal.bytes_after(self.committed)

    def _backlog_after(self, records: Sequence[Record]) -> int:
        """Records still waiting after this batch: 0 after a short read (it drained the journal), else estimated
        from the bytes left and this batch's record size (counting frames would cost O(backlog) per flush)."""
        if len(records) < self.sizer.limit:
            return 0
        batch_bytes = max(self.journal.bytes_after(self.committed) - self.journal.bytes_after(records[-1].end), 1)
        return round(self.journal.bytes_after(records[-1].end) * len(records) / batch_bytes)

    # --- flushing -----------------------------------------------------------------------------------------
    def _state(self, pending_after: int) -> dict[str, str]:
        values: dict[str, str] = {}
        for provider in self.state_providers:
            values.update(provider())
        values["journal_lag_records"] = str(max(pending_after, 0))
        return values

    def flush(self, force: bool = False) -> int:
        """Flush until the journal is drained or the database is locked; returns the records stored."""
        stored = 0
        with self._lock:
            while True:
                records = self.journal.read(self.committed, self.sizer.limit)
                state = self._state(self._backlog_after(records))
                comparable = {k: v for k, v in state.items() if k != "journal_lag_records"}
                due = time.monotonic() - self._last_write >= HEARTBEAT_S
                if not records and not force and not due and comparable == self._last_state:
                    return stored
                result = self._write(records, state)
                if result is None:
                    return stored
                self.sizer.succeeded()
                self._stored(records, result)
                self._last_state, self._last_write, force = comparable, time.monotonic(), False
                stored += len(records)
                if len(records) < self.sizer.limit:
                    return stored

    def _write(self, records: list[Record], state: dict[str, str]) -> FlushResult | None:
        """One transaction of ``records``; None when it could not happen now (locked, or another flusher moved
        the position). A write that fails otherwise raises, after the batch sizer had its say."""
        cutoff = self.retention_cutoff()
        batch = parse_records(records, self.settings.topic_prefix, self.settings.rejected_payload_max_bytes,
                              self.settings.clock_max_ahead_s, None if cutoff is None else epoch_us(cutoff),
                              self.device_profiles)
        state["last_flush_at"] = datetime.now(UTC).isoformat()
        state["journal_lag_bytes"] = str(self.journal.bytes_after(records[-1].end if records else self.committed))
        try:
            return self.sink.write(batch, records, state, self.hooks, expected=self.committed)
        except PositionMoved as exc:
            # Another flusher committed meanwhile (it should not exist): continue from its position.
            log.error("%s; continuing from there", exc)
            self.committed = exc.actual
            return None
        except DatabaseLocked as exc:
            self.failed_flushes += 1
            if self._locked_since is None:
                self._locked_since = time.monotonic()
                log.warning("database locked by another process, %s records wait in the journal: %s",
                            len(records), exc)
            return None
        except Exception as exc:
            if not self.sizer.give_up(records):
                raise
            log.error("journal record on %s cannot be stored (%s); keeping it in `rejected`", records[0].topic, exc)
            batch = Batch(records=1)
            reject(batch, records[0], f"could not be stored: {exc}"[:500], self.settings.rejected_payload_max_bytes)
            return self.sink.write(batch, records, state, self.hooks, expected=self.committed)

    def _stored(self, records: list[Record], result: FlushResult) -> None:
        """Move past ``records`` once they are committed."""
        if self._locked_since is not None:
            log.info("database free again after %.1fs", time.monotonic() - self._locked_since)
            self._locked_since = None
        if not records:
            return
        self.committed = records[-1].end
        self.flushed_records += len(records)
        self.journal.release(self.committed)
        for listener in self.commit_listeners:
            listener(self.committed)
        log.debug("flushed %s records (%s readings, %s duplicates, %s rejected) in %.0f ms",
                  result.records, result.telemetry, result.duplicates, result.rejected, result.seconds * 1000)
        if result.rejected:
            log.info("rejected %s of %s records (see table `rejected`)", result.rejected, len(records))

    # --- retention ----------------------------------------------------------------------------------------
    def retention_cutoff(self) -> datetime | None:
        """Raw readings stamped before this are deleted (None: ``raw_retention_days`` is 0, keep everything)."""
        days = self.settings.raw_retention_days
        return datetime.now(UTC) - timedelta(days=days) if days > 0 else None

    def apply_retention(self, force: bool = False) -> int:
        """When due (every ``RETENTION_EVERY_S``, or ``force``), delete one batch of raw readings older than the
        retention; rollups stay. Returns the rows deleted; a locked database just waits for the next round."""
        cutoff = self.retention_cutoff()
        if cutoff is None or (not force and time.monotonic() < self._retention_due):
            return 0
        with self._lock:
            try:
                deleted = self.sink.delete_raw_before(cutoff, self.retention_batch_rows)
            except DatabaseLocked:
                return 0
        # A full batch means more wait: go on at the next interval instead of holding the file now.
        more = deleted >= self.retention_batch_rows
        self._retention_due = time.monotonic() + (self.settings.flush_interval_s if more else RETENTION_EVERY_S)
        if deleted:
            log.info("deleted %s raw readings stamped before %s (THERMOLOG_RAW_RETENTION_DAYS=%s; rollups kept)",
                     f"{deleted:,}", cutoff.isoformat(timespec="seconds"), self.settings.raw_retention_days)
        return deleted

    def _loop(self) -> None:
        policy = FlushPolicy(self.settings.flush_interval_s, self.settings.flush_quiet_s, time.monotonic())
        while not self._stop.wait(policy.wait(time.monotonic())):
            # Between intervals the journal's size is all the policy needs (a stat or two, no reading).
            waiting = self.journal.bytes_after(self.committed) if policy.quiet else 0
            if not policy.should_flush(time.monotonic(), waiting):
                continue
            try:
                self.flush()
                self.apply_retention()
            except Exception:  # a bad flush must not end ingest: the records stay in the journal
                self.failed_flushes += 1
                log.exception("flush failed; will retry")

    def start(self) -> None:
        """Flush on a background thread: every ``flush_interval_s``, and early when the journal goes quiet
        (``FlushPolicy``)."""
        self._thread = threading.Thread(target=self._loop, name="flusher", daemon=True)
        self._thread.start()

    def stop(self, final_flush: bool = True, timeout: float = 30.0) -> None:
        """Stop the thread, then flush what is left (retrying a locked database up to ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not final_flush:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.flush(force=True)
            except Exception:
                log.exception("final flush failed; the journal keeps the records for the next start")
                return
            if not self.journal.read(self.committed, 1) or time.monotonic() >= deadline:
                break
            time.sleep(self.settings.flush_interval_s)  # the database is locked by a reader: wait for it
        if self.journal.read(self.committed, 1):
            log.warning("%s records stay in the journal; they are stored on the next start", self.lag_records())
