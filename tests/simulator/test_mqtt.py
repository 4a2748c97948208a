"""Simulated thermostats against the real Mosquitto: contract telemetry, retained status/state, commands, will,
and the backfill of ``thermolog simulate``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import orjson
import paho.mqtt.client as mqtt
import pytest

from simulator.device import MqttLink, SimDevice
from simulator.model import DeviceParams
from tests.waiting import wait_until
from thermolog import commands, contract
from thermolog.settings import get_settings


class Collector:
    """Subscribes to ``{prefix}/#`` and keeps every message (retained ones included)."""

    def __init__(self, prefix: str, host: str, port: int) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.changed = threading.Condition()
        self.client = mqtt.Client(client_id=f"collector-{prefix}-{time.monotonic_ns()}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(host, port)
        self.client.subscribe(f"{prefix}/#", qos=1)
        self.client.loop_start()
        assert subscribed.wait(5), "collector could not subscribe"

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self.changed:
            self.messages.append(message)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[list[mqtt.MQTTMessage]], object], timeout: float = 10.0,
                 what: str = "the messages") -> object:
        """Wait until ``predicate(messages)`` is truthy and return its value."""
        return wait_until(lambda: predicate(list(self.messages)), timeout, what, changed=self.changed,
                          detail=lambda: f"got {len(self.messages)} messages")

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        """Messages received so far on ``topic``."""
        return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector(thermolog_env: dict[str, str], topic_prefix: str, system_broker: tuple[str, int]) -> Iterator[Collector]:
    c = Collector(topic_prefix, *system_broker)
    yield c
    c.close()


@pytest.fixture
def device_link(thermolog_env: dict[str, str], topic_prefix: str) -> Iterator[tuple[SimDevice, MqttLink]]:
    device = SimDevice(DeviceParams.draw("sim-01", 11), 11, time.time())
    link = MqttLink([device], f"sim-{topic_prefix}", get_settings(), topic_prefix)
    link.start()
    yield device, link
    link.stop()


def _first(messages: list[mqtt.MQTTMessage], topic: str) -> mqtt.MQTTMessage | None:
    return next((m for m in messages if m.topic == topic), None)


def test_device_publishes_contract_telemetry_and_retained_status_state(
        device_link: tuple[SimDevice, MqttLink], collector: Collector, topic_prefix: str,
        system_broker: tuple[str, int]) -> None:
    """Telemetry parses with the contract; a late subscriber gets retained online status and the state with
    the recorded simulation parameters."""
    device, link = device_link
    device.advance(device.t + 5)
    assert link.publish_reading(device, timeout=5)
    state_topic = contract.topic("sim-01", contract.STATE, topic_prefix)
    tele_topic = contract.topic("sim-01", contract.TELEMETRY, topic_prefix)
    # The broker has stored the announcement and routed the first reading, which the late subscriber must not get.
    collector.wait_for(lambda ms: _first(ms, state_topic) and _first(ms, tele_topic))
    late = Collector(topic_prefix, *system_broker)  # subscribes after the device announced itself
    try:
        status_topic = contract.topic("sim-01", contract.STATUS, topic_prefix)
        state_topic = contract.topic("sim-01", contract.STATE, topic_prefix)
        late.wait_for(lambda ms: _first(ms, status_topic) and _first(ms, state_topic))
        status, state = late.on(status_topic)[0], late.on(state_topic)[0]
        assert status.retain and contract.parse_status(status.payload) == "online"
        parsed = contract.parse_state(state.payload)
        assert state.retain and parsed.firmware.startswith("sim-") and parsed.mode == "heat"
        assert parsed.target_temp == device.params.initial_target_c
        assert parsed.model_extra["sim"]["tau_s"] == device.params.tau_s
        assert parsed.model_extra["sim"]["seed"] == 11
        device.advance(device.t + 5)
        assert link.publish_reading(device, timeout=5)
        message = late.wait_for(lambda ms: _first(ms, tele_topic))
        reading = contract.parse_telemetry(message.payload, "sim-01")
        assert not message.retain and message.qos == 1
        assert reading.timestamp == datetime.fromtimestamp(device.t, UTC)
        assert abs(reading.temperature - device.model.temperature) < 0.5
    finally:
        late.close()


