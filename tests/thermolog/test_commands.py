"""Command safety: validation at the app, the edge module and the device; replays; per-user rate limit; every
refusal carries its reason."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from simulator.device import MqttLink, SimDevice
from simulator.model import DeviceParams
from tests.broker_support import Inbox, TlsBroker, close, subscribe
from thermolog import commands, contract
from thermolog.commands import InvalidCommand, RateLimiter
from thermolog.settings import Settings

DEVICE = "sim-01"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the rate limiter ----------------------------------------------------------------------------------------


def test_rate_limiter_allows_limit_per_window_then_slides() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, 60.0, clock)
    for _ in range(3):  # at t = 1000, 1001, 1002
        assert limiter.acquire("alice") == 0
        clock.now += 1
    clock.now += 10
    assert limiter.acquire("alice") == pytest.approx(47.0)  # the first one leaves the window at t = 1060
    assert limiter.acquire("bob") == 0, "limits are per user"
    clock.now = 1060.0
    assert limiter.acquire("alice") == 0
    assert limiter.acquire("alice") == pytest.approx(1.0), "only one slot freed"


def test_rate_limiter_refusals_do_not_extend_the_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 60.0, clock)
    limiter.acquire("u")
    for _ in range(100):  # hammering while limited does not push the window forward
        clock.now += 0.5
        limiter.acquire("u")
    clock.now = 1060.0
    assert limiter.acquire("u") == 0


def test_zero_limit_means_unlimited() -> None:
    limiter = RateLimiter(0)
    assert all(limiter.acquire("u") == 0 for _ in range(1000))


# --- the app side against the system broker with a simulated device --------------------------------------


@pytest.fixture
def device_link(thermolog_env: dict[str, str], topic_prefix: str) -> Iterator[tuple[SimDevice, MqttLink]]:
    device = SimDevice(DeviceParams.draw(DEVICE, 5), 5, time.time())
    link = MqttLink([device], f"safety-{topic_prefix}", Settings(), topic_prefix)
    link.start()
    yield device, link
    link.stop()


def _refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "command_refused"]


def test_send_command_enforces_the_per_user_rate_limit(
        device_link: tuple[SimDevice, MqttLink], topic_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """With a limit of 2 per minute alice's third command is refused before the bus; bob is unaffected."""
    device, _ = device_link
    settings = Settings(command_rate_limit_per_min=2, command_timeout_s=10)
    commands.reset_rate_limits()
    caplog.set_level(logging.INFO)
    assert commands.send_command(DEVICE, 20.0, "alice", settings).outcome == commands.OUTCOME_OK
    assert commands.send_command(DEVICE, 20.5, "alice", settings).outcome == commands.OUTCOME_OK
    with pytest.raises(InvalidCommand, match=r"rate limit: at most 2 commands per minute"):
        commands.send_command(DEVICE, 21.0, "alice", settings)
    assert commands.send_command(DEVICE, 22.0, "bob", settings).outcome == commands.OUTCOME_OK
    assert device.thermostat.target == 22.0
    applied = [c.request_id for c in device.changes if c.source == "command"]
    assert len(applied) == 3, "the refused command reached the device"
    (refusal,) = _refusals(caplog)
    assert refusal.issued_by == "alice" and refusal.device_id == DEVICE and "rate limit" in refusal.reason
    commands.reset_rate_limits()


@pytest.mark.parametrize("target, reason", [(99, "outside"), (21.3, "multiple"), ("warm", "not a number"),
                                            (float("nan"), "finite"), (None, "number")])
def test_app_refuses_invalid_setpoints_with_a_logged_reason(
        device_link: tuple[SimDevice, MqttLink], caplog: pytest.LogCaptureFixture, target: object,
        reason: str) -> None:
    device, _ = device_link
    caplog.set_level(logging.INFO)
    with pytest.raises(InvalidCommand, match=reason) as refused:
        commands.send_command(DEVICE, target, "carol", Settings())
    assert str(refused.value)
    (refusal,) = _refusals(caplog)
    assert refusal.reason == str(refused.value) and refusal.issued_by == "carol"
    assert not [c for c in device.changes if c.source == "command"]


