"""History chart queries: DuckDB (with the writer's rollups) against SQLite with an index on (device_id, ts).

10 devices at one reading per 10 s are loaded through the ingest writer's bulk path (``DuckDBSink.write``,
which also keeps the 1-minute and 1-hour rollups) and, for comparison, into SQLite — the store Home
Assistant's recorder uses — as plain rows with the index. Both answer the same chart: min/avg/max per bucket,
at most 2,000 buckets, for one device over 24 h, 30 d and 1 y (warm median of several runs, each opening the
database as the app does). The bucket width and DuckDB's source are ``queries.choose_resolution``'s; SQLite
buckets its raw rows to the same width over the same range. The 1-year figure built by the app's chart code must
stay <= 2,000 points per series and <= 500 KB of JSON.

Targets: every chart query <= 50 ms, and >= 20x SQLite wherever SQLite needs more than 50 ms for the same buckets
(30 d and 1 y). The 24 h ratio is reported without that target: the reader's own floor of opening the file is
above SQLite's whole time there. The reader's floor (attach, ``SELECT 1``, detach) is
reported too: no chart query can beat it; so is each query on a connection held open, which shows what opening
the file per read costs.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from bench.common import Result

DEVICES = 10
INTERVAL_S = 10
CHUNK_DAYS = 7
RUNS = 7
TARGET_MS = 50.0
TARGET_SPEEDUP = 20.0
MAX_FIGURE_BYTES = 500_000


def _chunks(days: int, end: datetime):  # noqa: ANN202 - generator of (device ids, ts_s, temperature, ...)
    """CHUNK_DAYS of readings of every device at a time, in time order (as a flush would bring them)."""
    rng = np.random.default_rng(7)
    start_s = int(end.timestamp()) - days * 86400
    per_day = 86400 // INTERVAL_S
    for first_day in range(0, days, CHUNK_DAYS):
        n_days = min(CHUNK_DAYS, days - first_day)
        steps = np.arange(first_day * per_day, (first_day + n_days) * per_day, dtype=np.int64)
        ts_s = np.repeat(start_s + steps * INTERVAL_S, DEVICES)
        device = np.tile(np.arange(DEVICES), steps.size)
        phase = 2 * np.pi * (ts_s % 86400) / 86400
        temperature = 20 + 2 * np.sin(phase + device) + rng.normal(0, 0.1, ts_s.size)
        heating = np.sin(phase * 24 + device) > 0.3
        ids = [f"hist-{d:02d}" for d in range(DEVICES)]
        yield [ids[d] for d in device.tolist()], ts_s, temperature, 45 + 5 * np.cos(phase), heating


def _load_duckdb(db: Path, days: int, end: datetime) -> float:
    from ingest.sinks.duckdb import DuckDBSink

    started = time.perf_counter()
    write_chunks(DuckDBSink(db), days, end)
    return time.perf_counter() - started


def write_chunks(sink: Any, days: int, end: datetime) -> None:
    """The benchmark's history, chunk by chunk, through ``sink.write`` (the file sink or the lake sink)."""
    from ingest.parse import Batch

    for device_id, ts_s, temperature, humidity, heating in _chunks(days, end):
        batch = Batch()
        ts_us = (ts_s * 1_000_000).tolist()
        batch.telemetry.update(
            device_id=device_id, ts=ts_us, temperature=temperature.round(2).tolist(),
            humidity=humidity.round(1).tolist(), target_temp=[21.0] * len(ts_us), heating=heating.tolist(),
            received_at=ts_us,
        )
        batch.records = len(ts_us)
        sink.write(batch, [])


def _load_sqlite(db: Path, days: int, end: datetime) -> float:
    started = time.perf_counter()
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE telemetry (device_id TEXT, ts INTEGER, temperature REAL, humidity REAL, "
                "target_temp REAL, heating INTEGER)")
    for device_id, ts_s, temperature, humidity, heating in _chunks(days, end):
        rows = zip(device_id, (ts_s * 1000).tolist(), temperature.round(2).tolist(),
                   humidity.round(1).tolist(), [21.0] * ts_s.size, heating.astype(int).tolist(), strict=True)
        con.executemany("INSERT INTO telemetry VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.execute("CREATE INDEX telemetry_device_ts ON telemetry (device_id, ts)")
    con.commit()
    con.close()
    return time.perf_counter() - started


SQLITE_BUCKETS = """
    SELECT ts / ? AS b, min(ts), count(*), min(temperature), avg(temperature), max(temperature),
           min(humidity), avg(humidity), max(humidity), avg(target_temp), avg(heating)
    FROM telemetry WHERE device_id = ? AND ts >= ? AND ts < ? GROUP BY b ORDER BY b
"""


def _median_ms(run_once) -> tuple[float, int]:  # noqa: ANN001 - a zero-argument callable returning a row count
    rows = run_once()  # warm-up
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        rows = run_once()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), rows


