"""What the sinks, the flusher and the worker share without importing DuckDB: the journal position's key in
``ingest_state`` and the lock error. The receiving process imports only this (``thermolog ingest`` leaves every
DuckDB connection to its flusher process)."""

from __future__ import annotations

JOURNAL_POSITION_KEY = "journal_position"


class DatabaseLocked(RuntimeError):
    """Another process (usually a reader) holds the database file; the flush will be retried."""


def is_locked(exc: BaseException) -> bool:
    """Whether a sink call failed only because another process holds the file (``retry_while_locked``'s test)."""
    return isinstance(exc, DatabaseLocked)