def test_app_refuses_a_bad_device_id(thermolog_env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(InvalidCommand, match="device_id"):
        commands.send_command("a/+/#", 21.0, "dave", Settings())
    assert _refusals(caplog)


# --- the edge module -----------------------------------------------------------------------------------------


def test_edge_module_refuses_invalid_setpoints(thermolog_env: dict[str, str]) -> None:
    """``setTargetTemp`` with an out-of-range target or a bad device id answers 400 with the reason, sending
    nothing (the module's MQTT client is never connected here)."""
    from azure.iot.device import MethodRequest

    from edge_modules.thermostat_reader.main import STATUS_BAD_REQUEST, ThermostatReader

    reader = ThermostatReader(client=None, settings=Settings())  # type: ignore[arg-type]
    for payload, reason in (({"device_id": DEVICE, "target_temp": 80}, "outside"),
                            ({"device_id": DEVICE, "target_temp": 20.2}, "multiple"),
                            ({"device_id": "x/#", "target_temp": 20}, "device_id"),
                            ({"device_id": DEVICE}, "payload must be")):
        status, body = reader.handle_method(MethodRequest("1", "setTargetTemp", payload))
        assert status == STATUS_BAD_REQUEST and reason in body["error"]


# --- the device, through the production broker configuration ------------------------------------------------


@pytest.fixture
def tls_device(thermolog_env: dict[str, str]) -> Iterator[tuple[TlsBroker, SimDevice]]:
    """A TLS broker from `broker init` and the simulated device connected with its own credentials."""
    broker = TlsBroker([DEVICE]).start()
    device = SimDevice(DeviceParams.draw(DEVICE, 9), 9, time.time())
    link = MqttLink([device], "tls-sim", broker.settings(DEVICE))
    try:
        link.start()
        yield broker, device
    finally:
        link.stop()
        broker.cleanup()


@pytest.mark.broker
def test_device_refuses_what_bypasses_the_app_and_ignores_replays(tls_device: tuple[TlsBroker, SimDevice]) -> None:
    """The app user publishes raw commands (skipping app checks): the device refuses an out-of-range target with
    a reason, applies a good one once, and answers a replay without applying it again."""
    broker, device = tls_device
    app = broker.connected("app", "app-raw")
    inbox = Inbox(app)
    subscribe(app, f"thermostats/{DEVICE}/cmd/ack")

    def send(request_id: str, target: object) -> None:
        body = orjson.dumps({"request_id": request_id, "target_temp": target})
        app.publish(f"thermostats/{DEVICE}/cmd", body, qos=1).wait_for_publish(5)

    def acks(request_id: str) -> list[contract.CommandAck]:
        return [a for a in (contract.parse_ack(p) for _, p in inbox.messages) if a.request_id == request_id]

    try:
        before = device.thermostat.target
        send("hot", 80)
        assert inbox.wait_for(lambda _: acks("hot"))
        (ack,) = acks("hot")
        assert ack.ok is False and "outside" in ack.error
        assert device.thermostat.target == before
        good = 21.5 if before != 21.5 else 22.5
        send("r1", good)
        send("r2", 18.0)
        send("r1", good)  # a replay (or a duplicate QoS 1 delivery) of r1
        assert inbox.wait_for(lambda _: len(acks("r1")) == 2 and acks("r2"))
        assert all(a.ok for a in acks("r1"))
        assert device.thermostat.target == 18.0, "the replayed r1 was applied again"
        assert [c.request_id for c in device.changes if c.source == "command"] == ["r1", "r2"]
    finally:
        close(app)


# --- the firmware's own loop (python -m firmware.host_run), through the production broker configuration ------


@pytest.mark.broker
def test_firmware_refuses_bad_commands_and_ignores_replays(tmp_path) -> None:  # noqa: ANN001 - pytest fixture
    """The board's Device, run as a process with its device credentials over TLS: an out-of-range target is
    answered ok:false with the reason, a replayed request id is neither answered nor applied."""
    import os
    import subprocess
    import sys

    fw_id = "fw-01"
    broker = TlsBroker([fw_id]).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("THERMOLOG_")}
    env.update(broker.credentials(fw_id))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # firmware/ is not an installed package
    log_path = tmp_path / "firmware.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "firmware.host_run", "--device-id", fw_id, "--target", "20",
                                 "--state-file", str(tmp_path / "state.json"), "--loop-ms", "50"],
                                cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    app = broker.connected("app", "app-fw")
    inbox = Inbox(app)
    try:
        subscribe(app, f"thermostats/{fw_id}/cmd/ack")
        subscribe(app, f"thermostats/{fw_id}/state")
        assert inbox.wait_for(lambda m: any(t.endswith("/state") for t, _ in m), timeout=30), log_path.read_text()

        def send(request_id: str, target: object) -> None:
            body = orjson.dumps({"request_id": request_id, "target_temp": target})
            app.publish(f"thermostats/{fw_id}/cmd", body, qos=1).wait_for_publish(5)

        def acks(request_id: str) -> list[dict]:
            return [orjson.loads(p) for t, p in inbox.messages
                    if t.endswith("/cmd/ack") and orjson.loads(p)["request_id"] == request_id]

        def last_target() -> float:
            return [orjson.loads(p) for t, p in inbox.messages if t.endswith("/state")][-1]["target_temp"]

        send("hot", 80)
        assert inbox.wait_for(lambda _: acks("hot"))
        assert acks("hot")[0]["ok"] is False and "outside" in acks("hot")[0]["error"]
        send("r1", 22.5)
        assert inbox.wait_for(lambda _: acks("r1") and last_target() == 22.5)
        send("r2", 18.0)
        assert inbox.wait_for(lambda _: acks("r2") and last_target() == 18.0)
        send("r1", 22.5)  # replay
        send("marker", 99)  # answered (ok:false) after the replay has been handled
        assert inbox.wait_for(lambda _: acks("marker"))
        assert len(acks("r1")) == 1, "the replay was answered"
        assert last_target() == 18.0, "the replay was applied"
        assert "ignoring replayed request r1" in log_path.read_text()
    finally:
        close(app)
        proc.terminate()
        proc.wait(10)
        broker.cleanup()


