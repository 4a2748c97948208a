"""History chart queries on the lake (DuckLake: catalog in PostgreSQL, Parquet on a local path, after
``thermolog lake maintain``) against the local DuckDB file, in the same run.

The same readings as ``bench.history`` (10 devices at one per 10 s: 365 days are 31.5 M rows) go through each
writer's own path (``DuckDBSink`` / ``LakeSink``), then the lake is compacted. Both answer the app's chart query
(``queries.history``: min/avg/max per bucket, at most 2,000 buckets, one device) over 24 h, 30 d and 1 y; warm
medians. Targets (issue 16): lake <= 3x the local file and <= 150 ms. The catalog is a fresh database in the
PostgreSQL at ``THERMOLOG_BENCH_PG`` (default ``host=127.0.0.1 user=postgres``), dropped afterwards.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import Result
from bench.history import _load_duckdb, _median_ms, write_chunks

TARGET_RATIO = 3.0
TARGET_MS = 150.0


def _load_lake(settings, days: int, end: datetime) -> float:  # noqa: ANN001 - thermolog Settings
    from ingest.sinks.lake import LakeSink

    sink = LakeSink(settings, "bench")
    started = time.perf_counter()
    write_chunks(sink, days, end)
    sink.close()
    return time.perf_counter() - started


def run(days: int = 365) -> list[Result]:
    """Load ``days`` of history into the local file and the lake and time the chart queries on both."""
    import psycopg

    from thermolog import lake, lake_maintain, queries
    from thermolog.settings import Settings, get_settings

    server = os.environ.get("THERMOLOG_BENCH_PG", "host=127.0.0.1 user=postgres")
    name = f"thermolog_bench_{uuid.uuid4().hex[:8]}"
    end = datetime.now(UTC).replace(microsecond=0)
    results: list[Result] = []
    with psycopg.connect(f"{server} dbname=postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    saved = {key: os.environ.get(key) for key in ("THERMOLOG_LAKE_CATALOG", "THERMOLOG_LAKE_DATA_PATH")}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
            duck = Path(tmp) / "history.duckdb"
            env = {"THERMOLOG_LAKE_CATALOG": f"postgres:{server} dbname={name}",
                   "THERMOLOG_LAKE_DATA_PATH": str(Path(tmp) / "lake")}
            settings = Settings(lake_catalog=env["THERMOLOG_LAKE_CATALOG"],
                                lake_data_path=env["THERMOLOG_LAKE_DATA_PATH"])
            rows = 10 * days * 86400 // 10
            print(f"   loading {rows:,} rows into the local file and the lake ...", file=sys.stderr, flush=True)
            results.append(Result("lake", "local file load (writer path)", _load_duckdb(duck, days, end), "s"))
            results.append(Result("lake", "lake load (LakeSink, one worker)", _load_lake(settings, days, end), "s"))
            started = time.perf_counter()
            figures = lake_maintain.maintain(settings)
            results.append(Result("lake", "lake maintain (merge rollups, compact, expire)",
                                  time.perf_counter() - started, "s",
                                  note=f"{figures.files} files, {figures.bytes / 1e6:.0f} MB after"))
            os.environ.update(env)
            get_settings.cache_clear()
            lake.close_shared()
            for label, span in (("24 h", timedelta(hours=24)), ("30 d", timedelta(days=30)),
                                ("1 y", timedelta(days=365))):
                start = end - min(span, timedelta(days=days))
                local_ms, local_rows = _median_ms(
                    lambda s=start: queries.history(["hist-03"], s, end, 2000, Path(tmp) / "history.duckdb").height)
                lake_ms, lake_rows = _median_ms(lambda s=start: queries.history(["hist-03"], s, end, 2000).height)
                ratio = lake_ms / local_ms
                results += [
                    Result("lake", f"lake {label} chart query", lake_ms, "ms", f"<= {TARGET_MS:.0f} ms",
                           lake_ms <= TARGET_MS, f"{lake_rows} buckets (local file: {local_rows})"),
                    Result("lake", f"local file {label} chart query", local_ms, "ms"),
                    Result("lake", f"lake / local file {label}", ratio, "x", f"<= {TARGET_RATIO:.0f}",
                           ratio <= TARGET_RATIO),
                ]
            lake.close_shared()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        with psycopg.connect(f"{server} dbname=postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return results
