"""`thermolog automation` follows schedules for thermostats that cannot: a real Mosquitto, `thermolog ingest`, a
Zigbee2MQTT bridge stand-in and a device running the original firmware, each with a stored program whose boost
starts a few seconds in the future."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests import zigbee2mqtt_payloads as z2m
from tests.conftest import PrivateBroker
from tests.waiting import wait_until
from thermolog import queries
from thermolog.profiles import derive_id
from thermolog.reader import DatabaseNotReady, query
from thermolog.schedule_publish import set_schedule
from thermolog.settings import get_settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ORIGINAL_ID = "esp32c3-01"
VALVE_ID = derive_id("z2m-", z2m.VALVE_NAME)
LEAD_S = 6.0
"""How far ahead of now the boost starts: after the automation process has read the programs."""


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    return wait_until(predicate, timeout, what, retry_on=(DatabaseNotReady,))


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def stack(thermolog_env: dict[str, str], private_broker: PrivateBroker, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Broker, ingest worker, a Zigbee2MQTT bridge and an original-firmware device, both reporting."""
    private_broker.start()
    env = {**os.environ, **thermolog_env, "THERMOLOG_MQTT_URL": f"mqtt://127.0.0.1:{private_broker.port}",
           "THERMOLOG_COMMAND_TIMEOUT_S": "10", "THERMOLOG_ALERT_CHECK_INTERVAL_S": "1", "PYTHONPATH": str(ROOT)}
    monkeypatch.setenv("THERMOLOG_MQTT_URL", env["THERMOLOG_MQTT_URL"])
    get_settings.cache_clear()
    procs: dict[str, subprocess.Popen] = {}
    logs = {name: tmp_path / f"{name}.log" for name in ("ingest", "z2m", "original", "automation")}
    try:
        procs["ingest"] = _start(["-m", "thermolog.cli", "ingest"], env, logs["ingest"])
        _wait(lambda: queries.ingest_state().get("mqtt_connected") == "true", 60, "ingest subscribed")
        procs["z2m"] = _start(["-m", "tests.zigbee2mqtt_standin", "--port", str(private_broker.port),
                               "--interval", "0.5"], env, logs["z2m"])
        procs["original"] = _start(["-m", "tests.original_firmware", "--interval", "0.5"], env, logs["original"])
        _wait(lambda: dict(query("SELECT device_id, target_temp FROM device_state").iter_rows()).get(VALVE_ID) == 20.0
              and dict(query("SELECT device_id, target_temp FROM device_state").iter_rows()).get(ORIGINAL_ID) == 25.0,
              60, "both devices' state with their first targets")
        yield {"env": env, "procs": procs, "logs": logs}
    finally:
        for proc in reversed(procs.values()):
            _stop(proc)
        for name, path in logs.items():
            if path.exists():
                print(f"--- {name} ---\n{path.read_text(errors='replace')[-3000:]}")
        get_settings.cache_clear()


def _program(held: float, boost: float, start: datetime) -> dict[str, Any]:
    """Hold ``held`` all day (what the device has now), boost to ``boost`` from ``start`` for 5 minutes."""
    return {"timezone": "UTC", "slots": [{"days": "daily", "at": "00:00", "target": held}],
            "overrides": [{"kind": "boost", "target": boost, "minutes": 5,
                           "start": start.isoformat().replace("+00:00", "Z")}]}


def _schedule_commands() -> list[tuple]:
    return query("SELECT device_id, target_temp, ok, error FROM commands WHERE issued_by = 'schedule' "
                 "ORDER BY device_id").rows()


def test_the_setpoint_arrives_at_the_change_point(stack: dict[str, Any]) -> None:
    """The valve gets 22.5 at the boost's start (not before, once, audited ok); the original firmware's 21.5 is
    refused with its reason and audited; the targets the devices already hold are not re-sent at start-up."""
    env, logs = stack["env"], stack["logs"]
    stack["procs"]["automation"] = _start(["-m", "thermolog.cli", "automation"], env, logs["automation"])
    _wait(lambda: "automation: alerts every" in logs["automation"].read_text(errors="replace"), 60,
          "the automation process running")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=LEAD_S)
    settings = get_settings()
    set_schedule(VALVE_ID, _program(20.0, 22.5, start), "operator", settings)
    set_schedule(ORIGINAL_ID, _program(25.0, 21.5, start), "operator", settings)

    def valve_target() -> float | None:
        return dict(query("SELECT device_id, target_temp FROM device_state").iter_rows()).get(VALVE_ID)

    _wait(lambda: valve_target() == 22.5, LEAD_S + 30, "the valve at the boost's 22.5")
    arrived = datetime.now(UTC)
    assert arrived >= start, f"the setpoint arrived at {arrived}, before the change point {start}"

    _wait(lambda: len(_schedule_commands()) == 2 and all(row[2] is not None for row in _schedule_commands()), 30,
          "both schedule commands audited with their outcome")
    rows = _schedule_commands()
    assert [(r[0], r[1], r[2]) for r in rows] == [(ORIGINAL_ID, 21.5, False), (VALVE_ID, 22.5, True)], rows
    assert "whole degrees" in rows[0][3]
    text = logs["automation"].read_text(errors="replace")
    assert "refused" in text and ORIGINAL_ID in text
    assert dict(query("SELECT device_id, target_temp FROM device_state").iter_rows())[ORIGINAL_ID] == 25.0