# --- refusals at the app reach the `commands` audit table through ingest -----------------------------------


def test_app_refusals_are_recorded_in_the_commands_table(
        device_link: tuple[SimDevice, MqttLink], monkeypatch: pytest.MonkeyPatch) -> None:
    """An out-of-range setpoint and a rate-limited command never reach the device, but ingest records both in
    `commands` with ok = false and the app's reason; the accepted commands are recorded with their acks."""
    device, _ = device_link
    from ingest.worker import IngestWorker
    from tests.ingest_support import db_rows, forget_session
    from tests.waiting import wait_until
    from thermolog.settings import get_settings

    monkeypatch.setenv("THERMOLOG_FLUSH_INTERVAL_S", "0.1")
    get_settings.cache_clear()
    settings = Settings(command_rate_limit_per_min=2, command_timeout_s=10)
    commands.reset_rate_limits()
    worker = IngestWorker(get_settings())
    worker.start()
    try:
        with pytest.raises(InvalidCommand, match="outside"):
            commands.send_command(DEVICE, 60, "erin", settings)
        assert commands.send_command(DEVICE, 19.5, "erin", settings).outcome == commands.OUTCOME_OK
        assert commands.send_command(DEVICE, 18.5, "erin", settings).outcome == commands.OUTCOME_OK
        with pytest.raises(InvalidCommand, match="rate limit"):
            commands.send_command(DEVICE, 20.0, "erin", settings)
        rows = wait_until(lambda: (r := db_rows(settings.db_path, "SELECT issued_by, target_temp, ok, error FROM "
                                                "commands WHERE device_id = ? ORDER BY sent_at", [DEVICE]))
                          and len(r) == 4 and all(row[2] is not None for row in r) and r, 20, what="four audit rows")
        (who1, target1, ok1, error1), accepted1, accepted2, (_, target4, ok4, error4) = rows
        assert (who1, target1, ok1) == ("erin", 60.0, False) and error1.startswith("refused by the app: ")
        assert "outside" in error1
        assert [accepted1, accepted2] == [("erin", 19.5, True, None), ("erin", 18.5, True, None)]
        assert (target4, ok4) == (20.0, False) and "rate limit" in error4
        assert device.thermostat.target == 18.5, "a refused command reached the device"
    finally:
        worker.stop()
        forget_session(get_settings().ingest_client_id)
        commands.reset_rate_limits()
