"""``python -m bench`` (``make bench``): run the benchmarks, print a table, write docs/performance.md.

Every target is a ratio or a bound measured in this run on this machine; nothing here is a test assertion.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Result

ROOT = Path(__file__).resolve().parent.parent
NOTES_START = "\n## "
"""docs/performance.md's generated part has no second-level heading; from the first one on, the text is kept."""

# name -> (module, default size, quick size, what the size counts)
BENCHMARKS: dict[str, tuple[str, int, int, str]] = {
    "ingest": ("bench.ingest_throughput", 200_000, 20_000, "messages"),
    "latency": ("bench.latency", 60, 5, "seconds at 1,000 msg/s"),
    "history": ("bench.history", 365, 7, "days x 10 devices at 10 s"),
    "lake": ("bench.lake", 365, 2, "days x 10 devices at 10 s"),
    "memory": ("bench.memory_soak", 120, 10, "seconds at 2,000 msg/s"),
    "simulator": ("bench.simulator_scale", 1000, 100, "simulated thermostats at 1 Hz"),
    "pages": ("bench.pages", 1000, 20, "thermostats x 30 d of 60 s history, live in Chromium"),
}


def machine() -> str:
    """One line describing this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {system}"


def table(results: list[Result]) -> str:
    """Results as a Markdown table."""
    rows = ["| benchmark | metric | value | target | met | note |", "|---|---|---|---|---|---|"]
    for r in results:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        value = f"{r.value:,.3f}" if abs(r.value) < 100 else f"{r.value:,.0f}"
        rows.append(f"| {r.benchmark} | {r.metric} | {value} {r.unit} | {r.target} | {met} | {r.note} |")
    return "\n".join(rows)


# run name -> the ``Result.benchmark`` names its rows carry
ROWS_OF: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest throughput",), "latency": ("latency",), "history": ("history", "payload"),
    "lake": ("lake",), "memory": ("memory",), "simulator": ("simulator",), "pages": ("pages", "sessions"),
}
_OLD_STAMP = re.compile(r"^Measured (.+?) on (.+?) with `make bench` \((.+?),", re.MULTILINE)


def _earlier(text: str) -> tuple[dict[str, str], dict[str, list[str]], str]:
    """From an existing report: run lines by run name, result lines by benchmark name, and the notes section."""
    runs: dict[str, str] = {}
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) == 4 and cells[0] in BENCHMARKS:
            runs[cells[0]] = line
        elif len(cells) == 6 and cells[0] not in ("benchmark",):
            rows.setdefault(cells[0], []).append(line)
    old = _OLD_STAMP.search(text)  # a report from before the per-run table: one stamp for every run in it
    if old:
        for name, names in ROWS_OF.items():
            if name not in runs and any(n in rows for n in names):
                runs[name] = f"| {name} | {old.group(1)} | {old.group(2)} | {old.group(3)} |"
    notes_at = text.find(NOTES_START)  # the hand-written sections (``## ...``) after the figures
    return runs, rows, "" if notes_at < 0 else text[notes_at + 1:]


def report_text(results: list[Result], sizes: dict[str, str], seconds: float, previous: str = "") -> str:
    """docs/performance.md from ``previous``: the runs made now (``sizes``: run name -> size) replace their rows,
    with date, machine and size; the rows of runs not made now stay as they were, and so do the hand-written
    sections (``## ...``)."""
    runs, rows, notes = _earlier(previous)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    for name, size in sizes.items():
        runs[name] = f"| {name} | {stamp} | {machine()} | {size} |"
        for benchmark in ROWS_OF[name]:
            rows[benchmark] = table([r for r in results if r.benchmark == benchmark]).splitlines()[2:]
    ordered = [benchmark for name in BENCHMARKS for benchmark in ROWS_OF[name]]
    body = [line for benchmark in ordered for line in rows.get(benchmark, [])]
    body += [line for benchmark, lines in rows.items() if benchmark not in ordered for line in lines]
    return (
        "# Performance\n\n"
        "Written by `python -m bench` (`make bench`). Each comparison is a ratio measured in the same run on the same "
        "machine; the figures vary with load. A run of some benchmarks (`--only`) replaces their rows and keeps the "
        f"others'; the last run took {seconds:.0f} s.\n\n"
        "| run | measured | machine | size |\n|---|---|---|---|\n"
        + "".join(runs[name] + "\n" for name in BENCHMARKS if name in runs)
        + "\n| benchmark | metric | value | target | met | note |\n|---|---|---|---|---|---|\n"
        + "".join(line + "\n" for line in body)
        + "\nRun one benchmark alone: `python -m bench --only NAME --size N` "
        f"(names: {', '.join(BENCHMARKS)}).\n"
        + (f"\n{notes.rstrip()}\n" if notes else "")
    )


def write_report(results: list[Result], sizes: dict[str, str], seconds: float) -> Path:
    """Rewrite docs/performance.md (see :func:`report_text`)."""
    out = ROOT / "docs" / "performance.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report_text(results, sizes, seconds, out.read_text() if out.exists() else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the chosen benchmarks, report."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS),
                        help="run just this benchmark (repeatable)")
    parser.add_argument("--size", type=int, help="size for the chosen benchmark (see the table in --help)")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the benchmarks run (for CI)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not rewrite docs/performance.md")
    parser.epilog = "sizes: " + "; ".join(f"{k}: {v[1]:,} {v[3]} (quick {v[2]:,})" for k, v in BENCHMARKS.items())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    chosen = args.only or list(BENCHMARKS)
    results: list[Result] = []
    sizes: dict[str, str] = {}
    started = time.monotonic()
    for name in chosen:
        module_name, default, quick, unit = BENCHMARKS[name]
        size = args.size if args.size and len(chosen) == 1 else (quick if args.quick else default)
        print(f"== {name}: {size:,} {unit}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        found = importlib.import_module(module_name).run(size)
        print(f"   {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        results.extend(found)
        sizes[name] = f"{size:,} {unit}"
    print(table(results))
    if not args.no_write:
        print(f"\nwritten to {write_report(results, sizes, time.monotonic() - started)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
