"""Every kind of thermostat end to end, as processes: a real Mosquitto, `thermolog ingest`, the devices (the
simulator, an original-firmware device, a Zigbee2MQTT bridge) and `thermolog setpoint` round trips.

All with default settings (topic roots `iot` and `zigbee2mqtt`), on a private broker so nothing else on the
machine publishes there.
"""

from __future__ import annotations

import os
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

pytestmark = pytest.mark.slow

ORIGINAL_ID = "esp32c3-01"
VALVE_ID = derive_id("z2m-", z2m.VALVE_NAME)
TUYA_ID = derive_id("z2m-", z2m.TUYA_NAME)
SIM_ID = "sim-01"


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """wait_until, counting a database that is not there yet as "not yet"."""
    return wait_until(predicate, timeout, what, retry_on=(DatabaseNotReady,))


def _python(module: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read() if proc.stdout else ""


@pytest.fixture
def stack(thermolog_env: dict[str, str], private_broker: PrivateBroker, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Broker, ingest worker, one device of each kind; yields the env and the processes."""
    private_broker.start()
    env = {**os.environ, **thermolog_env, "THERMOLOG_MQTT_URL": f"mqtt://127.0.0.1:{private_broker.port}",
           "THERMOLOG_COMMAND_TIMEOUT_S": "10", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    monkeypatch.setenv("THERMOLOG_MQTT_URL", env["THERMOLOG_MQTT_URL"])
    port = str(private_broker.port)
    procs = {"ingest": _python("thermolog.cli", "ingest", env=env)}
    try:
        _wait(lambda: queries.ingest_state().get("mqtt_connected") == "true", 60, "ingest subscribed")
        procs["original"] = _python("tests.original_firmware", "--interval", "0.5", env=env)
        procs["z2m"] = _python("tests.zigbee2mqtt_standin", "--port", port, "--interval", "0.5", env=env)
        procs["sim"] = _python("thermolog.cli", "simulate", "--devices", "1", "--interval", "1", env=env)
        yield {"env": env, "procs": procs}
    finally:
        outputs = {name: _stop(proc) for name, proc in reversed(procs.items())}
        for name, text in outputs.items():
            print(f"--- {name} ---\n{text[-3000:]}")


def _setpoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "thermolog.cli", "setpoint", *args], env=env, capture_output=True,
                          text=True, timeout=90)


def test_every_kind_is_stored_and_takes_commands(stack: dict[str, Any]) -> None:
    """Each kind appears with its first readings, takes a setpoint in its own format with the outcome audited;
    the original firmware's half degrees are refused before sending; a silent bridge times out."""
    env = stack["env"]
    expected = {ORIGINAL_ID, VALVE_ID, TUYA_ID, SIM_ID}
    _wait(lambda: expected <= set(queries.devices()), 60, "readings of every kind")
    kinds = dict(query("SELECT device_id, kind FROM devices").iter_rows())
    assert kinds == {ORIGINAL_ID: "original", VALVE_ID: "zigbee2mqtt", TUYA_ID: "zigbee2mqtt"}
    names = dict(query("SELECT device_id, name FROM devices WHERE kind = 'zigbee2mqtt'").iter_rows())
    assert names[VALVE_ID] == z2m.VALVE_NAME

    ok = _setpoint(env, ORIGINAL_ID, "22")
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout

    half = _setpoint(env, ORIGINAL_ID, "21.5")
    assert half.returncode == 1
    assert "whole degrees" in half.stderr and "int(value)" in half.stderr

    valve = _setpoint(env, VALVE_ID, "21.5")
    assert valve.returncode == 0, valve.stderr
    tuya_off = _setpoint(env, TUYA_ID, "--mode", "off")
    assert tuya_off.returncode == 0, tuya_off.stderr
    native = _setpoint(env, SIM_ID, "22.5")
    assert native.returncode == 0, native.stderr
    native_off = _setpoint(env, SIM_ID, "--mode", "off")
    assert native_off.returncode == 0, native_off.stderr

    def audit() -> dict[tuple, tuple]:
        rows = query("SELECT device_id, target_temp, mode, issued_by, ok, error FROM commands").rows()
        return {(r[0], r[1], r[2]): (r[3], r[4], r[5]) for r in rows}

    def audited() -> bool:
        rows = audit()
        return all(rows.get(key, (None, None))[1] is not None for key in [
            (ORIGINAL_ID, 22.0, None), (VALVE_ID, 21.5, None), (TUYA_ID, None, "off"), (SIM_ID, 22.5, None),
            (SIM_ID, None, "off"), (ORIGINAL_ID, 21.5, None)])

    try:
        _wait(audited, 30, "every command audited")
    except AssertionError:
        raise AssertionError(f"audit incomplete: {audit()}") from None
    rows = audit()
    assert rows[(ORIGINAL_ID, 22.0, None)][1] is True and rows[(VALVE_ID, 21.5, None)][1] is True
    assert rows[(ORIGINAL_ID, 21.5, None)][1] is False
    assert "whole degrees" in rows[(ORIGINAL_ID, 21.5, None)][2]
    assert all(value[0].startswith("cli:") for value in rows.values())
    assert rows[(TUYA_ID, None, "off")][1] is True and rows[(SIM_ID, None, "off")][1] is True

    state = dict(query("SELECT device_id, mode FROM device_state").iter_rows())
    assert state[TUYA_ID] == "off"
    _wait(lambda: dict(query("SELECT device_id, mode FROM device_state").iter_rows())[SIM_ID] == "off",
          10, "the simulator's state shows mode off")
    assert queries.export_count([VALVE_ID, ORIGINAL_ID], *_range()) > 0
    rejected = query("SELECT topic, reason FROM rejected").rows()
    assert rejected == [], rejected
    assert int(queries.ingest_state()["ignored_total"]) > 0  # the sensor and the bridge's own topics

    _stop(stack["procs"]["z2m"])
    silent = _setpoint({**env, "THERMOLOG_COMMAND_TIMEOUT_S": "1"}, VALVE_ID, "20")
    assert silent.returncode == 3
    assert "timeout" in silent.stderr


def _range() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(minutes=1)
