"""End-to-end latency at a steady 1,000 msg/s: publisher's timestamp -> row visible to a reader.

A reader polls the database read-only every POLL_S seconds (as the app does), so each figure includes up to
POLL_S of polling delay; the flush interval (THERMOLOG_FLUSH_INTERVAL_S) dominates the rest. Target p99 <= 2 s.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.common import Result, private_mosquitto, publish, running_ingest

RATE = 1000
POLL_S = 0.1
TARGET_P99_S = 2.0


def run(seconds: int = 60) -> list[Result]:
    """Publish at RATE msg/s for ``seconds`` and measure publish-to-visible latency for every row."""
    from thermolog.reader import DatabaseNotReady, read_connection

    count = RATE * seconds
    prefix = f"lat{uuid.uuid4().hex[:6]}"
    latencies: list[float] = []
    with (private_mosquitto() as port, tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp,
          running_ingest(Path(tmp), port, prefix) as (_, db, _flushes)):
        pub = publish(port, prefix, count, devices=10, rate=RATE)
        last = datetime(1970, 1, 1, tzinfo=UTC)
        seen = 0
        deadline = time.monotonic() + seconds + 60
        while seen < count and time.monotonic() < deadline:
            time.sleep(POLL_S)  # the reader's polling period is part of what is measured
            try:
                with read_connection(db, retry_s=0.5) as con:
                    rows = con.execute("SELECT ts FROM telemetry WHERE ts > ? ORDER BY ts", [last]).fetchall()
            except DatabaseNotReady:
                continue
            now = datetime.now(UTC)
            if rows:
                last = rows[-1][0]
                seen += len(rows)
                latencies.extend((now - ts).total_seconds() for (ts,) in rows)
        pub.wait(30)
    values = np.array(latencies) if latencies else np.array([float("nan")])
    p50, p99 = float(np.percentile(values, 50)), float(np.percentile(values, 99))
    return [
        Result("latency", "p50 publish -> visible", p50, "s", note=f"reader polls every {POLL_S} s"),
        Result("latency", "p99 publish -> visible", p99, "s", f"<= {TARGET_P99_S}", p99 <= TARGET_P99_S),
        Result("latency", "rows seen", len(latencies), "rows", f"{count}", len(latencies) == count),
    ]
