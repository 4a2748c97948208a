"""The reader helper: read-only, retries while a writer holds the file, and lets go when the block ends."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from ingest.parse import Batch
from ingest.sinks.duckdb import DuckDBSink
from thermolog import reader
from thermolog.schema import create_schema

WRITER_PROBE = "import duckdb, sys; duckdb.connect(sys.argv[1]).close()"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with the schema and one row in ingest_state."""
    path = tmp_path / "r.duckdb"
    con = duckdb.connect(str(path))
    create_schema(con)
    con.close()
    return path


def test_reads_and_refuses_writes(db: Path) -> None:
    """Queries work; any write is refused (read-only)."""
    assert reader.query("SELECT value FROM ingest_state WHERE key = ?", ["schema_version"], db).height == 1
    with reader.read_connection(db) as con, pytest.raises(duckdb.Error):
        con.execute("DELETE FROM ingest_state")


def test_reads_let_duckdb_return_freed_memory_in_the_background(db: Path) -> None:
    """The reader's instance purges its allocator on a timer, so an idle app does not keep its peak."""
    with reader.read_connection(db) as con:
        assert con.execute("SELECT current_setting('allocator_background_threads')").fetchone() == (True,)


UTC_PROBE = """
import sys
from thermolog import reader
sql = "SELECT current_setting('TimeZone') AS tz, strftime(TIMESTAMPTZ '2025-01-01 00:00:00+00', '%H') AS h"
with reader.read_connection(sys.argv[1]) as con:
    con.execute("SET TimeZone = 'Asia/Tokyo'")  # a caller's own setting lasts for its block only
print(*reader.query(sql, None, sys.argv[1]).row(0))
"""


@pytest.mark.slow
def test_reads_are_in_utc_whatever_the_machine_zone(db: Path) -> None:
    """Times are formatted and bucketed in UTC on a machine set to another zone, and stay so after a caller
    changed the zone inside its own block."""
    env = {**os.environ, "TZ": "America/New_York"}
    done = subprocess.run([sys.executable, "-c", UTC_PROBE, str(db)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["UTC", "00"]


def test_file_is_released_after_the_block_for_another_process(db: Path) -> None:
    """Another process can open the file for writing as soon as the block ends, not before."""
    with reader.read_connection(db) as con:
        con.execute("SELECT 1").fetchall()
        held = subprocess.run([sys.executable, "-c", WRITER_PROBE, str(db)], capture_output=True, text=True)
        assert held.returncode != 0 and "lock" in held.stderr.lower()
    free = subprocess.run([sys.executable, "-c", WRITER_PROBE, str(db)], capture_output=True, text=True)
    assert free.returncode == 0, free.stderr


def test_overlapping_reads_keep_the_writer_out_until_the_last_one_ends(db: Path) -> None:
    """Two reads of one file overlap in this process; the first to end must not let the writer in while the other
    still reads (POSIX drops a process's locks on a file when any of its descriptors closes: a second attachment
    of the same file, detached, would have released the first one's lock too)."""
    def writer_opens() -> bool:
        return subprocess.run([sys.executable, "-c", WRITER_PROBE, str(db)], capture_output=True,
                              text=True).returncode == 0

    with reader.read_connection(db) as first:
        with reader.read_connection(db) as second:
            second.execute("SELECT 1").fetchall()
        assert not writer_opens()
        assert first.execute("SELECT count(*) FROM ingest_state").fetchone() is not None
    assert writer_opens()


def test_file_is_released_even_when_the_query_fails(db: Path) -> None:
    """A failing statement inside the block still detaches the file."""
    with pytest.raises(duckdb.Error), reader.read_connection(db) as con:
        con.execute("SELECT * FROM no_such_table")
    DuckDBSink(db).write(Batch(), [])  # would raise DatabaseLocked if the file had stayed attached


def test_in_process_writer_waits_for_the_reader_and_reader_waits_for_the_writer(db: Path) -> None:
    """Reader and writer in one process take turns: each retries while the other holds the file."""
    writer_done = threading.Event()
    with reader.read_connection(db):
        thread = threading.Thread(target=lambda: (DuckDBSink(db).write(Batch(), []), writer_done.set()))
        thread.start()
        assert not writer_done.wait(0.1)  # blocked while the reader holds the file
    thread.join(10)
    assert writer_done.is_set()
    con = duckdb.connect(str(db))  # the writer side holds the file now: the reader gives up after its window
    try:
        with pytest.raises(reader.DatabaseNotReady, match="read-only within"), reader.read_connection(db, 0.2):
            pass
    finally:
        con.close()


def test_missing_database_says_what_to_start(tmp_path: Path) -> None:
    """No file yet: the error names the command to run."""
    with pytest.raises(reader.DatabaseNotReady, match="thermolog ingest"), reader.read_connection(
            tmp_path / "none.duckdb"):
        pass
