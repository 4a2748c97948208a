"""A journal feeds only the database it belongs to: its default folder is derived from the database path, and a
journal of another database is refused at start with what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.journal import Journal
from ingest.journal_binding import DATABASE_FILE, JournalMismatch
from ingest.worker import IngestWorker
from tests.ingest_support import db_value, telemetry
from thermolog.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "thermostats/dev-j/telemetry"


def _crashed_worker_with_a_pending_reading(settings: Settings, second: int = 1) -> None:
    """A worker that journalled one reading and died before flushing it (the reading waits in the journal)."""
    worker = IngestWorker(settings, mqtt=False)
    worker.open()
    assert worker.journal is not None and worker.flusher is not None
    worker.journal.append("mqtt", TOPIC, telemetry("dev-j", second))
    worker.flusher.stop(final_flush=False)
    worker.journal.close()


def test_the_default_journal_folder_is_derived_from_the_database_path(tmp_path: Path) -> None:
    """Two databases get two journals without any journal setting."""
    first = Settings(db_path=tmp_path / "prod.duckdb")
    second = Settings(db_path=tmp_path / "test" / "other.duckdb")
    assert first.journal_dir == tmp_path / "prod.journal"
    assert second.journal_dir == tmp_path / "test" / "other.journal"
    assert Settings(db_path=tmp_path / "prod.duckdb", journal_dir=tmp_path / "j").journal_dir == tmp_path / "j"


def test_a_new_database_with_the_default_journal_setting_gets_its_own_journal(tmp_path: Path) -> None:
    """The issue's case: a new THERMOLOG_DB_PATH, journal left at its default: the new database stores nothing
    of the old one's pending records, and the old database still gets them."""
    old = Settings(db_path=tmp_path / "old.duckdb", flush_interval_s=0.1)
    _crashed_worker_with_a_pending_reading(old)
    new = Settings(db_path=tmp_path / "new.duckdb", flush_interval_s=0.1)
    worker = IngestWorker(new, mqtt=False)
    worker.open()
    worker.stop()
    assert db_value(new.db_path, "SELECT count(*) FROM telemetry") == 0
    worker = IngestWorker(old, mqtt=False)
    worker.open()
    worker.stop()
    assert db_value(old.db_path, "SELECT count(*) FROM telemetry") == 1


def test_a_journal_of_another_database_is_refused_and_leaks_nothing(tmp_path: Path) -> None:
    """Pointing a second database at the first one's journal fails at start, naming both and what to do."""
    journal_dir = tmp_path / "shared-journal"
    first = Settings(db_path=tmp_path / "a.duckdb", journal_dir=journal_dir)
    _crashed_worker_with_a_pending_reading(first)
    assert (journal_dir / DATABASE_FILE).read_text().strip() == str((tmp_path / "a.duckdb").resolve())
    second = Settings(db_path=tmp_path / "b.duckdb", journal_dir=journal_dir)
    with pytest.raises(JournalMismatch) as refused:
        IngestWorker(second, mqtt=False).open()
    message = str(refused.value)
    assert f"belongs to the database {(tmp_path / 'a.duckdb').resolve()}" in message
    assert "THERMOLOG_DB_PATH=" in message and "THERMOLOG_JOURNAL_DIR" in message
    assert db_value(second.db_path, "SELECT count(*) FROM telemetry") == 0


def test_an_unbound_journal_with_records_is_refused_for_a_fresh_database_and_adopted_by_its_own(
        tmp_path: Path) -> None:
    """A journal from before binding existed: a database that committed from it adopts it; a fresh one is refused."""
    journal_dir = tmp_path / "legacy"
    own = Settings(db_path=tmp_path / "own.duckdb", journal_dir=journal_dir, flush_interval_s=0.1)
    worker = IngestWorker(own, mqtt=False)
    worker.open()
    assert worker.journal is not None
    worker.journal.append("mqtt", TOPIC, telemetry("dev-j", 1))
    worker.stop()  # stored: the database has committed journal records
    legacy = Journal(journal_dir, fsync_interval_s=0)
    legacy.append("mqtt", TOPIC, telemetry("dev-j", 2))
    legacy.close()
    (journal_dir / DATABASE_FILE).unlink()  # as an older version left it

    fresh = Settings(db_path=tmp_path / "fresh.duckdb", journal_dir=journal_dir)
    with pytest.raises(JournalMismatch, match="does not say which database"):
        IngestWorker(fresh, mqtt=False).open()
    worker = IngestWorker(own, mqtt=False)
    worker.open()
    worker.stop()
    assert db_value(own.db_path, "SELECT count(*) FROM telemetry") == 2
    assert (journal_dir / DATABASE_FILE).exists()


