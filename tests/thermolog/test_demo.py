"""``thermolog demo`` end to end (real Mosquitto, and the embedded amqtt broker), and the embedded broker itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import paho.mqtt.client as mqtt
import psutil
import pytest

from edge_modules.host import safe_host_name
from tests.conftest import free_port
from tests.waiting import wait_until
from thermolog import contract, reader, schema
from thermolog.demo.embedded_broker import EmbeddedBroker
from thermolog.demo.run import backfill_gap

pytestmark = pytest.mark.slow

SIM_IDS = ["sim-01", "sim-02", "sim-03"]


class DemoProcess:
    """``thermolog demo`` as a subprocess; its output is collected on a thread."""

    def __init__(self, env: dict[str, str], cwd: Path, args: list[str]) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "thermolog.cli", "demo", *args], cwd=cwd,
                                     env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.output: list[str] = []
        self.running = False
        self.output_ended = False
        self.changed = threading.Condition()  # notified on every line of output and at its end
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.output.append(line)
                if line.strip().startswith("logs ") and "is running" in self.text:  # the table's last row
                    self.running = True
                self.changed.notify_all()
        with self.changed:
            self.output_ended = True
            self.changed.notify_all()

    @property
    def text(self) -> str:
        return "".join(self.output)

    def wait_running(self, timeout: float) -> None:
        """Until the demo printed its status table; fails at once if its output ends (it exited) first."""
        wait_until(lambda: self.running or self.output_ended, timeout, "the demo's status table",
                   changed=self.changed, detail=lambda: self.text)
        assert self.running, f"demo exited early:\n{self.text}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def demo_env(thermolog_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The isolated settings plus a free app port."""
    env = {**thermolog_env, "THERMOLOG_APP_PORT": str(free_port())}
    monkeypatch.setenv("THERMOLOG_APP_PORT", env["THERMOLOG_APP_PORT"])
    return env


def _readings_by_device() -> dict[str, int]:
    try:
        rows = reader.query("SELECT device_id, count(*) FROM telemetry GROUP BY device_id")
    except reader.DatabaseNotReady:
        return {}
    return dict(rows.iter_rows())


def _wait_for_readings(demo: DemoProcess, within_s: float) -> dict[str, int]:
    """Readings from all simulated thermostats in DuckDB (read through thermolog.reader) within ``within_s`` of the
    demo's start (the database file gives no signal: polled)."""
    def every_device() -> dict[str, int]:
        counts = _readings_by_device()
        if all(counts.get(d, 0) > 0 for d in SIM_IDS):
            return counts
        assert demo.proc.poll() is None, f"demo exited early:\n{demo.text}"
        return {}

    return wait_until(every_device, demo.started + within_s - time.monotonic(),
                      "readings from every simulated thermostat", interval=0.25,
                      detail=lambda: f"{_readings_by_device()}\n{demo.text}")


def _stop_and_check(demo: DemoProcess) -> None:
    """SIGINT: exit status 0 and no child process left."""
    children = psutil.Process(demo.proc.pid).children(recursive=True)
    assert any("ingest" in " ".join(c.cmdline()) for c in children)
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(90) == 0, demo.text
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind: {[c.cmdline() for c in alive]}"
    assert "stopped" in demo.text and "not every part" not in demo.text


def _app_url(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['THERMOLOG_APP_PORT']}/"


class TelemetryCounter:
    """Counts (device, timestamp) pairs published on a broker under the test's prefix."""

    def __init__(self, prefix: str, broker: tuple[str, int]) -> None:
        self.seen: set[tuple[str, str]] = set()
        self._grew = threading.Condition()
        self.client = mqtt.Client(client_id=f"count-{prefix}")
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(*broker)
        self.client.subscribe(f"{prefix}/+/telemetry", qos=1)
        self.client.loop_start()
        assert subscribed.wait(5)

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        reading = contract.parse_telemetry(message.payload)
        with self._grew:
            self.seen.add((reading.device_id, contract.format_timestamp(reading.timestamp)))
            self._grew.notify_all()

    def wait_for(self, count: int, timeout: float, what: str) -> int:
        """Wait until ``count`` distinct readings were seen; returns how many were."""
        return wait_until(lambda: len(self.seen) >= count and len(self.seen), timeout, what, changed=self._grew,
                          detail=lambda: f"{len(self.seen)} seen")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def counter(demo_env: dict[str, str], topic_prefix: str, roomy_broker: tuple[str, int],
            monkeypatch: pytest.MonkeyPatch) -> Iterator[TelemetryCounter]:
    """A counting subscriber on the roomy Mosquitto, which the demo is pointed at too.

    The backfill bursts faster than a test subscriber drains on a busy machine, and the system broker's
    ``max_queued_messages 1000`` would drop the counter's copies, not the ingest worker's.
    """
    url = f"mqtt://{roomy_broker[0]}:{roomy_broker[1]}"
    demo_env["THERMOLOG_MQTT_URL"] = url
    monkeypatch.setenv("THERMOLOG_MQTT_URL", url)
    c = TelemetryCounter(topic_prefix, roomy_broker)
    yield c
    c.close()


