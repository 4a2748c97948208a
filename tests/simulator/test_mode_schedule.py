"""Modes and schedules end to end: the real Mosquitto, the real ingest worker and ``thermolog simulate`` as their
own processes, the CLI as a user runs it; and a simulated device following its schedule through a broker outage."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from simulator.run import adopt_schedule
from simulator.schedule import SIM_PROGRAM
from tests.conftest import SEED_TELEMETRY, PrivateBroker
from tests.ingest_support import db_rows, db_value
from tests.waiting import wait_until
from thermolog import contract
from thermolog.schedule_publish import refresh_schedules
from thermolog.settings import get_settings

pytestmark = pytest.mark.slow  # seconds per test: outside the fast loop (docs/testing.md)

ROOT = Path(__file__).resolve().parents[2]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "thermolog.cli", *args], env=env, cwd=ROOT,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thermolog.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def retained(topic: str, port: int = 1883) -> bytes | None:
    """The retained message on ``topic`` (None when there is none)."""
    proc = subprocess.run(["mosquitto_sub", "-p", str(port), "-t", topic, "-C", "1", "-W", "3", "--retained-only"],
                          capture_output=True, timeout=10, check=False)
    return proc.stdout.rstrip(b"\n") or None


@pytest.fixture
def fleet(thermolog_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """`thermolog ingest` and `thermolog simulate --devices 1` running; yields the environment."""
    env = {**os.environ, **thermolog_env, "THERMOLOG_FLUSH_INTERVAL_S": "0.1", "THERMOLOG_COMMAND_TIMEOUT_S": "10",
           "THERMOLOG_DISPLAY_TIMEZONE": "Europe/Berlin", "PYTHONPATH": str(ROOT),
           "THERMOLOG_ORIGINAL_TOPIC_PREFIX": f"{thermolog_env['THERMOLOG_TOPIC_PREFIX']}-iot"}
    ingest = start(["ingest"], env, tmp_path / "ingest.log")
    db = thermolog_env["THERMOLOG_DB_PATH"]
    try:
        wait_until(lambda: db_value(db, "SELECT value = 'true' FROM ingest_state WHERE key = 'mqtt_connected'"),
                 timeout=30, what="the ingest worker's subscription")
        sim = start(["simulate", "--devices", "1", "--interval", "1", "--params-out", str(tmp_path / "p.json"),
                     "--schedule"], env, tmp_path / "sim.log")
        try:
            wait_until(lambda: db_value(db, "SELECT mode FROM device_state WHERE device_id = 'sim-01'"), timeout=30,
                     what="the simulator's retained state in DuckDB")
            wait_until(lambda: db_value(db, "SELECT count(*) FROM schedules"), timeout=30,
                     what="the simulator's own program stored as sim-01's schedule")
            yield env
        finally:
            stop(sim)
    finally:
        stop(ingest)


def state_of(prefix: str) -> contract.DeviceState:
    payload = retained(contract.topic("sim-01", contract.STATE, prefix))
    assert payload is not None
    return contract.parse_state(payload)


def test_mode_command_is_confirmed_applied_and_audited(fleet: dict[str, str]) -> None:
    """`thermolog mode sim-01 off` exits 0 once the simulator confirms; its heater stays off; ingest records the
    command with its mode; back to heat works the same way."""
    prefix, db = fleet["THERMOLOG_TOPIC_PREFIX"], fleet["THERMOLOG_DB_PATH"]
    done = cli(["mode", "sim-01", "off"], fleet)
    assert done.returncode == 0, done.stderr
    assert "mode off confirmed" in done.stdout
    wait_until(lambda: state_of(prefix).mode == "off", timeout=20, what="retained state mode off")
    wait_until(lambda: db_value(db, "SELECT count(*) FROM telemetry WHERE device_id = 'sim-01' AND heating "
                                  "AND ts > (SELECT max(acked_at) FROM commands WHERE mode = 'off')") == 0
             and db_value(db, "SELECT count(*) FROM telemetry WHERE ts > (SELECT max(acked_at) FROM commands "
                              "WHERE mode = 'off')") >= 2,
               timeout=20, what="readings with the heater off after mode off")
    rows = wait_until(lambda: db_rows(db, "SELECT mode, ok, issued_by, target_temp FROM commands "
                                        "WHERE ok IS NOT NULL AND mode IS NOT NULL"),
                      timeout=20, what="the audited command")
    assert rows == [("off", True, f"cli:{getpass.getuser()}", None)]
    assert cli(["mode", "sim-01", "heat"], fleet).returncode == 0
    wait_until(lambda: state_of(prefix).mode == "heat", timeout=20, what="retained state mode heat")


def test_mode_to_a_device_without_modes_is_refused_with_the_reason_and_audited(fleet: dict[str, str]) -> None:
    """A thermostat of the original firmware (it reported on its own topic, so ingest knows its kind) takes no
    modes: refused before sending, and the exit code and the audit say why."""
    db, original = fleet["THERMOLOG_DB_PATH"], fleet["THERMOLOG_ORIGINAL_TOPIC_PREFIX"]
    reading = SEED_TELEMETRY.replace(b"esp32c3-01", b"seed-01").replace(b"2025-07-04T00:13:36Z",
                                                                      contract.format_timestamp(datetime.now(UTC)).encode())
    subprocess.run(["mosquitto_pub", "-t", f"{original}/seed-01/status", "-q", "1", "-s"], input=reading, check=True,
                   timeout=10)
    wait_until(lambda: db_value(db, "SELECT kind FROM devices WHERE device_id = 'seed-01'"), timeout=20,
               what="seed-01's kind")
    done = cli(["mode", "seed-01", "off"], fleet)
    assert done.returncode == 2
    assert "takes no mode commands" in done.stderr
    row = wait_until(lambda: db_rows(db, "SELECT mode, ok, error FROM commands WHERE device_id = 'seed-01'"),
                   timeout=20, what="the refusal in commands")
    assert row[0][0] == "off" and row[0][1] is False and "takes no mode commands" in row[0][2]
    assert cli(["mode", "sim-01", "cool"], fleet).returncode == 2  # argparse: not a mode


def test_schedule_set_is_followed_audited_shown_and_refreshed(fleet: dict[str, str], tmp_path: Path) -> None:
    """`thermolog schedule set` with a boost: the simulator takes the boost target at once (the retained state
    shows it), ingest stores who set what, `schedule show` prints it with the next changes in Berlin time, and
    refresh_schedules re-sends the points."""
    prefix, db = fleet["THERMOLOG_TOPIC_PREFIX"], fleet["THERMOLOG_DB_PATH"]
    program = tmp_path / "home.toml"
    program.write_text('[presets]\ncomfort = 22.0\n\n[[slots]]\ndays = "daily"\nat = "06:00"\npreset = "comfort"\n'
                       '\n[[slots]]\ndays = "daily"\nat = "22:00"\npreset = "eco"\n'
                       '\n[[overrides]]\nkind = "boost"\ntarget = 26.5\nminutes = 30\n')
    done = cli(["schedule", "set", "sim-01", "--file", str(program)], fleet)
    assert done.returncode == 0, done.stderr
    assert "time zone Europe/Berlin" in done.stdout
    wait_until(lambda: state_of(prefix).target_temp == 26.5, timeout=20, what="the simulator at the boost target")
    row = wait_until(lambda: db_rows(db, "SELECT issued_by, program FROM schedules WHERE device_id = 'sim-01' "
                                       "AND issued_by LIKE 'cli:%'"), timeout=20, what="the schedule change in DuckDB")
    stored = json.loads(row[0][1])
    assert stored["timezone"] == "Europe/Berlin" and stored["overrides"][0]["target"] == 26.5
    shown = cli(["schedule", "show", "sim-01"], fleet)
    assert shown.returncode == 0, shown.stderr
    assert '"comfort": 22.0' in shown.stdout and "(Europe/Berlin)" in shown.stdout and "(boost)" not in shown.stdout
    assert "22 °C  (comfort)" in shown.stdout and "18 °C  (eco)" in shown.stdout
    points_topic = contract.topic("sim-01", contract.SCHEDULE_POINTS, prefix)
    first = contract.parse_points(retained(points_topic))
    assert first.points[0][1] == 26.5
    later = datetime.now(UTC) + timedelta(hours=1)  # past the boost: the refreshed list starts with a slot
    assert refresh_schedules(get_settings(), now=later) == 1
    refreshed = contract.parse_points(retained(points_topic))
    assert refreshed.issued_at > first.issued_at and refreshed.points[0][1] in (22.0, 18.0)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[slots]]\ndays = "daily"\nat = "06:00"\ntarget = 99\n')
    refused = cli(["schedule", "set", "sim-01", "--file", str(bad)], fleet)
    assert refused.returncode == 2 and "slots[0].target" in refused.stderr
    assert db_value(db, "SELECT count(*) FROM schedules") == 2  # the simulator's and ours, not the invalid one


def test_simulate_schedule_adopts_the_simulators_program_once(fleet: dict[str, str]) -> None:
    """`thermolog simulate --schedule` stores its daily program as the schedule of a device without one (the
    demo shows it on the Schedule page) and the device gets its change points; a second start keeps it."""
    prefix, db = fleet["THERMOLOG_TOPIC_PREFIX"], fleet["THERMOLOG_DB_PATH"]
    [(issued_by, program)] = db_rows(db, "SELECT issued_by, program FROM schedules")
    assert issued_by == "simulator" and json.loads(program) == SIM_PROGRAM
    points = contract.parse_points(retained(contract.topic("sim-01", contract.SCHEDULE_POINTS, prefix)))
    assert {target for _, target in points.points} == {21.0, 19.0, 21.5, 17.5}
    assert adopt_schedule(["sim-01", "sim-02"], get_settings()) == ["sim-02"]  # sim-01 keeps its schedule
    wait_until(lambda: db_value(db, "SELECT count(*) FROM schedules") == 2, timeout=20, what="sim-02's schedule stored")
    assert db_value(db, "SELECT count(*) FROM schedules WHERE device_id = 'sim-01'") == 1


def test_simulated_device_follows_its_schedule_while_the_broker_is_down(
        private_broker: PrivateBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`thermolog simulate --speed 60` gets its change points, then the broker stops: the device still changes
    its target at the scheduled times (recorded in its parameters file), and reports it once the broker is back."""
    private_broker.start()
    port = private_broker.port
    env = {**os.environ, "THERMOLOG_MQTT_URL": f"mqtt://127.0.0.1:{port}", "THERMOLOG_TOPIC_PREFIX": "outage",
           "THERMOLOG_DB_PATH": str(tmp_path / "db.duckdb"), "PYTHONPATH": str(ROOT)}
    params = tmp_path / "params.json"
    sim = start(["simulate", "--devices", "1", "--interval", "5", "--speed", "60", "--params-out", str(params)],
                env, tmp_path / "sim.log")
    try:
        wait_until(lambda: retained(contract.topic("sim-01", contract.STATE, "outage"), port), timeout=30,
                 what="the simulator online")
        now = int(datetime.now(UTC).timestamp())
        # Simulated time runs 60x: these points come 3 and 6 simulated minutes (3 and 6 s) from now.
        points = [(now - 3600, 20.0), (now + 180, 24.5), (now + 360, 16.5)]
        payload = contract.dumps(contract.SchedulePoints(issued_at=datetime.now(UTC), points=points))
        client = mqtt.Client(client_id="schedule-test")
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.publish(contract.topic("sim-01", contract.SCHEDULE_POINTS, "outage"), payload, qos=1,
                       retain=True).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()
        wait_until(lambda: contract.parse_state(retained(contract.topic("sim-01", contract.STATE, "outage"), port))
                 .target_temp == 20.0, timeout=20, what="the point in force applied")
        private_broker.stop()
        changes = wait_until(lambda: [c for c in json.loads(params.read_text())["setpoint_changes"]
                                    if c["source"] == "schedule" and c["target_temp"] == 16.5],
                           timeout=30, what="both scheduled changes during the outage")
        applied = [c for c in json.loads(params.read_text())["setpoint_changes"] if c["source"] == "schedule"]
        assert [c["target_temp"] for c in applied] == [20.0, 24.5, 16.5]
        assert changes[0]["ts"] == contract.format_timestamp(datetime.fromtimestamp(now + 360, UTC))
        assert private_broker.proc is not None and private_broker.proc.poll() is not None  # really down
        private_broker.start()
        wait_until(lambda: (payload := retained(contract.topic("sim-01", contract.STATE, "outage"), port))
                 and contract.parse_state(payload).target_temp == 16.5, timeout=60,
                 what="the state after reconnecting")
    finally:
        stop(sim)
