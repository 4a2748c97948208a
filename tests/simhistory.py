"""Simulated history through the real path: ``thermolog simulate --backfill`` publishes to Mosquitto, the ingest
worker writes a fresh DuckDB. Used by the analytics and notebook tests (one run per test session).

Also builds the same history without MQTT (``direct_history``, ``in_process_history``), for fast tests of the
analytics and for trying them on other stretches of the same devices' history.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from ingest.worker import IngestWorker
from simulator.device import SimDevice
from simulator.model import DeviceParams
from simulator.run import params_document
from simulator.schedule import schedule_between
from tests.waiting import wait_until
from thermolog.cli_types import device_ids as sim_device_ids
from thermolog.reader import DatabaseNotReady, read_connection
from thermolog.settings import Settings

DEVICES = 3
INTERVAL_S = 60
DAYS = 14
SEED = 4
READINGS_PER_DEVICE = DAYS * 86_400 // INTERVAL_S
STALL_S = 10.0
BACKFILL_END = os.environ.get("THERMOLOG_TEST_HISTORY_END", "2026-11-01T00:00:00Z")
"""Where the simulated history ends: fixed, so the same seed gives the same history on every run (the
acceptance figures do not drift with the time of day the suite runs at); override to try other stretches."""
BACKFILL_RATE = 5000
"""Messages per second for the backfill: the private broker queues whatever ingest has not taken yet."""


@dataclass(frozen=True)
class History:
    """A database filled through MQTT and ingest, and the simulator's recorded truth."""

    db_path: Path
    params_path: Path
    params: dict[str, Any]
    readings: int
    """How many readings reached the database."""

    def truth(self, device_id: str) -> DeviceParams:
        """The recorded parameters of one simulated device."""
        return truth_of(self.params, device_id)

    @property
    def device_ids(self) -> list[str]:
        return [d["device_id"] for d in self.params["devices"]]


def _telemetry_count(db_path: Path) -> int:
    try:
        with read_connection(db_path, retry_s=2.0) as con:
            return int(con.execute("SELECT count(*) FROM telemetry").fetchone()[0])  # type: ignore[index]
    except DatabaseNotReady:
        return 0


def _all_in_or_stalled(db_path: Path, expected: int) -> Callable[[], bool]:
    """A check for wait_until: true once ``expected`` readings are stored or the count stopped growing for
    ``STALL_S`` seconds."""
    progress = {"count": -1, "since": time.monotonic()}

    def check() -> bool:
        count = _telemetry_count(db_path)
        if count != progress["count"]:
            progress.update(count=count, since=time.monotonic())
        return count >= expected or time.monotonic() - progress["since"] >= STALL_S

    return check


def backfilled_history(workdir: Path, broker: tuple[str, int], timeout_s: float = 240.0) -> History:
    """Backfill ``DAYS`` of ``DEVICES`` thermostats at ``INTERVAL_S`` through the broker into ``workdir``."""
    prefix = f"an{uuid.uuid4().hex[:10]}"
    db_path, params_path = workdir / "thermolog.duckdb", workdir / "sim_params.json"
    env = {
        "THERMOLOG_MQTT_URL": f"mqtt://{broker[0]}:{broker[1]}",
        "THERMOLOG_DB_PATH": str(db_path),
        "THERMOLOG_JOURNAL_DIR": str(workdir / "journal"),
        "THERMOLOG_TOPIC_PREFIX": prefix,
        "THERMOLOG_INGEST_CLIENT_ID": f"ingest-{prefix}",
    }
    settings = Settings(**{k.removeprefix("THERMOLOG_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    worker = IngestWorker(settings)
    worker.start()  # returns once subscribed, so nothing the simulator publishes is missed
    try:
        subprocess.run(
            [sys.executable, "-m", "thermolog.cli", "simulate", "--devices", str(DEVICES), "--interval",
             str(INTERVAL_S), "--backfill", f"{DAYS}d", "--backfill-only", "--seed", str(SEED),
             "--topic-prefix", prefix, "--params-out", str(params_path), "--max-rate", str(BACKFILL_RATE),
             "--backfill-end", BACKFILL_END],
            env={**os.environ, **env}, cwd=workdir, check=True, timeout=timeout_s,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        # Wait until every reading is in, or none arrived for STALL_S: a broker that dropped messages for a
        # subscriber that fell behind shows as missing readings (checked by test_every_reading_went_through_ingest).
        wait_until(_all_in_or_stalled(db_path, DEVICES * READINGS_PER_DEVICE), timeout_s,
                   "every reading in the database, or none arriving for STALL_S", interval=0.5)
    finally:
        worker.stop()
        _forget_session(settings.ingest_client_id, broker)
    return History(db_path, params_path, json.loads(params_path.read_text()), _telemetry_count(db_path))


def _forget_session(client_id: str, broker: tuple[str, int]) -> None:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(client_id=client_id, clean_session=True)
    try:
        client.connect(*broker)
        client.disconnect()
    except OSError:
        pass


def direct_history(device_ids: list[str], seed: int = SEED, days: float = DAYS, interval_s: float = INTERVAL_S,
                   t0: float = 1_790_000_000.0) -> tuple[pl.DataFrame, list[SimDevice]]:
    """The same simulated devices stepped in-process (no MQTT): a telemetry frame and the devices (truth)."""
    devices = []
    for device_id in device_ids:
        device = SimDevice(DeviceParams.draw(device_id, seed), seed, t0)
        device.schedule = schedule_between(device_id, seed, t0, t0 + days * 86_400)
        devices.append(device)
    rows = []
    for k in range(int(days * 86_400 / interval_s)):
        for device in devices:
            device.advance(t0 + k * interval_s)
            r = device.reading()
            rows.append((r.device_id, r.timestamp, r.temperature, r.humidity, r.target_temp, r.heating == "ON"))
    frame = pl.DataFrame(rows, schema=["device_id", "ts", "temperature", "humidity", "target_temp", "heating"],
                         orient="row")
    return frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC")), devices


def in_process_history(end: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """What ``backfilled_history`` would record with the history ending at ``end`` (ISO, UTC), stepped in-process:
    the telemetry frame and the parameters as the simulator's file has them (devices, setpoint_changes, ends)."""
    t_end = math.floor(utc(end).timestamp())
    t0 = t_end - READINGS_PER_DEVICE * INTERVAL_S  # where ``thermolog simulate --backfill-end`` starts
    frame, devices = direct_history(sim_device_ids(DEVICES, "sim"), SEED, DAYS, INTERVAL_S, float(t0))
    params = params_document(devices, backfill_start=datetime.fromtimestamp(t0, UTC).isoformat(),
                             backfill_end=datetime.fromtimestamp(t_end, UTC).isoformat())
    return frame, params


def truth_of(params: dict[str, Any], device_id: str) -> DeviceParams:
    """The recorded parameters of one simulated device in a parameters document."""
    (row,) = [d for d in params["devices"] if d["device_id"] == device_id]
    return DeviceParams(**row)


def utc(text: str) -> datetime:
    """Parse the ISO timestamps of the parameters file."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
