"""A journal belongs to one database: the first ingest start writes that database's path into the journal folder
(``DATABASE_FILE``), and every later start refuses a journal whose records are meant for another database (they
would leak from one installation, or a test database, into another)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ingest.journal import START, Position, list_segments, read_records

log = logging.getLogger(__name__)

DATABASE_FILE = "database"
"""File in the journal folder holding the absolute path of the database it feeds."""


class JournalMismatch(RuntimeError):
    """The journal folder belongs to another database; the message says what to do."""


def _owner(journal_dir: Path) -> Path | None:
    try:
        text = (journal_dir / DATABASE_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return Path(text) if text else None


def _record_owner(journal_dir: Path, database: Path) -> None:
    """Write the owner atomically (a kill mid-write must not leave a half path that refuses the next start)."""
    journal_dir.mkdir(parents=True, exist_ok=True)
    partial = journal_dir / f"{DATABASE_FILE}.tmp"
    partial.write_text(f"{database}\n", encoding="utf-8")
    os.replace(partial, journal_dir / DATABASE_FILE)


def bind_journal(journal_dir: Path, db_path: Path, committed: Position) -> None:
    """Check that ``journal_dir`` may feed ``db_path`` and record the pairing; raise JournalMismatch if not.

    A folder without the record (made before journals were bound) is adopted when it is empty or when the
    database has already committed journal records (it is that database's own journal); a fresh database is not
    given an unbound journal that holds records.
    """
    journal_dir, database = Path(journal_dir).resolve(), Path(db_path).resolve()
    owner = _owner(journal_dir)
    if owner is not None and owner != database:
        raise JournalMismatch(
            f"the journal {journal_dir} belongs to the database {owner}, not to {database}: its records would be "
            f"stored in the wrong database. Start with THERMOLOG_DB_PATH={owner} to store them where they belong, "
            f"or give {database.name} its own journal (leave THERMOLOG_JOURNAL_DIR unset: it is then "
            f"{database.with_name(database.stem + '.journal')}). Once {owner} holds everything (`thermolog status "
            f"--db {owner} --journal-dir {journal_dir}` shows no lag), {journal_dir} may be deleted."
        )
    if owner is None:
        pending = journal_dir.is_dir() and list_segments(journal_dir) and read_records(journal_dir, START, 1)
        if pending and committed == START:
            raise JournalMismatch(
                f"the journal {journal_dir} holds records but does not say which database they belong to, and "
                f"{database} has stored none of them yet: they may come from another installation. Start with the "
                f"database this journal fed (THERMOLOG_DB_PATH), or use another journal folder for {database.name} "
                "(leave THERMOLOG_JOURNAL_DIR unset for one beside it), or delete the journal if its records are "
                "not wanted."
            )
        _record_owner(journal_dir, database)
        log.info("journal %s now belongs to database %s", journal_dir, database)



LEGACY_JOURNAL_DIR = "journal"
"""The folder beside the database that held the journal before journals were named after their database."""


def adopt_legacy_journal(journal_dir: Path, db_path: Path, committed: Position) -> bool:
    """On the first start after an upgrade, rename the older default journal folder beside the database
    (``data/journal``) to this database's journal folder (``data/thermolog.journal``), so records waiting there
    are stored and journal positions stay in one numbering. Only a folder that is this database's (bound to it,
    or unbound while the database has committed records from a journal, or empty) is taken; returns whether it
    was."""
    journal_dir, database = Path(journal_dir), Path(db_path).resolve()
    legacy = database.parent / LEGACY_JOURNAL_DIR
    if journal_dir.exists() or not legacy.is_dir() or legacy.resolve() == journal_dir.resolve():
        return False
    owner = _owner(legacy)
    pending = bool(list_segments(legacy) and read_records(legacy, START, 1))
    if owner not in (None, database) or (owner is None and pending and committed == START):
        return False
    journal_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(legacy, journal_dir)
    log.info("journal folder %s renamed to %s (journal folders are now named after their database)", legacy,
             journal_dir)
    return True


JOURNAL_DIR_KEY = "journal_dir"
"""``ingest_state`` key: the journal whose positions the database has committed."""


def check_database_journal(stored: dict[str, str], journal_dir: Path, committed: Position) -> None:
    """Refuse to switch a database to another journal while the one it committed from still holds records after
    the committed position (their positions would no longer count, and they would never be stored)."""
    recorded = stored.get(JOURNAL_DIR_KEY)
    if not recorded or Path(recorded) == Path(journal_dir).resolve():
        return
    previous = Path(recorded)
    waiting = previous.is_dir() and list_segments(previous) and read_records(previous, committed, 1)
    if waiting:
        raise JournalMismatch(
            f"this database's journal was {previous}, which still holds records it has not stored; switching to "
            f"{Path(journal_dir).resolve()} now would leave them there. Start with THERMOLOG_JOURNAL_DIR={previous} "
            "until `thermolog status` shows no lag, then switch."
        )
