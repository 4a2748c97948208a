"""The firmware's main loop on the PC (firmware/host_run.py) against real Mosquitto brokers: its readings land in
DuckDB through the ingest worker, it obeys the app's commands, and it rides out a broker restart without losing or
reordering readings and without touching the relay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from firmware import host_run
from ingest.worker import IngestWorker
from tests.waiting import wait_until
from thermolog import contract
from thermolog.commands import OUTCOME_OK, OUTCOME_REFUSED, send_mqtt_command
from thermolog.reader import DatabaseNotReady, query
from thermolog.settings import Settings, get_settings

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ingest(thermolog_env: dict[str, str]) -> Iterator[IngestWorker]:
    """The real ingest worker on the system broker, writing to this test's database."""
    worker = IngestWorker(get_settings())
    worker.start()
    yield worker
    worker.stop()


def rows(sql: str, *params: object) -> list[tuple]:
    return query(sql, params).rows()


def test_host_run_readings_land_in_duckdb_and_it_obeys_commands(ingest: IngestWorker, thermolog_env: dict[str, str],
                                                                tmp_path: Path) -> None:
    """`python -m firmware.host_run` publishes through Mosquitto into ingest; a command changes its target."""
    device_id = "fw-host-01"
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware.host_run", "--device-id", device_id, "--read-interval", "2",
         "--publish-interval", "2", "--min-on", "0", "--min-off", "0", "--state-file", str(tmp_path / "state.json")],
        cwd=ROOT, env={**os.environ, **thermolog_env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: len(rows("SELECT ts FROM telemetry WHERE device_id = ?", device_id)) >= 3,
                   45, "three readings from the host run in DuckDB", retry_on=(DatabaseNotReady,))
        result = send_mqtt_command(device_id, 23.5, issued_by="test", timeout_s=15)
        assert result.outcome == OUTCOME_OK, result
        assert result.ack is not None and result.ack.target_temp == 23.5
        wait_until(lambda: rows("SELECT 1 FROM telemetry WHERE device_id = ? AND target_temp = 23.5", device_id),
                   30, "a reading with the new target in DuckDB", retry_on=(DatabaseNotReady,))
        wait_until(lambda: rows("SELECT ok, target_temp FROM commands WHERE request_id = ? AND acked_at IS NOT NULL",
                                result.request_id) == [(True, 23.5)],
                   30, "the acked command in DuckDB", retry_on=(DatabaseNotReady,))
        # A sender with looser limits than the device: the device itself refuses with an error ack.
        too_hot = send_mqtt_command(device_id, 50.0, settings=Settings(setpoint_max_c=60), timeout_s=15)
        assert too_hot.outcome == OUTCOME_REFUSED and "outside" in (too_hot.error or ""), too_hot
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert json.loads((tmp_path / "state.json").read_text())["target_temp"] == 23.5
    wait_until(lambda: rows("SELECT 1 FROM device_status WHERE device_id = ? AND status = 'offline'", device_id),
               30, "the offline status in DuckDB", retry_on=(DatabaseNotReady,))
    readings = rows("SELECT ts, temperature, humidity, target_temp, heating FROM telemetry WHERE device_id = ? "
                    "ORDER BY ts", device_id)
    assert len(readings) >= 4
    assert all(15 < r[1] < 30 and 0 < r[2] < 100 for r in readings)
    assert {r[3] for r in readings} >= {21.0, 23.5}
    prefix = thermolog_env["THERMOLOG_TOPIC_PREFIX"]
    assert rows("SELECT count(*) FROM rejected WHERE starts_with(topic, ?)", prefix + "/")[0][0] == 0


class Recorder:
    """A plain paho subscriber that keeps every message on one topic."""

    def __init__(self, port: int, topic_name: str) -> None:
        self.payloads: list[bytes] = []
        self.client = paho.Client(client_id=f"rec-{time.monotonic_ns()}")
        self.client.on_message = lambda _c, _u, m: self.payloads.append(m.payload)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic_name, qos=1)
        assert subscribed.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class LoopThread:
    """Runs ``device.step()`` every 100 ms in a thread; ``pause()``/``resume()`` hold it between steps."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.stop = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.idle = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if not self.running.is_set():
                self.idle.set()
                self.running.wait(0.1)
                continue
            self.idle.clear()
            self.device.step()
            self.stop.wait(0.1)

    def pause(self) -> None:
        self.running.clear()
        assert self.idle.wait(10)

    def resume(self) -> None:
        self.running.set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def test_broker_restart_buffers_then_drains_in_order_without_touching_relay(private_broker: Any, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Broker down: readings buffer; broker back: they arrive in order, once each; the relay never switches."""
    private_broker.start()
    port = private_broker.port
    monkeypatch.chdir(tmp_path)
    settings = Settings(mqtt_url=f"mqtt://127.0.0.1:{port}", topic_prefix="fwrestart")
    args = host_run.build_parser().parse_args(["--device-id", "fw-restart", "--read-interval", "2",
                                               "--publish-interval", "2", "--target", "35",
                                               "--state-file", str(tmp_path / "state.json")])
    device, _room = host_run.build_device(args, settings)  # target 35 °C: the heater stays ON the whole test
    telemetry_topic = contract.topic("fw-restart", contract.TELEMETRY, "fwrestart")
    before = Recorder(port, telemetry_topic)
    loop = LoopThread(device)
    try:
        wait_until(lambda: len(before.payloads) >= 2, 20, "readings before the broker stops")
        assert device.relay.on is True
        switches = device.relay.switches
        private_broker.stop()
        wait_until(lambda: len(device.buffer) >= 3, 30, "readings buffered while the broker is down")
        assert not device.link.connected
        loop.pause()
        private_broker.start()
        after = Recorder(port, telemetry_topic)
        buffered = len(device.buffer)
        loop.resume()
        wait_until(lambda: len(after.payloads) >= buffered + 1, 40, "the buffered readings after the restart")
        loop.pause()
        assert device.relay.on is True and device.relay.switches == switches
        stamps = [json.loads(p)["timestamp"] for p in before.payloads + after.payloads]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), stamps
        assert device.link.connects == 2 and device.buffer.dropped == 0
    finally:
        loop.close()
        device.shutdown()
        before.close()
        if "after" in locals():
            after.close()


class _SubackFirst:
    """A paho client whose SUBACK is handled before ``subscribe`` returns its mid (the race seen under load)."""

    def __init__(self, link: host_run.PahoUmqttClient) -> None:
        self.link = link

    def subscribe(self, _topic: str, _qos: int) -> tuple[int, int]:
        self.link._on_subscribe(self, None, 7, (0,))
        return paho.MQTT_ERR_SUCCESS, 7


def test_subscribe_does_not_miss_a_suback_handled_before_it_waits() -> None:
    """The umqtt stand-in's subscribe returns at once when the SUBACK came back before it started waiting (it
    used to wait out its whole timeout: a 10 s stall on connect)."""
    link = host_run.PahoUmqttClient("race", Settings(_env_file=None), timeout_s=3600)
    link._client = _SubackFirst(link)
    worker = threading.Thread(target=link.subscribe, args=("thermostats/race/cmd", 1), daemon=True)
    worker.start()
    worker.join(30)  # a deadline for a hang, not a speed figure: the fixed code returns without waiting
    assert not worker.is_alive(), "subscribe waited for a SUBACK it had already received"
    assert link._subacked == set()