def test_ingest_command_refuses_a_foreign_journal_without_a_traceback(tmp_path: Path) -> None:
    """`thermolog ingest --db B` on A's journal exits 2 with the message, before connecting anywhere."""
    journal_dir = tmp_path / "j"
    _crashed_worker_with_a_pending_reading(Settings(db_path=tmp_path / "a.duckdb", journal_dir=journal_dir))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "THERMOLOG_MQTT_URL": "mqtt://127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "thermolog.cli", "ingest", "--db", str(tmp_path / "b.duckdb"),
                           "--journal-dir", str(journal_dir)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "belongs to the database" in done.stderr and "Traceback" not in done.stderr


def test_an_empty_owner_file_left_by_a_kill_does_not_refuse_the_start(tmp_path: Path) -> None:
    """A kill while the owner file was being written leaves it empty: the journal counts as unbound (and is then
    claimed), not as another database's."""
    settings = Settings(db_path=tmp_path / "a.duckdb", journal_dir=tmp_path / "j")
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / DATABASE_FILE).write_text("")
    worker = IngestWorker(settings, mqtt=False)
    worker.open()
    worker.stop()
    assert (tmp_path / "j" / DATABASE_FILE).read_text().strip() == str((tmp_path / "a.duckdb").resolve())



def test_the_old_default_journal_folder_becomes_the_databases_journal_on_upgrade(tmp_path: Path) -> None:
    """An installation from before (data/journal beside data/thermolog.duckdb, records waiting, no owner file)
    starts with the default settings: the folder is renamed to data/thermolog.journal and its records stored."""
    db = tmp_path / "thermolog.duckdb"
    old = Settings(db_path=db, journal_dir=tmp_path / "journal", flush_interval_s=0.1)
    worker = IngestWorker(old, mqtt=False)
    worker.open()
    assert worker.journal is not None
    worker.journal.append("mqtt", TOPIC, telemetry("dev-j", 1))
    worker.stop()  # stored: the database has committed records from that journal
    _crashed_worker_with_a_pending_reading(old, second=2)  # and one more waits there
    (tmp_path / "journal" / DATABASE_FILE).unlink()  # as an older version left it
    worker = IngestWorker(Settings(db_path=db, flush_interval_s=0.1), mqtt=False)
    worker.open()
    worker.stop()
    assert not (tmp_path / "journal").exists() and (tmp_path / "thermolog.journal" / DATABASE_FILE).exists()
    assert db_value(db, "SELECT count(*) FROM telemetry") == 2


def test_another_databases_old_journal_folder_is_left_alone(tmp_path: Path) -> None:
    """data/journal bound to data/a.duckdb is not taken by data/b.duckdb, which gets data/b.journal."""
    _crashed_worker_with_a_pending_reading(Settings(db_path=tmp_path / "a.duckdb", journal_dir=tmp_path / "journal"))
    worker = IngestWorker(Settings(db_path=tmp_path / "b.duckdb"), mqtt=False)
    worker.open()
    worker.stop()
    assert (tmp_path / "journal" / DATABASE_FILE).exists() and (tmp_path / "b.journal").is_dir()
    assert db_value(tmp_path / "b.duckdb", "SELECT count(*) FROM telemetry") == 0


def test_a_database_does_not_leave_its_journals_records_behind_when_switched(tmp_path: Path) -> None:
    """A database whose journal still holds records it has not stored refuses another journal until they are."""
    db = tmp_path / "db.duckdb"
    first = Settings(db_path=db, journal_dir=tmp_path / "first", flush_interval_s=0.1)
    _crashed_worker_with_a_pending_reading(first)
    with pytest.raises(JournalMismatch, match="still holds records it has not stored"):
        IngestWorker(Settings(db_path=db, journal_dir=tmp_path / "second"), mqtt=False).open()
    worker = IngestWorker(first, mqtt=False)
    worker.open()
    worker.stop()
    worker = IngestWorker(Settings(db_path=db, journal_dir=tmp_path / "second"), mqtt=False)
    worker.open()
    worker.stop()
    assert db_value(db, "SELECT count(*) FROM telemetry") == 1
    assert db_value(db, "SELECT value FROM ingest_state WHERE key = 'journal_dir'") == str(
        (tmp_path / "second").resolve())
