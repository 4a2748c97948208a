"""Ingest worker memory under a steady 2,000 msg/s: RSS must stay flat within +-10 % after warm-up."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import psutil

from bench.common import Result, private_mosquitto, publish, running_ingest

RATE = 2000
TOLERANCE = 0.10


def _tree_rss(proc: psutil.Process) -> int:
    """RSS of the worker and its flusher process (which holds the DuckDB connection)."""
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run(seconds: int = 600) -> list[Result]:
    """Sample the worker's RSS every second; compare the last quarter's mean with the second quarter's."""
    prefix = f"mem{uuid.uuid4().hex[:6]}"
    samples: list[int] = []
    with (private_mosquitto() as port, tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp,
          running_ingest(Path(tmp), port, prefix) as (worker, _db, _flushes)):
        proc = psutil.Process(worker.pid)
        pub = publish(port, prefix, RATE * seconds, devices=50, rate=RATE)
        while pub.poll() is None:
            samples.append(_tree_rss(proc))
            time.sleep(1.0)  # one RSS sample a second
    quarter = max(1, len(samples) // 4)
    early = sum(samples[quarter: 2 * quarter]) / max(1, len(samples[quarter: 2 * quarter]))
    late = sum(samples[-quarter:]) / quarter
    drift = (late - early) / early if early else float("nan")
    return [
        Result("memory", "ingest RSS (worker + flusher), 2nd quarter", early / 2**20, "MiB"),
        Result("memory", "ingest RSS (worker + flusher), last quarter", late / 2**20, "MiB"),
        Result("memory", "RSS drift", drift * 100, "%", f"within +-{TOLERANCE:.0%}", abs(drift) <= TOLERANCE),
    ]
