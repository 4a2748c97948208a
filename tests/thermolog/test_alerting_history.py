"""Reading the alert history back: silences in force, and the episodes a previous automation run left open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from thermolog.alerting import history
from thermolog.schema import create_schema

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _db(tmp_path: Path, rows: list[tuple]) -> Path:
    path = tmp_path / "h.duckdb"
    con = duckdb.connect(str(path))
    try:
        create_schema(con)
        con.executemany("INSERT INTO alert_events (event_id, device_id, rule, event, ts, message, delivered, actor, "
                        "until, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [[f"e{i}", *row, NOW] for i, row in enumerate(rows)])
    finally:
        con.close()
    return path


def test_silences_in_force_take_the_latest_end(tmp_path: Path) -> None:
    """Two silences of one rule: the later end counts; an expired one is gone."""
    db = _db(tmp_path, [
        ("d1", "offline", "silenced", NOW - timedelta(hours=2), None, [], "o", NOW + timedelta(hours=1)),
        ("d1", "offline", "silenced", NOW - timedelta(hours=1), None, [], "o", NOW + timedelta(hours=3)),
        ("d2", "*", "silenced", NOW - timedelta(hours=5), None, [], "o", NOW - timedelta(hours=1)),
    ])
    assert history.silences(NOW, db) == {("d1", "offline"): NOW + timedelta(hours=3)}


def test_open_episodes_are_starts_without_a_later_clear(tmp_path: Path) -> None:
    """d1 started (not sent: cool-down) and was then sent: open and notified; d2 started and cleared: closed;
    d3 started again after a clear, not sent: open and not notified."""
    db = _db(tmp_path, [
        ("d1", "offline", "started", NOW - timedelta(minutes=40), "offline for 12 min", [], None, None),
        ("d1", "offline", "started", NOW - timedelta(minutes=5), "offline for 47 min", ["json://h/x"], None, None),
        ("d2", "temperature_high", "started", NOW - timedelta(hours=2), "hot", ["json://h/x"], None, None),
        ("d2", "temperature_high", "cleared", NOW - timedelta(hours=1), "hot", ["json://h/x"], None, None),
        ("d3", "silent", "started", NOW - timedelta(hours=3), "quiet", ["json://h/x"], None, None),
        ("d3", "silent", "cleared", NOW - timedelta(hours=2), "quiet", ["json://h/x"], None, None),
        ("d3", "silent", "started", NOW - timedelta(minutes=1), "quiet again", [], None, None),
    ])
    found = {(r["device_id"], r["rule"]): (r["started_at"], r["message"], r["notified"])
             for r in history.open_episodes(db)}
    assert found == {
        ("d1", "offline"): (NOW - timedelta(minutes=40), "offline for 47 min", True),
        ("d3", "silent"): (NOW - timedelta(minutes=1), "quiet again", False),
    }


def test_a_database_without_the_table_has_no_history(tmp_path: Path) -> None:
    """A file the ingest worker has not upgraded yet reads as empty history, not an error."""
    path = tmp_path / "old.duckdb"
    duckdb.connect(str(path)).close()
    assert history.recent(10, path).height == 0 and history.silences(NOW, path) == {}
    assert history.open_episodes(path) == []
