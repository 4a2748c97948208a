"""The ingest worker in-process against the real Mosquitto: seed payloads, bad input, status, state, commands."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.worker import IngestWorker
from tests.conftest import SEED_SYSTEM, SEED_TELEMETRY
from tests.ingest_support import db_rows, db_value, forget_session, mosquitto_pub, telemetry
from tests.waiting import wait_until
from thermolog.settings import get_settings


@pytest.fixture
def worker(thermolog_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[IngestWorker]:
    """A started ingest worker flushing every 0.1 s, stopped and its broker session removed afterwards."""
    monkeypatch.setenv("THERMOLOG_FLUSH_INTERVAL_S", "0.1")
    get_settings.cache_clear()
    ingest = IngestWorker(get_settings())
    ingest.start()
    yield ingest
    ingest.stop()
    forget_session(thermolog_env["THERMOLOG_INGEST_CLIENT_ID"])


def _db(env: dict[str, str]) -> str:
    return env["THERMOLOG_DB_PATH"]


def test_seed_payloads_land_with_exactly_their_values(worker: IngestWorker, thermolog_env: dict[str, str],
                                                      topic_prefix: str) -> None:
    """The seed's telemetry and edge system payloads, sent with mosquitto_pub, are stored as given."""
    host = f"edge-{uuid.uuid4().hex[:8]}"
    mosquitto_pub(f"{topic_prefix}/esp32c3-01/telemetry", SEED_TELEMETRY)
    mosquitto_pub(f"edge/{host}/system", SEED_SYSTEM, qos=0)
    db = _db(thermolog_env)
    rows = wait_until(lambda: db_rows(db, "SELECT device_id, ts, temperature, humidity, target_temp, heating "
                                          "FROM telemetry"), 20, what="the seed reading")
    assert rows == [("esp32c3-01", datetime(2025, 7, 4, 0, 13, 36, tzinfo=UTC), 25.8, 44.9, 25.0, False)]
    system = wait_until(lambda: db_rows(db, "SELECT host, ts, cpu_usage, memory_usage, disk_usage, net_bytes_sent "
                                            "FROM system_metrics WHERE host = ?", [host]), 20, what="the system row")
    assert system == [(host, datetime(2025, 6, 26, 18, 55, 0, 363867, tzinfo=UTC), 0.0, 6.6, 0.3, None)]
    assert db_value(db, "SELECT count(*) FROM rejected") == 0


MALFORMED = {
    "not json": (b"{temperature: 25", "not valid JSON"),
    "missing field": (b'{"temperature": 25.8, "timestamp": "2025-07-04T00:13:36Z", "humidity": 40, '
                      b'"device_id": "dev-a", "heating": "OFF"}', "target_temp"),
    "wrong type": (b'{"temperature": "warm", "timestamp": "2025-07-04T00:13:36Z", "target_temp": 25, '
                   b'"device_id": "dev-a", "heating": "OFF"}', "temperature"),
    "nan": (b'{"temperature": NaN, "timestamp": "2025-07-04T00:13:36Z", "target_temp": 25, '
            b'"device_id": "dev-a", "heating": "OFF"}', "not valid JSON"),
    "id mismatch": (telemetry("someone-else", 1), "does not match"),
    "one megabyte": (b'{"pad": "' + b"x" * (1024 * 1024) + b'"}', "exceeds"),
}


def test_malformed_messages_are_rejected_with_a_reason_and_ingest_carries_on(
        worker: IngestWorker, thermolog_env: dict[str, str], topic_prefix: str) -> None:
    """Each bad message lands in `rejected` with topic, bytes and reason; the next good message lands."""
    topic = f"{topic_prefix}/dev-a/telemetry"
    for payload, _reason in MALFORMED.values():
        mosquitto_pub(topic, payload)
    bad_id_topic = f"{topic_prefix}/thermostat-é/telemetry"  # MQTT allows it; the contract does not
    mosquitto_pub(bad_id_topic, telemetry("thermostat-é", 2))
    mosquitto_pub(topic, telemetry("dev-a", 3))
    db = _db(thermolog_env)
    wait_until(lambda: db_value(db, "SELECT count(*) FROM telemetry") == 1, 20, what="the good reading")
    rejected = wait_until(lambda: db_rows(db, "SELECT topic, reason, payload, payload_size FROM rejected "
                                              "ORDER BY received_at"), 20, what="rejected rows")
    assert len(rejected) == len(MALFORMED) + 1
    limit = get_settings().rejected_payload_max_bytes
    for (name, (payload, reason)), row in zip(MALFORMED.items(), rejected, strict=False):
        assert row[0] == topic, name
        assert reason in row[1], (name, row[1])
        assert row[2] == payload[:limit], name
        assert row[3] == len(payload), name
    assert rejected[-1][0] == bad_id_topic
    assert "device_id" in rejected[-1][1]
    assert worker.mqtt is not None and worker.mqtt.connected.is_set()
    assert db_value(db, "SELECT value FROM ingest_state WHERE key = 'rejected_total'") == str(len(MALFORMED) + 1)