def test_command_is_acknowledged_and_next_telemetry_carries_the_target(
        device_link: tuple[SimDevice, MqttLink], collector: Collector, topic_prefix: str) -> None:
    """A command through thermolog.commands gets an ok ack with its request_id, a new retained state, and
    the following reading carries the new target."""
    device, link = device_link
    new_target = 24.5 if device.thermostat.target != 24.5 else 23.0
    result = commands.send_mqtt_command("sim-01", new_target, issued_by="test", timeout_s=10)
    assert result.outcome == commands.OUTCOME_OK, result.error
    assert result.ack.request_id == result.request_id and result.ack.target_temp == new_target
    state_topic = contract.topic("sim-01", contract.STATE, topic_prefix)
    collector.wait_for(lambda ms: any(contract.parse_state(m.payload).target_temp == new_target
                                      for m in ms if m.topic == state_topic))
    device.advance(device.t + 5)
    link.publish_reading(device, timeout=5)
    tele_topic = contract.topic("sim-01", contract.TELEMETRY, topic_prefix)
    message = collector.wait_for(lambda ms: _first(ms, tele_topic))
    assert contract.parse_telemetry(message.payload).target_temp == new_target


def _raw_command(collector: Collector, prefix: str, request_id: str, target: object) -> None:
    info = collector.client.publish(contract.topic("sim-01", contract.CMD, prefix),
                                    orjson.dumps({"request_id": request_id, "target_temp": target}), qos=1)
    info.wait_for_publish(5)


def _acks(messages: list[mqtt.MQTTMessage], prefix: str, request_id: str) -> list[contract.CommandAck]:
    topic = contract.topic("sim-01", contract.CMD_ACK, prefix)
    acks = [contract.parse_ack(m.payload) for m in messages if m.topic == topic]
    return [a for a in acks if a.request_id == request_id]


def test_out_of_range_target_is_refused_with_a_reason(
        device_link: tuple[SimDevice, MqttLink], collector: Collector, topic_prefix: str) -> None:
    """A target outside the configured range (sent raw, bypassing client-side checks) gets ok:false + error."""
    device, _ = device_link
    before = device.thermostat.target
    _raw_command(collector, topic_prefix, "too-hot", 99)
    (ack,) = collector.wait_for(lambda ms: _acks(ms, topic_prefix, "too-hot"))
    assert ack.ok is False and "outside" in ack.error and "35" in ack.error
    assert device.thermostat.target == before


def test_replayed_request_id_is_not_applied_twice(
        device_link: tuple[SimDevice, MqttLink], collector: Collector, topic_prefix: str) -> None:
    """Replaying request r1 after r2 answers r1's outcome again but leaves r2's target in force."""
    device, _ = device_link
    _raw_command(collector, topic_prefix, "r1", 23.0)
    collector.wait_for(lambda ms: _acks(ms, topic_prefix, "r1"))
    _raw_command(collector, topic_prefix, "r2", 19.5)
    collector.wait_for(lambda ms: _acks(ms, topic_prefix, "r2"))
    _raw_command(collector, topic_prefix, "r1", 23.0)
    acks = collector.wait_for(lambda ms: len(_acks(ms, topic_prefix, "r1")) == 2 and _acks(ms, topic_prefix, "r1"))
    assert all(a.ok and a.target_temp == 23.0 for a in acks)
    assert device.thermostat.target == 19.5
    assert [c.request_id for c in device.changes if c.source == "command"] == ["r1", "r2"]


def test_last_will_marks_the_device_offline_on_abrupt_disconnect(
        thermolog_env: dict[str, str], collector: Collector, topic_prefix: str) -> None:
    """Dropping the connection without DISCONNECT makes the broker publish the retained 'offline' will."""
    device = SimDevice(DeviceParams.draw("sim-01", 2), 2, time.time())
    link = MqttLink([device], f"sim-will-{topic_prefix}", get_settings(), topic_prefix)
    link.start()
    status_topic = contract.topic("sim-01", contract.STATUS, topic_prefix)
    collector.wait_for(lambda ms: [m for m in ms if m.topic == status_topic and m.payload == b"online"])
    link.abort()
    message = collector.wait_for(
        lambda ms: next((m for m in ms if m.topic == status_topic and m.payload == b"offline"), None))
    assert message.payload == b"offline"


