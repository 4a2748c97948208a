"""The one way to read the database: read-only, short retries on the writer's lock, never held open.

DuckDB lets one process hold a database file for writing and then no other process may open it, not even
read-only. The ingest worker holds the file only while it flushes (tens of milliseconds), so readers retry
briefly and close as soon as their query is done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from thermolog.settings import get_settings

log = logging.getLogger(__name__)


class DatabaseNotReady(RuntimeError):
    """The database file does not exist yet or stayed locked past the retry window."""


def _is_lock_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    # "different configuration": the writer is a connection of this same process (an in-process ingest worker).
    return "lock" in text or "conflicting" in text or "being used" in text or "different configuration" in text


@contextmanager
def read_connection(db_path: Path | str | None = None, retry_s: float | None = None) -> Iterator[
    duckdb.DuckDBPyConnection
]:
    """Open the database read-only for the ``with`` block, retrying while the writer holds it."""
    settings = get_settings()
    path = Path(db_path if db_path is not None else settings.db_path)
    window = settings.reader_retry_s if retry_s is None else retry_s
    if not path.exists():
        raise DatabaseNotReady(f"{path} does not exist yet: start `thermolog ingest` (or `thermolog demo`) first")
    deadline = time.monotonic() + window
    delay = 0.005
    while True:
        try:
            con = duckdb.connect(str(path), read_only=True)
            break
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not _is_lock_conflict(exc) or time.monotonic() >= deadline:
                raise DatabaseNotReady(
                    f"could not open {path} read-only within {window:.1f}s ({exc}); "
                    "is another process holding it open for writing?"
                ) from exc
            time.sleep(delay)  # the writer's flush lasts tens of ms; back off gently
            delay = min(delay * 2, 0.1)
    try:
        # Readers format and bucket times in UTC whatever the machine's zone; the app converts for display.
        con.execute("SET TimeZone = 'UTC'")
        yield con
    finally:
        con.close()


def query(sql: str, params: Sequence[Any] | None = None, db_path: Path | str | None = None) -> pl.DataFrame:
    """Run one query read-only and return the result as a Polars DataFrame (parameters as ``?``)."""
    with read_connection(db_path) as con:
        # DuckDB 2 wants results as relations (``con.sql``); ``execute(...).pl()`` no longer exists.
        return con.sql(sql, params=list(params or [])).pl()
