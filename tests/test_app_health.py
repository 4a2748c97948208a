"""Health page: ingest lag, flush age, broker, journal size, rejected payloads with reasons, alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from tests.app_support import STALE_DEVICE, app, recent_db, texts, use_db


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Recent readings, ingest bookkeeping as the worker writes it, and a journal of known size."""
    path = recent_db(tmp_path / "health.duckdb")
    con = duckdb.connect(str(path))
    try:
        for key, value in {"journal_lag_records": "1234", "mqtt_connected": "true",
                           "last_flush_at": (datetime.now(UTC) - timedelta(seconds=3)).isoformat()}.items():
            con.execute("INSERT INTO ingest_state (key, value) VALUES (?, ?)", [key, value])
    finally:
        con.close()
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "00000001.seg").write_bytes(b"x" * 3 * 1024 * 1024)
    use_db(monkeypatch, path, journal_dir=str(journal))
    return path


def test_ingest_figures_rejected_and_alerts(db: Path) -> None:
    """Lag and last flush from ingest_state, journal bytes on disk, rejected reasons and previews, alerts."""
    at = app("health")
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Ingest lag"] == "1,234 records"
    assert metrics["Last flush"].endswith(" ago")
    assert metrics["Ingest ↔ broker"] == "connected"
    assert metrics["Journal on disk"] == "3.0 MB"
    counts, latest = at.dataframe[0].value, at.dataframe[1].value
    assert list(counts["reason"]) == ["not JSON"]
    assert latest["topic"][0] == "thermostats/bad/telemetry" and latest["preview"][0].endswith("garbage")
    assert any(w.startswith(f"**{STALE_DEVICE}**: offline for") for w in texts(at.warning))


def test_never_flushed_database_says_to_start_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database no worker has flushed into yet says to start the worker."""
    path = recent_db(tmp_path / "fresh.duckdb")
    use_db(monkeypatch, path, journal_dir=str(tmp_path / "none"))
    at = app("health")
    assert not at.exception
    assert any("start `thermolog ingest`" in w for w in texts(at.warning))
    assert {m.label: m.value for m in at.metric}["Journal on disk"] == "0 B"
