"""Test databases for the readers: schema from ``thermolog.schema``, readings and rollups written directly.

The rollups are built here with the same definition the ingest writer maintains (per device and minute/hour:
counts, min/max/sum), so query tests do not need a running worker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from thermolog.schema import create_schema

T0 = datetime(2025, 7, 4, 0, 0, tzinfo=UTC)

_ROLLUP_SQL = """
INSERT INTO {table}
SELECT device_id, date_trunc('{unit}', ts) AS bucket, count(*) AS n,
       min(temperature), max(temperature), sum(temperature),
       count(humidity), min(humidity), max(humidity), sum(humidity),
       min(target_temp), max(target_temp), sum(target_temp),
       count(*) FILTER (WHERE heating), min(ts), max(ts)
FROM telemetry GROUP BY ALL
"""


def readings(device_id: str, start: datetime, count: int, interval_s: float, target: float = 21.0,
             base: float = 20.0, amplitude: float = 2.0, period_s: float = 3600.0) -> pl.DataFrame:
    """``count`` readings every ``interval_s`` seconds: a sine around ``base``, heater ON below target."""
    index = np.arange(count)
    offsets_us = np.round(index * interval_s * 1e6).astype("int64")
    ts = pl.Series("ts", int(start.timestamp() * 1e6) + offsets_us).cast(pl.Datetime("us", "UTC"))
    temps = np.round(base + amplitude * np.sin(2 * math.pi * index * interval_s / period_s), 3)
    return pl.DataFrame({
        "device_id": [device_id] * count,
        "ts": ts,
        "temperature": temps,
        "humidity": 40.0 + (index % 10),
        "target_temp": np.full(count, target),
        "heating": temps < target,
        "received_at": ts,
    })


def build_db(path: Path, frames: Sequence[pl.DataFrame], status: Sequence[tuple[str, datetime, str]] = (),
             state: Sequence[tuple[str, datetime, float]] = (),
             system: Sequence[tuple[str, datetime, float, float, float]] = (),
             commands: Sequence[tuple] = (), rejected: Sequence[tuple[datetime, str, str, bytes]] = ()) -> Path:
    """Create a database at ``path`` holding the readings (with rollups) and the other rows given."""
    con = duckdb.connect(str(path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        create_schema(con)
        for frame in frames:
            con.register("incoming", frame.to_arrow())
            con.execute("INSERT INTO telemetry SELECT * FROM incoming")
            con.unregister("incoming")
        con.execute(_ROLLUP_SQL.format(table="telemetry_1m", unit="minute"))
        con.execute(_ROLLUP_SQL.format(table="telemetry_1h", unit="hour"))
        for device_id, ts, value in status:
            con.execute("INSERT INTO device_status VALUES (?, ?, ?)", [device_id, ts, value])
        for device_id, ts, target in state:
            con.execute("INSERT INTO device_state (device_id, updated_at, target_temp, mode, firmware) "
                        "VALUES (?, ?, ?, 'heat', 'test')", [device_id, ts, target])
        for host, ts, cpu, mem, disk in system:
            con.execute("INSERT INTO system_metrics (host, ts, cpu_usage, memory_usage, disk_usage, received_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", [host, ts, cpu, mem, disk, ts])
        for row in commands:
            con.execute("INSERT INTO commands (request_id, device_id, sent_at, issued_by, target_temp, acked_at, "
                        "ok, error, transport) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", list(row))
        for received_at, topic, reason, payload in rejected:
            con.execute("INSERT INTO rejected (received_at, topic, reason, payload, payload_size) "
                        "VALUES (?, ?, ?, ?, ?)", [received_at, topic, reason, payload, len(payload)])
    finally:
        con.close()
    return path
