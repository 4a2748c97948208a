"""Crash safety of `thermolog ingest` as a real process: kill -9 mid-burst, locked database while messages arrive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import pytest

from ingest.worker import IngestWorker
from tests.conftest import PrivateBroker
from tests.ingest_support import db_value, mosquitto_pub, telemetry
from tests.waiting import wait_until
from thermolog.settings import get_settings

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BURST = 5000


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = Path(env["THERMOLOG_DB_PATH"]).with_name("ingest.log")
    with log.open("ab") as out:  # a file, not a pipe: a full pipe would block the worker's logging
        proc = subprocess.Popen([sys.executable, "-m", "thermolog.cli", "ingest"], env={**os.environ, **env},
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    db = env["THERMOLOG_DB_PATH"]
    wait_until(lambda: proc.poll() is not None or db_value(
        db, "SELECT value FROM ingest_state WHERE key = 'mqtt_connected'") == "true", 30, what="worker subscribed")
    assert proc.poll() is None, log.read_text()
    return proc


def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


class Publisher(threading.Thread):
    """Publishes readings at QoS 1 at a bounded pace, so the burst lasts long enough to be interrupted."""

    def __init__(self, port: int, prefix: str, count: int, per_tick: int = 50, tick_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.port, self.prefix, self.count = port, prefix, count
        self.per_tick, self.tick_s = per_tick, tick_s
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        client = mqtt.Client(client_id=f"pub-{self.prefix}", clean_session=True)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        try:
            client.connect("127.0.0.1", self.port)
            client.loop_start()
            pace = threading.Event()  # never set: waiting on it paces the burst
            infos = []
            for i in range(self.count):
                device = f"dev-{i % 5}"
                infos.append(client.publish(f"{self.prefix}/{device}/telemetry", telemetry(device, i), qos=1))
                if i % self.per_tick == self.per_tick - 1:
                    pace.wait(self.tick_s)
            for info in infos:
                info.wait_for_publish(30)
                assert info.is_published()
            client.disconnect()
            client.loop_stop()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()


@pytest.fixture
def env(thermolog_env: dict[str, str], private_broker: PrivateBroker) -> dict[str, str]:
    """Worker settings against a private broker that queues without limit for the offline persistent session."""
    private_broker.extra_config = "max_queued_messages 0\n"
    private_broker.start()
    return {**thermolog_env, "THERMOLOG_MQTT_URL": f"mqtt://127.0.0.1:{private_broker.port}",
            "THERMOLOG_FLUSH_INTERVAL_S": "0.2"}


def test_kill_9_mid_burst_then_restart_stores_every_message_exactly_once(env: dict[str, str],
                                                                        private_broker: PrivateBroker,
                                                                        topic_prefix: str) -> None:
    """SIGKILL while 5,000 QoS 1 messages arrive; after a restart exactly 5,000 distinct rows exist."""
    db = env["THERMOLOG_DB_PATH"]
    worker = _start_worker(env)
    publisher = Publisher(private_broker.port, topic_prefix, BURST, per_tick=50, tick_s=0.05)  # ~5 s
    try:
        publisher.start()
        wait_until(lambda: (db_value(db, "SELECT count(*) FROM telemetry") or 0) >= 200,
                   30, what="the first stored readings", interval=0.2)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert not publisher.done.is_set(), "the burst ended before the kill: not a mid-burst crash"
        killed_at = db_value(db, "SELECT count(*) FROM telemetry")
        assert killed_at < BURST
        assert publisher.done.wait(60) and publisher.error is None, publisher.error

        worker = _start_worker(env)
        wait_until(lambda: db_value(db, "SELECT count(*) FROM telemetry") == BURST,
                   60, what="all readings", interval=0.2)
        wait_until(lambda: db_value(db, "SELECT value FROM ingest_state WHERE key = 'journal_lag_records'") == "0",
                   30, what="an empty journal", interval=0.2)
    finally:
        _stop_worker(worker)
    assert worker.returncode == 0
    assert db_value(db, "SELECT count(*) FROM telemetry") == BURST
    assert db_value(db, "SELECT count(DISTINCT (device_id, ts)) FROM telemetry") == BURST
    assert db_value(db, "SELECT count(*) FROM rejected") == 0


def test_reader_holding_the_database_10s_delays_but_loses_nothing(env: dict[str, str],
                                                                  private_broker: PrivateBroker,
                                                                  topic_prefix: str) -> None:
    """1,000 messages arrive while another process keeps the file open read-only; all land once it lets go."""
    db = env["THERMOLOG_DB_PATH"]
    worker = _start_worker(env)
    try:
        holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import time
            from thermolog.reader import read_connection
            with read_connection({db!r}, retry_s=10) as con:
                print("held", flush=True)
                time.sleep(10)
        """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        publisher = Publisher(private_broker.port, topic_prefix, 1000, per_tick=1000)
        publisher.start()
        assert publisher.done.wait(30) and publisher.error is None, publisher.error
        assert holder.poll() is None, "the reader let go before all messages were published"
        assert db_value(db, "SELECT count(*) FROM telemetry", ) in (None, 0)  # the reader still holds the file
        holder.wait(30)
        wait_until(lambda: db_value(db, "SELECT count(*) FROM telemetry") == 1000,
                   30, what="1,000 readings", interval=0.2)
    finally:
        _stop_worker(worker)
    assert worker.returncode == 0
    assert db_value(db, "SELECT count(DISTINCT (device_id, ts)) FROM telemetry") == 1000


