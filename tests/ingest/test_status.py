"""`thermolog status` / collect_status: counts, rates, lag, worker and MQTT state, devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.status import collect_status, format_status
from ingest.worker import IngestWorker
from tests.ingest_support import db_value, forget_session, mosquitto_pub, telemetry
from tests.waiting import wait_until
from thermolog.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "thermolog.cli", "status", *args], env={**os.environ, **env},
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_status_reports_counts_rates_connection_and_devices(thermolog_env: dict[str, str], topic_prefix: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """After two readings, one bad message and an online status, status shows exactly that."""
    monkeypatch.setenv("THERMOLOG_FLUSH_INTERVAL_S", "0.1")
    get_settings.cache_clear()
    worker = IngestWorker(get_settings())
    worker.start()
    try:
        mosquitto_pub(f"{topic_prefix}/dev-s1/telemetry", telemetry("dev-s1", 1))
        mosquitto_pub(f"{topic_prefix}/dev-s1/telemetry", telemetry("dev-s1", 2))
        mosquitto_pub(f"{topic_prefix}/dev-s1/telemetry", b"not json")
        mosquitto_pub(f"{topic_prefix}/dev-s1/status", b"online")
        db = thermolog_env["THERMOLOG_DB_PATH"]
        wait_until(lambda: db_value(db, "SELECT value FROM ingest_state WHERE key = 'messages_total'") == "4",
                   20, what="four messages stored")
        wait_until(lambda: db_value(db, "SELECT value FROM ingest_state WHERE key = 'mqtt_connected'") == "true",
                   20, what="the connection state")
        status = collect_status(get_settings())
        assert (status.messages_total, status.rejected_total, status.duplicates_total) == (4, 1, 0)
        assert status.telemetry_rate_1m == pytest.approx(2 / 60)
        assert status.telemetry_rate_5m == pytest.approx(2 / 300)
        assert status.rejected_rate_1m == pytest.approx(1 / 60)
        assert status.journal_lag_records == 0 and status.journal_lag_bytes == 0
        assert status.mqtt_connected is True and status.worker_running
        assert [(d.device_id, d.status, d.last_seen) for d in status.devices] == [
            ("dev-s1", "online", datetime(2025, 7, 4, 0, 0, 2, tzinfo=UTC))]

        text = _cli(thermolog_env)
        assert text.returncode == 0, text.stderr
        for expected in ("dev-s1", "online", "1 rejected", "connected to mqtt://127.0.0.1:1883", "running",
                         "0.03 msg/s (last 1 min)", "2025-07-04 00:00:02 UTC", "0 records (0 B)"):
            assert expected in text.stdout, (expected, text.stdout)
        data = json.loads(_cli(thermolog_env, "--json").stdout)
        assert data["messages_total"] == 4 and data["devices"][0]["status"] == "online"
    finally:
        worker.stop()
        forget_session(thermolog_env["THERMOLOG_INGEST_CLIENT_ID"])
    after = collect_status(get_settings())
    assert after.mqtt_connected is False


def test_status_shows_journal_lag_while_records_wait(thermolog_env: dict[str, str]) -> None:
    """Records journalled but not flushed show up as lag, in records and bytes."""
    settings = get_settings()
    worker = IngestWorker(settings, mqtt=False)
    worker.open()
    worker.flusher.stop(final_flush=False)
    for second in range(5):
        worker.journal.append("mqtt", f"{settings.topic_prefix}/dev-1/telemetry", telemetry("dev-1", second))
    try:
        status = collect_status(settings)
        assert status.journal_lag_records == 5
        assert status.journal_lag_bytes > 5 * len(telemetry("dev-1", 0))
        assert "5 records" in format_status(status)
    finally:
        worker.journal.close()


def test_status_without_a_database_says_how_to_start(thermolog_env: dict[str, str]) -> None:
    """Before the first ingest run the CLI explains what is missing and exits 1."""
    result = _cli(thermolog_env)
    assert result.returncode == 1
    assert "does not exist yet" in result.stdout and "thermolog ingest" in result.stdout