def _speedup(label: str, lite_ms: float, duck_ms: float) -> Result:
    """SQLite / DuckDB for one range. The 20x target applies where SQLite itself needs more than TARGET_MS: below
    that (24 h), the reader's own floor of opening the file is above SQLite's whole time, so only the ratio is
    reported."""
    speedup = lite_ms / duck_ms
    if lite_ms > TARGET_MS:
        return Result("history", f"SQLite / DuckDB {label}", speedup, "x", f">= {TARGET_SPEEDUP:.0f}",
                      speedup >= TARGET_SPEEDUP, f"SQLite needs more than {TARGET_MS:.0f} ms here")
    return Result("history", f"SQLite / DuckDB {label}", speedup, "x",
                  note=f"no 20x target: SQLite needs <= {TARGET_MS:.0f} ms, less than the reader's floor")


def _range_results(label: str, span: timedelta, end: datetime, duck: Path, lite: Path,
                   held: duckdb.DuckDBPyConnection) -> list[Result]:
    """The chart query over one range: DuckDB as the app runs it, SQLite, DuckDB on a held connection, ratio."""
    from thermolog import queries

    start = end - span
    res = queries.choose_resolution(start, end, 2000)
    duck_ms, duck_rows = _median_ms(lambda: queries.history(["hist-03"], start, end, 2000, duck).height)

    def sqlite_once() -> int:
        con = sqlite3.connect(lite)
        try:
            params = (res.bucket_ms, "hist-03", int(start.timestamp() * 1000), int(end.timestamp() * 1000))
            return len(con.execute(SQLITE_BUCKETS, params).fetchall())
        finally:
            con.close()

    lite_ms, lite_rows = _median_ms(sqlite_once)
    chart_sql = queries.history_sql(["hist-03"], start, end, 2000)
    held_ms, _ = _median_ms(lambda: len(held.execute(*chart_sql).fetchall()))
    width = f"{res.bucket_ms / 60_000:g} min" if res.bucket_ms >= 60_000 else f"{res.bucket_ms / 1000:g} s"
    note = f"{duck_rows} buckets of {width} from {res.source}; SQLite {lite_rows} buckets from raw rows"
    return [
        Result("history", f"DuckDB {label} chart query", duck_ms, "ms", f"<= {TARGET_MS:.0f} ms",
               duck_ms <= TARGET_MS, note),
        Result("history", f"SQLite {label} chart query", lite_ms, "ms"),
        Result("history", f"DuckDB {label} on a connection held open", held_ms, "ms",
               note=f"without opening the file per read: {lite_ms / held_ms:.1f}x SQLite"),
        _speedup(label, lite_ms, duck_ms),
    ]


def _payload_results(duck: Path, days: int, end: datetime) -> list[Result]:
    """Points per series and JSON size of the 1-year figure built by the app's chart code (temperature, target,
    heater shading, bands and the humidity row), at the 2,000 points the target allows (the app's default is
    1,000)."""
    from app import ui
    from thermolog import queries

    frame = queries.history(["hist-03"], end - timedelta(days=min(days, 365)), end, 2000, duck)
    figure = ui.history_figure(frame, ui.CELSIUS, with_target=True, with_heating=True, with_humidity=True)
    size = len(figure.to_json().encode())
    points = max(len(trace.x) for trace in figure.data)
    return [
        Result("payload", "1-year chart: points per series", points, "points", "<= 2000", points <= 2000),
        Result("payload", "1-year chart: figure JSON", size / 1000, "KB", "<= 500 KB", size <= MAX_FIGURE_BYTES),
    ]


def run(days: int = 365) -> list[Result]:
    """Load ``days`` of history for 10 devices into both stores and time the chart queries."""
    from thermolog import reader

    end = datetime.now(UTC).replace(microsecond=0)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        duck, lite = Path(tmp) / "history.duckdb", Path(tmp) / "history.sqlite"
        print(f"   loading {DEVICES * days * 86400 // INTERVAL_S:,} rows into DuckDB ...", file=sys.stderr, flush=True)
        results.append(Result("history", "DuckDB bulk load (writer path, with rollups)", _load_duckdb(duck, days, end),
                              "s"))
        print("   loading the same rows into SQLite ...", file=sys.stderr, flush=True)
        results.append(Result("history", "SQLite load (executemany + index)", _load_sqlite(lite, days, end), "s"))
        # What the chart query costs on a connection that keeps the file open and its blocks cached: the app
        # cannot do this (the writer needs the file between reads), but it shows what opening per read costs.
        held = duckdb.connect(str(duck), read_only=True)
        held.execute("SET TimeZone = 'UTC'")
        for label, span in (("24 h", timedelta(hours=24)), ("30 d", timedelta(days=30)), ("1 y", timedelta(days=365))):
            results += _range_results(label, min(span, timedelta(days=days)), end, duck, lite, held)
        held.close()
        floor_ms, _ = _median_ms(lambda: reader.query("SELECT 1", None, duck).height)
        results.append(Result("history", "DuckDB reader floor (attach, SELECT 1, detach)", floor_ms, "ms",
                              note="the least any chart query through thermolog.reader costs"))
        results += _payload_results(duck, days, end)
    return results