def test_demo_with_mosquitto_runs_and_stops_losing_nothing(
        demo_env: dict[str, str], tmp_path: Path, counter: TelemetryCounter) -> None:
    """Demo on a real Mosquitto: app answers 200, readings in DuckDB within 30 s, SIGINT exits 0 with no child
    left, and every reading published (backfill and live) is in DuckDB after the stop."""
    demo = DemoProcess(demo_env, tmp_path, ["--backfill", "30m"])
    try:
        _wait_for_readings(demo, 30)
        demo.wait_running(90)
        assert "external (THERMOLOG_MQTT_URL)" in demo.text
        assert "alert automation" in demo.text  # `thermolog automation` runs as one of the demo's parts
        with urllib.request.urlopen(_app_url(demo_env), timeout=10) as response:
            assert response.status == 200
        # Stop only once the whole backfill is out (30 min at 5 s): the stop must lose none of it.
        counter.wait_for(3 * 360, 60, "the backfill's 1,080 readings published")
        _stop_and_check(demo)
    finally:
        demo.kill()
    stored = reader.query("SELECT device_id, ts FROM telemetry")
    stored_keys = {(d, contract.format_timestamp(ts)) for d, ts in stored.iter_rows()}
    assert stored_keys == counter.seen
    offline = reader.query("SELECT count(DISTINCT device_id) FROM device_status WHERE status = 'offline'")
    assert offline.item(0, 0) == 3


def _wait_for_host_metrics(timeout: float) -> None:
    """The demo's host-metrics publisher reached the database under this machine's name (Live's edge hosts)."""
    host = safe_host_name()
    wait_until(lambda: reader.query("SELECT count(*) FROM system_metrics WHERE host = ?", [host]).item(0, 0),
               timeout, f"host metrics of {host} stored", interval=0.2, retry_on=(reader.DatabaseNotReady,))


