"""Ingest throughput: the real ingest worker against two subscribers that only count, same publisher, same run.

Baselines: a bare paho subscriber (what any Python client costs) and a libmosquitto subscriber in C
(``bench/subscriber.c``: the most a client on this broker and machine can take). Targets: ingest / bare paho
>= 0.8 and ingest / C subscriber >= 0.9, with zero loss checked by counting rows in DuckDB.

Rates follow whatever else the machine runs (each rate's note gives the 1-minute load average when it was taken),
so the three run one after the other ROUNDS times, and the figures are those of the round with the median
ingest / C subscriber ratio (the lower middle for an even count); that ratio's note lists every round's. The CPU
time each subscriber spent per message (user + system; for ingest its receiving process and its flusher
process over the measured span, for the baselines their whole run) depends much less on it.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import psutil

from bench.common import (
    Result,
    is_flusher,
    private_mosquitto,
    publish,
    publisher_binary,
    running_ingest,
    subscriber_binary,
)

TARGET_RATIO = 0.8
TARGET_C_RATIO = 0.9
ROUNDS = int(os.environ.get("BENCH_INGEST_ROUNDS", "3"))
"""Rounds of (bare paho, C subscriber, ingest): one round's ratio moved by 0.1 with the neighbours' load here."""


def _paho_command(port: int, prefix: str, count: int) -> list[str]:
    return [sys.executable, "-m", "bench.bare_subscriber", str(port), prefix, str(count)]


def _c_command(port: int, prefix: str, count: int) -> list[str]:
    return [str(subscriber_binary()), "127.0.0.1", str(port), prefix, str(count)]


class Rate(NamedTuple):
    """A subscriber's rate, its CPU seconds per message (one figure per process) and the load it ran under."""

    per_s: float
    cpu_us: tuple[float, ...]
    load: float

    def note(self) -> str:
        return f"load {self.load:.1f}"


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _baseline_rate(port: int, count: int, command) -> Rate:  # noqa: ANN001 - (port, prefix, count) -> argv
    """Messages per second a counting subscriber (``command``) takes from the publisher."""
    prefix = f"base{uuid.uuid4().hex[:6]}"
    publisher_binary()  # compile (or fail) before anything starts that would need stopping
    sub = subprocess.Popen(command(port, prefix, count), stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout is not None
        if sub.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{command.__name__}: the subscriber did not subscribe")
        start = time.monotonic()
        pub = publish(port, prefix, count)
        sub.stdout.readline()  # "done"
        took = time.monotonic() - start
        load = os.getloadavg()[0]
        before = _children_cpu_s()
        sub.wait(10)  # reaped before the publisher: the children's CPU grows by the subscriber's alone
        cpu_s = _children_cpu_s() - before
        pub.wait(60)
        return Rate(count / took, (cpu_s / count * 1e6,), load)
    finally:
        if sub.poll() is None:  # a failure above must not leave it waiting for messages forever
            sub.kill()
            sub.wait()


def _rows(db: Path) -> int:
    from thermolog.reader import DatabaseNotReady, read_connection

    try:
        with read_connection(db, retry_s=1.0) as con:
            return con.execute("SELECT count(*) FROM telemetry").fetchone()[0]
    except DatabaseNotReady:
        return -1


def _ingest_rate(port: int, count: int) -> tuple[Rate, int]:
    prefix = f"ing{uuid.uuid4().hex[:6]}"
    with (tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
          running_ingest(Path(tmp), port, prefix) as (worker, db, flushes)):
        tree = psutil.Process(worker.pid)
        flusher = next(child for child in tree.children() if is_flusher(child))
        before = [sum(tree.cpu_times()[:2]), sum(flusher.cpu_times()[:2])]
        start = time.monotonic()
        pub = publish(port, prefix, count)
        # The clock stops at the commit of the flush that holds the last reading (from the worker's log);
        # the count is then checked in the database itself.
        if not flushes.wait_for(count, 600):
            raise RuntimeError(f"only {flushes.readings:,} of {count:,} readings committed after 600 s")
        took = time.monotonic() - start
        after = [sum(tree.cpu_times()[:2]), sum(flusher.cpu_times()[:2])]
        load = os.getloadavg()[0]
        pub.wait(60)
        stored = _rows(db)
    cpu_us = tuple((a - b) / count * 1e6 for a, b in zip(after, before, strict=True))
    return Rate(count / took, cpu_us, load), stored


def run(count: int = 200_000) -> list[Result]:
    """Publish ``count`` QoS 1 messages to each baseline subscriber, then to the ingest worker, ROUNDS times;
    report the round with the median ingest / C subscriber ratio."""
    rounds = []
    with private_mosquitto() as port:
        for _ in range(ROUNDS):
            bare = _baseline_rate(port, count, _paho_command)
            c_sub = _baseline_rate(port, count, _c_command)
            ingest, stored = _ingest_rate(port, count)
            rounds.append((bare, c_sub, ingest, stored))
    lost = sum(count - stored for *_, stored in rounds)
    by_c_ratio = sorted(rounds, key=lambda r: r[2].per_s / r[1].per_s)
    bare, c_sub, ingest, _ = by_c_ratio[(len(rounds) - 1) // 2]
    ratio, c_ratio = ingest.per_s / bare.per_s, ingest.per_s / c_sub.per_s
    every = ", ".join(f"{i.per_s / c.per_s:.3f}" for _, c, i, _ in rounds)
    return [
        Result("ingest throughput", "bare paho subscriber", bare.per_s, "msg/s", note=bare.note()),
        Result("ingest throughput", "C subscriber (libmosquitto)", c_sub.per_s, "msg/s", note=c_sub.note()),
        Result("ingest throughput", "ingest worker to DuckDB", ingest.per_s, "msg/s", note=ingest.note()),
        Result("ingest throughput", "ingest / bare", ratio, "x", f">= {TARGET_RATIO}", ratio >= TARGET_RATIO),
        Result("ingest throughput", "ingest / C subscriber", c_ratio, "x", f">= {TARGET_C_RATIO}",
               c_ratio >= TARGET_C_RATIO, f"median of {len(rounds)} rounds: {every}"),
        Result("ingest throughput", "rows lost", lost, "rows", "0", lost == 0,
               f"all {len(rounds)} rounds" if len(rounds) > 1 else ""),
        Result("ingest throughput", "CPU per message, bare paho subscriber", bare.cpu_us[0], "µs"),
        Result("ingest throughput", "CPU per message, C subscriber", c_sub.cpu_us[0], "µs"),
        Result("ingest throughput", "CPU per message, ingest receiving process", ingest.cpu_us[0], "µs"),
        Result("ingest throughput", "CPU per message, ingest flusher process", ingest.cpu_us[1], "µs"),
    ]