def test_worker_reconnects_after_the_broker_restarts(thermolog_env: dict[str, str], private_broker: PrivateBroker,
                                                    topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker restart drops the connection; the worker reconnects, resubscribes and stores what comes next."""
    private_broker.start()
    monkeypatch.setenv("THERMOLOG_MQTT_URL", f"mqtt://127.0.0.1:{private_broker.port}")
    monkeypatch.setenv("THERMOLOG_FLUSH_INTERVAL_S", "0.1")
    get_settings.cache_clear()
    worker = IngestWorker(get_settings())
    worker.start()
    try:
        private_broker.stop()
        wait_until(lambda: not worker.mqtt.connected.is_set(), 10, what="the worker to notice the broker is gone")
        private_broker.start()
        wait_until(worker.mqtt.subscribed.is_set, 60, what="reconnected and resubscribed")
        mosquitto_pub(f"{topic_prefix}/dev-r/telemetry", telemetry("dev-r", 1), port=private_broker.port)
        db = thermolog_env["THERMOLOG_DB_PATH"]
        wait_until(lambda: db_value(db, "SELECT count(*) FROM telemetry") == 1, 20, what="the reading after reconnect")
        assert worker.mqtt.reconnects >= 1
    finally:
        worker.stop()


def test_killed_flusher_process_is_restarted_and_the_worker_still_stops_cleanly(
        env: dict[str, str], private_broker: PrivateBroker, topic_prefix: str) -> None:
    """kill -9 of the flusher child: the worker starts a new one, readings keep landing, SIGTERM still works."""
    db = env["THERMOLOG_DB_PATH"]
    worker = _start_worker(env)
    try:
        children = psutil.Process(worker.pid).children()
        flushers = [c for c in children if "ingest.flush_process" in " ".join(c.cmdline())]
        assert len(flushers) == 1, [c.cmdline() for c in children]
        flushers[0].kill()
        flushers[0].wait(10)
        publisher = Publisher(private_broker.port, topic_prefix, 300, per_tick=300)
        publisher.start()
        assert publisher.done.wait(30) and publisher.error is None, publisher.error
        wait_until(lambda: db_value(db, "SELECT count(*) FROM telemetry") == 300,
                   60, what="300 readings", interval=0.2)
    finally:
        _stop_worker(worker)
    assert worker.returncode == 0