def test_repeated_readings_are_stored_once(worker: IngestWorker, thermolog_env: dict[str, str],
                                           topic_prefix: str) -> None:
    """The same (device, timestamp) sent again, in the same flush or a later one, is stored once; a late one with
    other values is a conflicting duplicate, kept in `rejected`."""
    topic = f"{topic_prefix}/dev-b/telemetry"
    for _ in range(3):
        mosquitto_pub(topic, telemetry("dev-b", 10))
    mosquitto_pub(topic, telemetry("dev-b", 11))
    db = _db(thermolog_env)
    wait_until(lambda: db_value(db, "SELECT value FROM ingest_state WHERE key = 'messages_total'") == "4",
               20, what="four messages")
    mosquitto_pub(topic, telemetry("dev-b", 10, temperature=99.0))
    wait_until(lambda: db_value(db, "SELECT value FROM ingest_state WHERE key = 'messages_total'") == "5",
               20, what="the late repeat")
    assert db_rows(db, "SELECT ts, temperature FROM telemetry ORDER BY ts") == [
        (datetime(2025, 7, 4, 0, 0, 10, tzinfo=UTC), 20.0), (datetime(2025, 7, 4, 0, 0, 11, tzinfo=UTC), 20.0)]
    assert db_value(db, "SELECT value FROM ingest_state WHERE key = 'duplicates_total'") == "2"
    assert db_value(db, "SELECT reason FROM rejected").startswith("conflicting duplicate")
    assert db_value(db, "SELECT n FROM telemetry_1m") == 2


def test_status_last_will_state_and_commands_are_recorded(worker: IngestWorker, thermolog_env: dict[str, str],
                                                          topic_prefix: str) -> None:
    """online/offline (the last will), retained state, and cmd + cmd/ack seen on the bus are stored."""
    device = "dev-c"
    status_topic = f"{topic_prefix}/{device}/status"
    # A device that announces itself online and dies without DISCONNECT: the broker sends its last will.
    holder = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", "1883", "-t", f"{topic_prefix}/{device}/cmd", "-q", "1",
         "--will-topic", status_topic, "--will-payload", "offline", "--will-qos", "1", "--will-retain"],
        stdout=subprocess.DEVNULL,
    )
    try:
        mosquitto_pub(status_topic, b"online", retain=True)
        mosquitto_pub(f"{topic_prefix}/{device}/state", b'{"target_temp": 21.5, "mode": "heat", "hysteresis": 0.3, '
                                                         b'"firmware": "1.2.0"}', retain=True)
        mosquitto_pub(f"{topic_prefix}/{device}/cmd", b'{"request_id": "r-1", "target_temp": 22, '
                                                       b'"issued_by": "alice@example.com"}')
        mosquitto_pub(f"{topic_prefix}/{device}/cmd/ack", b'{"request_id": "r-1", "ok": true, "target_temp": 22}')
        mosquitto_pub(f"{topic_prefix}/{device}/cmd/ack", b'{"request_id": "r-2", "ok": false, '
                                                           b'"error": "out of range"}')
        db = _db(thermolog_env)
        wait_until(lambda: db_value(db, "SELECT count(*) FROM commands") == 2, 20, what="two commands")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    wait_until(lambda: db_rows(db, "SELECT status FROM device_status ORDER BY ts") == [("online",), ("offline",)],
               20, what="online then offline")
    state = db_rows(db, "SELECT device_id, target_temp, mode, hysteresis, firmware FROM device_state")
    assert state == [(device, 21.5, "heat", 0.3, "1.2.0")]
    commands = db_rows(db, "SELECT request_id, device_id, sent_at IS NOT NULL, issued_by, target_temp, "
                           "acked_at IS NOT NULL, ok, error FROM commands ORDER BY request_id")
    assert commands == [
        ("r-1", device, True, "alice@example.com", 22.0, True, True, None),
        ("r-2", device, False, None, None, True, False, "out of range"),
    ]
    for kind in ("status", "state"):  # clear the retained messages this test left on the broker
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-q", "1", "-r", "-n", "-t",
                        f"{topic_prefix}/{device}/{kind}"], check=True, timeout=10)


def test_ingest_cli_help_explains_the_worker() -> None:
    """`thermolog ingest --help` names its options and what the worker does."""
    out = subprocess.run([sys.executable, "-m", "thermolog.cli", "ingest", "--help"], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    assert "--db" in out and "--journal-dir" in out and "journal" in out and "rejected" in out

