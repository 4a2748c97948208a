"""The benchmarks run end to end at small sizes and print their table (figures are not asserted: noisy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bench", "--no-write", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_ingest_benchmark_loses_nothing() -> None:
    """A small ingest run compares against the bare subscriber and stores every message."""
    out = _bench("--only", "ingest", "--size", "5000")
    assert "| ingest throughput | ingest / bare |" in out
    lost = next(line for line in out.splitlines() if "rows lost" in line)
    assert "| 0.000 rows |" in lost


def test_history_benchmark_reports_both_stores_and_payload() -> None:
    """Two days of history: DuckDB and SQLite timings for each range, and the chart payload within budget."""
    out = _bench("--only", "history", "--size", "2")
    for label in ("24 h", "30 d", "1 y"):
        assert f"| history | DuckDB {label} chart query |" in out
        assert f"| history | SQLite / DuckDB {label} |" in out
    points = next(line for line in out.splitlines() if "points per series" in line)
    assert "| yes |" in points


def test_lake_benchmark_compares_the_lake_with_the_local_file() -> None:
    """One day of history in both stores: each range's chart query timed on the lake and the local file, with
    the same number of buckets."""
    out = _bench("--only", "lake", "--size", "1")
    for label in ("24 h", "30 d", "1 y"):
        assert f"| lake | lake / local file {label} |" in out
        row = next(line for line in out.splitlines() if f"| lake | lake {label} chart query |" in line)
        buckets, local = row.split("buckets (local file: ")
        assert buckets.rsplit("|", 1)[-1].strip() == local.split(")")[0]
