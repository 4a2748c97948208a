"""Ingest worker memory under a steady 2,000 msg/s: RSS of the worker and its flusher <= 150 MiB together, flat
within +-10 % after warm-up.

RSS counts the pages of a shared library (DuckDB's, Python's) in every process that maps them; PSS divides them
among those processes, so it is what the two hold together in physical memory. Both are reported; the target is
on RSS, as the issue states it.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import psutil

from bench.common import Result, is_flusher, private_mosquitto, publish, running_ingest

RATE = 2000
TOLERANCE = 0.10
TARGET_MIB = 150


def _label(member: psutil.Process, worker: psutil.Process) -> str:
    """What a process of the tree is: the worker, its flusher, or another child (named by its command line)."""
    if member.pid == worker.pid:
        return "worker"
    if is_flusher(member):
        return "flusher"
    try:
        return " ".join(member.cmdline())[-40:]
    except psutil.Error:
        return "?"


def _tree(proc: psutil.Process) -> tuple[int, int, list[str]]:
    """RSS and PSS of the worker and its children (the flusher, any helper process), and each one's name,
    RSS and PSS in MiB."""
    rss, pss, each = 0, 0, []
    for member in [proc, *proc.children(recursive=True)]:
        try:
            info = member.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss += info.rss
        pss += info.pss
        each.append(f"{_label(member, proc)} {info.rss / 2**20:.0f}/{info.pss / 2**20:.0f}")
    return rss, pss, each


def run(seconds: int = 600) -> list[Result]:
    """Sample the worker's RSS every second; compare the last quarter's mean with the second quarter's."""
    prefix = f"mem{uuid.uuid4().hex[:6]}"
    samples: list[int] = []
    pss: list[int] = []
    each: list[str] = []
    with (private_mosquitto() as port, tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp,
          running_ingest(Path(tmp), port, prefix) as (worker, _db, _flushes)):
        proc = psutil.Process(worker.pid)
        pub = publish(port, prefix, RATE * seconds, devices=50, rate=RATE)
        while pub.poll() is None:
            rss, proportional, each = _tree(proc)
            samples.append(rss)
            pss.append(proportional)
            time.sleep(1.0)  # one RSS sample a second
    quarter = max(1, len(samples) // 4)
    early = sum(samples[quarter: 2 * quarter]) / max(1, len(samples[quarter: 2 * quarter]))
    late = sum(samples[-quarter:]) / quarter
    drift = (late - early) / early if early else float("nan")
    late_pss = sum(pss[-quarter:]) / quarter
    split = " + ".join(each)
    return [
        Result("memory", "ingest RSS (worker + flusher), 2nd quarter", early / 2**20, "MiB"),
        Result("memory", "ingest RSS (worker + flusher), last quarter", late / 2**20, "MiB",
               f"<= {TARGET_MIB} MiB", late / 2**20 <= TARGET_MIB,
               f"last sample, RSS/PSS of each process: {split} MiB"),
        Result("memory", "ingest PSS (worker + flusher), last quarter", late_pss / 2**20, "MiB",
               note="shared library pages counted once"),
        Result("memory", "RSS drift", drift * 100, "%", f"within +-{TOLERANCE:.0%}", abs(drift) <= TOLERANCE),
    ]