def _simulate(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "thermolog.cli", "simulate", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("connection", ["--per-device-connection", "--shared-connection"])
def test_backfill_publishes_the_expected_past_readings(
        thermolog_env: dict[str, str], collector: Collector, topic_prefix: str, tmp_path, connection: str) -> None:
    """--backfill 2h at 60 s publishes 120 readings per device, 60 s apart, all in the past two hours, then
    retained offline status when it exits; the parameters file records devices and schedule."""
    started = datetime.now(UTC)
    params_path = tmp_path / "params.json"
    done = _simulate(["--devices", "2", "--interval", "60", "--backfill", "2h", "--backfill-only", connection,
                      "--seed", "5", "--params-out", str(params_path)], thermolog_env)
    assert done.returncode == 0, done.stderr
    for device_id in ("sim-01", "sim-02"):
        topic = contract.topic(device_id, contract.TELEMETRY, topic_prefix)
        messages = collector.wait_for(lambda ms, t=topic: len([m for m in ms if m.topic == t]) >= 120
                                      and [m for m in ms if m.topic == t])
        stamps = sorted(contract.parse_telemetry(m.payload, device_id).timestamp for m in messages)
        assert len(stamps) == 120
        assert stamps[-1] <= datetime.now(UTC) and stamps[0] >= started - timedelta(hours=2, seconds=61)
        assert {b - a for a, b in zip(stamps, stamps[1:], strict=False)} == {timedelta(seconds=60)}
        status_topic = contract.topic(device_id, contract.STATUS, topic_prefix)
        collector.wait_for(lambda ms, t=status_topic: [m for m in ms if m.topic == t and m.payload == b"offline"])
    recorded = orjson.loads(params_path.read_bytes())
    assert [d["device_id"] for d in recorded["devices"]] == ["sim-01", "sim-02"]
    assert recorded["devices"][0] == DeviceParams.draw("sim-01", 5).to_dict()
    assert recorded["seed"] == 5 and recorded["backfill_interval_s"] == 60


def test_live_mode_with_time_acceleration_and_clean_stop(
        thermolog_env: dict[str, str], collector: Collector, topic_prefix: str, tmp_path) -> None:
    """--speed 120 at a 60 s interval publishes a reading every half second of wall time, stamped 60 s apart;
    a command is applied and recorded in the parameters file; SIGINT stops it with exit status 0 and a retained
    'offline'."""
    params_path = tmp_path / "live-params.json"
    proc = subprocess.Popen([sys.executable, "-m", "thermolog.cli", "simulate", "--devices", "1", "--interval", "60",
                             "--speed", "120", "--params-out", str(params_path)],
                            env={**os.environ, **thermolog_env}, stderr=subprocess.PIPE, text=True)
    topic = contract.topic("sim-01", contract.TELEMETRY, topic_prefix)
    try:
        messages = collector.wait_for(lambda ms: len([m for m in ms if m.topic == topic]) >= 4
                                      and [m for m in ms if m.topic == topic], timeout=30)
        result = commands.send_mqtt_command("sim-01", 26.5, issued_by="test", timeout_s=10)
        assert result.outcome == commands.OUTCOME_OK
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    stamps = [contract.parse_telemetry(m.payload).timestamp for m in messages]
    assert {b - a for a, b in zip(stamps, stamps[1:], strict=False)} == {timedelta(seconds=60)}
    assert all(s.microsecond == 0 for s in stamps)  # readings fall on whole seconds
    status_topic = contract.topic("sim-01", contract.STATUS, topic_prefix)
    collector.wait_for(lambda ms: [m for m in ms if m.topic == status_topic and m.payload == b"offline"])
    recorded = orjson.loads(params_path.read_bytes())["setpoint_changes"]
    assert [(c["source"], c["target_temp"], c["request_id"]) for c in recorded] == [
        ("command", 26.5, result.request_id)]


def test_shared_connection_routes_commands_to_the_right_device(
        thermolog_env: dict[str, str], collector: Collector, topic_prefix: str) -> None:
    """One connection carrying three devices announces all of them and applies a command only to its target."""
    devices = [SimDevice(DeviceParams.draw(f"sim-0{i}", 3), 3, time.time()) for i in (1, 2, 3)]
    link = MqttLink(devices, f"sim-shared-{topic_prefix}", get_settings(), topic_prefix)
    link.start()
    try:
        for i in (1, 2, 3):
            status = contract.topic(f"sim-0{i}", contract.STATUS, topic_prefix)
            collector.wait_for(lambda ms, t=status: [m for m in ms if m.topic == t and m.payload == b"online"])
        before = [d.thermostat.target for d in devices]
        target = 30.0 if before[1] != 30.0 else 29.5
        result = commands.send_mqtt_command("sim-02", target, issued_by="test", timeout_s=10)
        assert result.outcome == commands.OUTCOME_OK
        assert [d.thermostat.target for d in devices] == [before[0], target, before[2]]
    finally:
        link.stop()
    for i in (1, 2, 3):
        status = contract.topic(f"sim-0{i}", contract.STATUS, topic_prefix)
        collector.wait_for(lambda ms, t=status: [m for m in ms if m.topic == t and m.payload == b"offline"])
