"""The one way to read the database: read-only, short retries on the writer's lock, never held open.

DuckDB lets one process hold a database file for writing and then no other process may open it, not even
read-only. The ingest worker holds the file only while it flushes (tens of milliseconds), so readers retry
briefly and let go as soon as their query is done.

Creating a DuckDB instance costs 15-20 ms, more than most chart queries; so each process keeps one in-memory
instance, and the reads that overlap share one read-only ATTACH of the file (``thermolog.attachments``: a second
attachment of the same file would lose the first one's lock), DETACHed when the last of them ends (about 2 ms).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from thermolog.attachments import SharedAttachments
from thermolog.db_lock import retry_while_locked
from thermolog.settings import get_settings

if TYPE_CHECKING:  # results are Polars frames, but the ingest worker (which only uses the lock check) never needs it
    import polars as pl

log = logging.getLogger(__name__)

_instance: duckdb.DuckDBPyConnection | None = None
_instance_lock = threading.Lock()


class DatabaseNotReady(RuntimeError):
    """The database file does not exist yet or stayed locked past the retry window."""


def _cursor() -> duckdb.DuckDBPyConnection:
    """A new connection to this process's in-memory DuckDB instance (created on first use)."""
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = duckdb.connect(":memory:")
            # Readers format and bucket times in UTC whatever the machine's zone; the app converts for display.
            # Set once for the instance: every cursor starts from it, no SET per read.
            _instance.execute("SET GLOBAL TimeZone = 'UTC'")
            # Without it DuckDB's allocator keeps up to 128 MiB of freed memory per process until a later query
            # needs it; the app, idle after a burst of sessions, held its peak (about 140 MiB more RSS).
            _instance.execute("SET allocator_background_threads = true")
        return _instance.cursor()


@contextmanager
def read_connection(db_path: Path | str | None = None, retry_s: float | None = None) -> Iterator[
    duckdb.DuckDBPyConnection
]:
    """The database attached read-only (and made the default catalog) for the ``with`` block, retrying while the
    writer holds it."""
    settings = get_settings()
    # With a lake configured, the default database is the lake (thermolog/lake.py): the app and the status pass
    # the configured path explicitly; only another file's path reads that file.
    if settings.lake_catalog and (db_path is None or Path(db_path) == settings.db_path):
        from thermolog import lake

        with lake.read_connection() as con:
            yield con
        return
    path = Path(db_path if db_path is not None else settings.db_path)
    window = settings.reader_retry_s if retry_s is None else retry_s
    if not path.exists():
        raise DatabaseNotReady(f"{path} does not exist yet: start `thermolog ingest` (or `thermolog demo`) first")
    with _attachments.use(str(path.resolve()), window) as alias:
        con = _cursor()
        try:
            con.execute(f"USE {alias}")
            yield con
        finally:
            con.close()


def _attach(alias: str, file: str, window_s: float) -> None:
    quoted = file.replace("'", "''")
    con = _cursor()
    try:
        # The writer's flush lasts tens of ms: back off gently.
        retry_while_locked(lambda: con.execute(f"ATTACH '{quoted}' AS {alias} (READ_ONLY)"), window_s)
    except duckdb.Error as exc:
        raise DatabaseNotReady(
            f"could not open {file} read-only within {window_s:.1f}s ({exc}); "
            "is another process holding it open for writing?"
        ) from exc
    finally:
        con.close()


def _detach(alias: str) -> None:
    # An attachment belongs to the instance, not the cursor: detach from a fresh cursor, so a caller's failed
    # statement or open result cannot keep the file attached (which would lock the writer out for good).
    cleanup = _cursor()
    try:
        cleanup.execute(f"DETACH DATABASE IF EXISTS {alias}")
    finally:
        cleanup.close()


_attachments = SharedAttachments(_attach, _detach)


def query(sql: str, params: Sequence[Any] | None = None, db_path: Path | str | None = None) -> pl.DataFrame:
    """Run one query read-only and return the result as a Polars DataFrame (parameters as ``?``)."""
    with read_connection(db_path) as con:
        # A relation (``con.sql(...).pl()``) binds the query once to learn its columns and again to run it: about
        # 7 ms more per chart query on DuckDB 1.5. DuckDB 2.0 drops ``pl()`` from ``execute`` results (its
        # migration guide): go back to the relation when raising the pinned release.
        return con.execute(sql, list(params or [])).pl()
