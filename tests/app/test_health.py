"""Health page: worker, ingest lag, flush age, broker, journal size, rejected payloads with reasons, alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from ingest.journal import Journal
from tests.app_support import STALE_DEVICE, app, recent_db, texts, use_db


def add_state(db: Path, values: dict[str, str]) -> None:
    """Write ingest bookkeeping as the worker does."""
    con = duckdb.connect(str(db))
    try:
        for key, value in values.items():
            con.execute("INSERT INTO ingest_state (key, value) VALUES (?, ?)", [key, value])
    finally:
        con.close()


def journal_with(directory: Path, records: int) -> None:
    """A journal holding ``records`` messages that no flush has moved into the database."""
    journal = Journal(directory, fsync_interval_s=0)
    try:
        for index in range(records):
            journal.append("mqtt", "thermostats/x/telemetry", b"{}" * 100 + str(index).encode())
    finally:
        journal.close()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Recent readings, a running worker's bookkeeping, and 1,234 records waiting in the journal."""
    path = recent_db(tmp_path / "health.duckdb")
    add_state(path, {"mqtt_connected": "true", "messages_total": "5000", "rejected_total": "1",
                     "last_flush_at": (datetime.now(UTC) - timedelta(seconds=3)).isoformat()})
    journal_with(tmp_path / "journal", 1234)
    use_db(monkeypatch, path, journal_dir=str(tmp_path / "journal"))
    return path


@pytest.mark.slow
def test_ingest_figures_rejected_and_alerts(db: Path, tmp_path: Path) -> None:
    """Worker running, lag from the journal, flush age, connection, journal bytes, rejected reasons, alerts."""
    at = app("health")
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Ingest worker"] == "running"
    assert metrics["Ingest lag"] == "1,234 records"
    assert metrics["Last flush"].endswith(" ago")
    assert metrics["Ingest ↔ broker"] == "connected"
    size = sum(f.stat().st_size for f in (tmp_path / "journal").iterdir())
    assert metrics["Journal on disk"] == f"{size / 1024:,.1f} KiB"
    assert any("5,000 messages stored or rejected" in c for c in texts(at.caption))
    counts, latest = at.dataframe[0].value, at.dataframe[1].value
    assert list(counts["reason"]) == ["not JSON"]
    assert latest["topic"][0] == "thermostats/bad/telemetry" and latest["preview"][0].endswith("garbage")
    assert any(w.startswith(f"**{STALE_DEVICE}**: offline for") for w in texts(at.warning))


def test_stopped_worker_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose last flush is old is shown as not running, with what to start."""
    path = recent_db(tmp_path / "old.duckdb")
    add_state(path, {"mqtt_connected": "true", "last_flush_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat()})
    use_db(monkeypatch, path, journal_dir=str(tmp_path / "none"))
    at = app("health")
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Ingest worker"], metrics["Ingest ↔ broker"]) == ("not running", "last known connected")
    assert any("probably not running" in w and "thermolog ingest" in w for w in texts(at.warning))


def test_never_flushed_database_says_to_start_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database no worker has flushed into yet says to start the worker."""
    use_db(monkeypatch, recent_db(tmp_path / "fresh.duckdb"), journal_dir=str(tmp_path / "none"))
    at = app("health")
    assert not at.exception
    assert any("start `thermolog ingest`" in w for w in texts(at.warning))
    assert {m.label: m.value for m in at.metric}["Journal on disk"] == "0 B"


def test_missing_database_shows_the_waiting_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No database yet: say what to start, and how much the journal already holds."""
    journal_with(tmp_path / "journal", 7)
    use_db(monkeypatch, tmp_path / "absent.duckdb", journal_dir=str(tmp_path / "journal"))
    at = app("health")
    assert not at.exception
    assert any("thermolog ingest" in e for e in texts(at.error))
    assert any(i.startswith("7 records wait in the journal") for i in texts(at.info))


def test_a_lost_broker_session_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When ingest reconnected and the broker had no session for it, the page says messages may be gone and why."""
    path = recent_db(tmp_path / "lost.duckdb")
    add_state(path, {"mqtt_connected": "true", "mqtt_sessions_lost": "2",
                     "mqtt_session_lost_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
                     "last_flush_at": (datetime.now(UTC) - timedelta(seconds=3)).isoformat()})
    use_db(monkeypatch, path, journal_dir=str(tmp_path / "none"))
    at = app("health")
    assert not at.exception
    assert any("lost the ingest worker's session 2 time(s)" in e and "client id" in e for e in texts(at.error))