def test_demo_without_broker_url_uses_the_embedded_broker(
        demo_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With THERMOLOG_MQTT_URL empty the demo starts amqtt on a free port (1883 is Mosquitto's here) and the
    whole chain works through it, host metrics of this machine included."""
    env = {**demo_env, "THERMOLOG_MQTT_URL": ""}
    monkeypatch.setenv("THERMOLOG_MQTT_URL", "")
    demo = DemoProcess(env, tmp_path, ["--backfill", "10m"])
    try:
        _wait_for_readings(demo, 30)
        demo.wait_running(90)
        match = re.search(r"mqtt://127\.0\.0\.1:(\d+)\s+\[embedded amqtt", demo.text)
        assert match and match.group(1) != "1883", demo.text
        with urllib.request.urlopen(_app_url(env), timeout=10) as response:
            assert response.status == 200
        _wait_for_host_metrics(30)
        _stop_and_check(demo)
    finally:
        demo.kill()
    counts = _readings_by_device()
    assert all(counts[d] >= 120 for d in SIM_IDS), counts  # the 10 min backfill at 5 s all arrived


def test_demo_reports_a_part_that_dies(demo_env: dict[str, str], tmp_path: Path) -> None:
    """If a part exits (here: ingest cannot open its database path), the demo names it and exits non-zero."""
    bad = tmp_path / "not-a-dir"
    bad.write_text("a file where the database directory should be")
    env = {**demo_env, "THERMOLOG_DB_PATH": str(bad / "db.duckdb"), "THERMOLOG_JOURNAL_DIR": str(bad / "journal")}
    demo = DemoProcess(env, tmp_path, ["--no-app", "--backfill", "0", "--log-dir", str(tmp_path / "logs")])
    try:
        assert demo.proc.wait(60) == 1
    finally:
        demo.kill()
    assert re.search(r"ingest exited (unexpectedly )?with status", demo.text), demo.text
    assert "last lines of" in demo.text


def test_embedded_broker_carries_retained_messages_and_last_will() -> None:
    """The amqtt broker in a thread: retained messages reach late subscribers; an abrupt drop fires the will."""
    broker = EmbeddedBroker(port=free_port()).start()
    received: list[tuple[str, bytes, bool]] = []
    got = threading.Condition()

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        with got:
            received.append((m.topic, m.payload, bool(m.retain)))
            got.notify_all()

    try:
        device = mqtt.Client(client_id="emb-device")
        device.will_set("t/dev/status", b"offline", qos=1, retain=True)
        device.connect("127.0.0.1", broker.port)
        device.loop_start()
        device.publish("t/dev/status", b"online", qos=1, retain=True).wait_for_publish(5)
        watcher = mqtt.Client(client_id="emb-watcher")
        watcher.on_message = on_message
        watcher.connect("127.0.0.1", broker.port)
        watcher.subscribe("t/+/status", qos=1)
        watcher.loop_start()
        wait_until(lambda: ("t/dev/status", b"online", True) in received, 10, "the retained status", changed=got)
        device.loop_stop()
        device.socket().close()  # no DISCONNECT: the broker must publish the will
        wait_until(lambda: any(r[:2] == ("t/dev/status", b"offline") for r in received), 10, "the last will",
                   changed=got)
        watcher.disconnect()
        watcher.loop_stop()
    finally:
        broker.stop()


def test_demo_backfills_only_the_gap_since_an_earlier_run(thermolog_env: dict[str, str]) -> None:
    """A second demo on the same database backfills only since the simulators' last stored reading."""
    assert backfill_gap(6 * 3600, SIM_IDS) == 6 * 3600  # no database yet
    con = duckdb.connect(thermolog_env["THERMOLOG_DB_PATH"])
    schema.create_schema(con)
    now = datetime.now(UTC)
    con.execute("INSERT INTO telemetry VALUES ('other', ?, 20, 40, 21, false, ?)", [now, now])
    con.execute("INSERT INTO telemetry VALUES ('sim-02', ?, 20, 40, 21, false, ?)", [now - timedelta(hours=1), now])
    con.close()
    assert backfill_gap(6 * 3600, SIM_IDS) == pytest.approx(3600, abs=5)
    assert backfill_gap(600, SIM_IDS) == 600


def test_embedded_broker_handles_concurrent_clients_and_keeps_retained_private() -> None:
    """Many clients connecting and subscribing at once all get their messages (amqtt 0.12 alone loses sessions
    to a 'dictionary changed size' race), and nobody receives retained messages of topics it never subscribed."""
    broker = EmbeddedBroker(port=free_port()).start()
    clients: list[mqtt.Client] = []
    got: dict[int, list[str]] = {}
    arrived = threading.Condition()
    try:
        owner = mqtt.Client(client_id="retained-owner")
        owner.connect("127.0.0.1", broker.port)
        owner.loop_start()
        owner.subscribe("private/#", qos=1)
        owner.publish("private/state", b"secret", qos=1, retain=True).wait_for_publish(5)
        subscribed = threading.Semaphore(0)

        def make(i: int) -> mqtt.Client:
            client = mqtt.Client(client_id=f"conc-{i}")
            client.on_connect = lambda c, *_: c.subscribe(f"own/{i}", qos=1)
            client.on_subscribe = lambda *_: subscribed.release()

            def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
                with arrived:
                    got.setdefault(i, []).append(m.topic)
                    arrived.notify_all()

            client.on_message = on_message
            client.connect_async("127.0.0.1", broker.port)
            client.loop_start()
            return client

        clients = [make(i) for i in range(40)]
        for _ in clients:
            assert subscribed.acquire(timeout=20), "a client never got its SUBACK"
        for i in range(len(clients)):
            owner.publish(f"own/{i}", b"x", qos=1).wait_for_publish(5)
        wait_until(lambda: sum(len(v) for v in got.values()) >= len(clients), 10, "a message for every client",
                   changed=arrived, detail=lambda: got)
        assert {i: got.get(i) for i in range(len(clients))} == {i: [f"own/{i}"] for i in range(len(clients))}
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
        broker.stop()
