"""Ingest throughput: the real ingest worker against two subscribers that only count, same publisher, same run.

Baselines: a bare paho subscriber (what any Python client costs) and a libmosquitto subscriber in C
(``bench/subscriber.c``: the most a client on this broker and machine can take). Targets: ingest / bare paho
>= 0.8 and ingest / C subscriber >= 0.9, with zero loss checked by counting rows in DuckDB.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import Result, private_mosquitto, publish, publisher_binary, running_ingest, subscriber_binary

TARGET_RATIO = 0.8
TARGET_C_RATIO = 0.9


def _paho_command(port: int, prefix: str, count: int) -> list[str]:
    return [sys.executable, "-m", "bench.bare_subscriber", str(port), prefix, str(count)]


def _c_command(port: int, prefix: str, count: int) -> list[str]:
    return [str(subscriber_binary()), "127.0.0.1", str(port), prefix, str(count)]


def _baseline_rate(port: int, count: int, command) -> float:  # noqa: ANN001 - (port, prefix, count) -> argv
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
        pub.wait(60)
        sub.wait(10)
        return count / took
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


def _ingest_rate(port: int, count: int) -> tuple[float, int]:
    prefix = f"ing{uuid.uuid4().hex[:6]}"
    with (tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
          running_ingest(Path(tmp), port, prefix) as (_, db, flushes)):
        start = time.monotonic()
        pub = publish(port, prefix, count)
        # The clock stops at the commit of the flush that holds the last reading (from the worker's log);
        # the count is then checked in the database itself.
        if not flushes.wait_for(count, 600):
            raise RuntimeError(f"only {flushes.readings:,} of {count:,} readings committed after 600 s")
        took = time.monotonic() - start
        pub.wait(60)
        stored = _rows(db)
    return count / took, stored


def run(count: int = 200_000) -> list[Result]:
    """Publish ``count`` QoS 1 messages to each baseline subscriber, then to the ingest worker; compare rates."""
    with private_mosquitto() as port:
        bare = _baseline_rate(port, count, _paho_command)
        c_sub = _baseline_rate(port, count, _c_command)
        ingest, stored = _ingest_rate(port, count)
    ratio, c_ratio = ingest / bare, ingest / c_sub
    return [
        Result("ingest throughput", "bare paho subscriber", bare, "msg/s"),
        Result("ingest throughput", "C subscriber (libmosquitto)", c_sub, "msg/s"),
        Result("ingest throughput", "ingest worker to DuckDB", ingest, "msg/s"),
        Result("ingest throughput", "ingest / bare", ratio, "x", f">= {TARGET_RATIO}", ratio >= TARGET_RATIO),
        Result("ingest throughput", "ingest / C subscriber", c_ratio, "x", f">= {TARGET_C_RATIO}",
               c_ratio >= TARGET_C_RATIO),
        Result("ingest throughput", "rows lost", count - stored, "rows", "0", stored == count),
    ]
