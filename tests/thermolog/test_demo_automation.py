"""The demo starts the alert automation only once the simulators' backfill is stored, so the hours it has not
reached yet are not announced as silent thermostats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.telemetry_db import build_db, readings
from thermolog.demo.run import _caught_up


def test_caught_up_only_when_every_simulator_has_a_recent_reading(thermolog_env: dict[str, str]) -> None:
    """sim-02's newest stored reading is 4 h old (its backfill is still arriving): not caught up; with a recent
    one too, caught up."""
    now = datetime.now(UTC)
    db = Path(thermolog_env["THERMOLOG_DB_PATH"])
    build_db(db, [readings("sim-01", now - timedelta(minutes=30), 30, 60),
                  readings("sim-02", now - timedelta(hours=5), 30, 60)])
    assert not _caught_up(["sim-01", "sim-02"], 10.0)()
    db.unlink()
    build_db(db, [readings("sim-01", now - timedelta(minutes=30), 30, 60),
                  readings("sim-02", now - timedelta(minutes=30), 30, 60)])
    assert _caught_up(["sim-01", "sim-02"], 10.0)()
