"""The flusher process reads the stored state for the worker, and a worker that cannot start leaves no flusher."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from ingest.flush_process import FlusherProcess
from ingest.journal import START
from ingest.journal_binding import JournalMismatch, bind_journal
from ingest.worker import IngestWorker
from tests.ingest_support import db_value
from thermolog.settings import Settings, get_settings

pytestmark = pytest.mark.slow  # starts a Python process per test: outside the fast loop (docs/testing.md)


@pytest.fixture
def settings(thermolog_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Isolated settings with a fast flush."""
    monkeypatch.setenv("THERMOLOG_FLUSH_INTERVAL_S", "0.05")
    get_settings.cache_clear()
    return get_settings()


def _flusher_children() -> list[psutil.Process]:
    return [child for child in psutil.Process().children()
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE
            and "ingest.flush_process" in " ".join(child.cmdline())]


def test_the_flusher_process_reports_the_stored_state(settings: Settings) -> None:
    """The worker learns the committed position and the stored state from its flusher process."""
    worker = IngestWorker(settings, mqtt=False, flusher_process=True)
    worker.open()
    worker.journal.append("mqtt", f"{settings.topic_prefix}/dev-1/telemetry", b"not json")
    worker.stop()
    position = db_value(settings.db_path, "SELECT value FROM ingest_state WHERE key = 'journal_position'")
    assert position

    flush_process = FlusherProcess(settings)
    try:
        stored = flush_process.open(timeout=30.0)
    finally:
        flush_process.stop()  # before start(): it ends without flushing
    assert stored["journal_position"] == position
    assert stored["rejected_total"] == "1"
    assert not _flusher_children()


def test_a_worker_that_cannot_start_leaves_no_flusher_process(settings: Settings, tmp_path: Path) -> None:
    """A journal bound to another database stops the start before anything is stored; its flusher ends too."""
    bind_journal(settings.journal_dir, tmp_path / "other.duckdb", START)
    worker = IngestWorker(settings, mqtt=False, flusher_process=True)
    with pytest.raises(JournalMismatch):
        worker.open()
    assert not _flusher_children()
