"""``thermolog lake maintain`` / ``thermolog lake status``: keep the lake small and fast, and show its health.

Maintenance (safe while ingest workers write; it only deletes rows its own snapshot sees, so rows committed
meanwhile stay, and a transaction that conflicts is retried):
- raw readings older than ``THERMOLOG_RAW_RETENTION_DAYS`` are deleted (rollups stay);
- rollup partial aggregates are merged to one row per (device, bucket), worker state to its latest rows;
- data inlined in the catalog is written out, small adjacent files are merged;
- snapshots older than ``THERMOLOG_LAKE_SNAPSHOT_RETENTION_H`` expire and files nobody references are deleted.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from thermolog import lake
from thermolog.settings import Settings, get_settings

log = logging.getLogger(__name__)

DESCRIPTION = __doc__


@dataclass(frozen=True)
class LakeHealth:
    """How the lake looks: data files, their bytes, snapshots, rows waiting inlined in the catalog."""

    files: int
    bytes: int
    delete_files: int
    snapshots: int
    telemetry_rows: int
    rollup_parts: int


def health(con: duckdb.DuckDBPyConnection) -> LakeHealth:
    """The lake's health figures (``con`` has the lake attached as ``lake``)."""
    files, size, deletes = con.execute(
        f"SELECT coalesce(sum(file_count), 0), coalesce(sum(file_size_bytes), 0), "
        f"coalesce(sum(delete_file_count), 0) FROM ducklake_table_info('{lake.ALIAS}')").fetchone()
    snapshots = con.execute(f"SELECT count(*) FROM ducklake_snapshots('{lake.ALIAS}')").fetchone()[0]
    rows = con.execute("SELECT count(*) FROM telemetry").fetchone()[0]
    parts = sum(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in lake.ROLLUP_PARTS.values())
    return LakeHealth(int(files), int(size), int(deletes), int(snapshots), int(rows), int(parts))


def _merge_rollups(con: duckdb.DuckDBPyConnection) -> None:
    """Replace each rollup's partial aggregates by the merged rows its view shows (one per device and bucket)."""
    for view, parts in lake.ROLLUP_PARTS.items():
        lake.run_retrying(con, f"merging {parts}", [
            (f"CREATE OR REPLACE TEMP TABLE merged_parts AS SELECT * FROM {view}", []),
            (f"DELETE FROM {parts}", []),  # the rows this snapshot sees; parts committed meanwhile stay
            (f"INSERT INTO {parts} SELECT * FROM merged_parts ORDER BY bucket, device_id", []),
            ("DROP TABLE merged_parts", []),
        ])


def maintain(settings: Settings | None = None, now: datetime | None = None) -> LakeHealth:
    """One maintenance pass; returns the health afterwards. ``now`` is the time raw retention counts from."""
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    con = lake.connect(settings, create=True)
    try:
        if settings.raw_retention_days:
            cutoff = now - timedelta(days=settings.raw_retention_days)
            lake.run_retrying(con, "raw retention", [("DELETE FROM telemetry WHERE ts < ?", [cutoff])])
        _merge_rollups(con)
        lake.run_retrying(con, "compacting worker state", [(
            "DELETE FROM worker_state WHERE (worker, key, updated_at) NOT IN "
            "(SELECT (worker, key, max(updated_at)) FROM worker_state GROUP BY worker, key)", [])])
        con.execute(f"CALL ducklake_flush_inlined_data('{lake.ALIAS}')")
        # Files with deleted rows are rewritten without them, then small neighbours merged into larger files.
        con.execute(f"CALL ducklake_rewrite_data_files('{lake.ALIAS}', delete_threshold => 0)")
        con.execute(f"CALL ducklake_merge_adjacent_files('{lake.ALIAS}')")
        keep = datetime.now(UTC) - timedelta(hours=settings.lake_snapshot_retention_h)
        con.execute(f"CALL ducklake_expire_snapshots('{lake.ALIAS}', older_than => ?)", [keep])
        con.execute(f"CALL ducklake_cleanup_old_files('{lake.ALIAS}', cleanup_all => true)")
        return health(con)
    finally:
        con.close()


class MaintenanceTimer:
    """Runs :func:`maintain` every ``THERMOLOG_LAKE_MAINTAIN_INTERVAL_H`` from a long-running process
    (``thermolog automation``); the first run comes one interval after the start."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.interval_s = settings.lake_maintain_interval_h * 3600
        self._due = clock() + self.interval_s
        self.last: LakeHealth | None = None

    def tick(self) -> LakeHealth | None:
        """Maintain the lake when due; returns the health after a run (None when not due, or it failed)."""
        if not lake.is_configured(self.settings) or not self.interval_s or self.clock() < self._due:
            return None
        self._due = self.clock() + self.interval_s
        try:
            self.last = maintain(self.settings)
        except Exception:  # the lake or its catalog may be unreachable for a while: try at the next interval
            log.exception("lake maintenance failed; next attempt in %.1f h", self.settings.lake_maintain_interval_h)
            return None
        log.info("lake maintained: %s files, %.1f MB, %s snapshots", self.last.files, self.last.bytes / 1e6,
                 self.last.snapshots)
        return self.last


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Subcommands of ``thermolog lake``."""
    parser.add_argument("action", choices=("maintain", "status"),
                        help="maintain: retention, compaction, snapshot expiry; status: health figures")
    parser.add_argument("--json", action="store_true", help="print the health figures as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action and print the lake's health."""
    settings = get_settings()
    if not lake.is_configured(settings):
        print("thermolog lake: no lake configured (set THERMOLOG_LAKE_CATALOG and THERMOLOG_LAKE_DATA_PATH)")
        return 2
    if args.action == "maintain":
        figures = maintain(settings)
    else:
        with lake.read_connection() as con:
            figures = health(con)
    if args.json:
        print(json.dumps(asdict(figures)))
    else:
        print(f"lake: {figures.files} data files ({figures.bytes / 1e6:.1f} MB, {figures.delete_files} delete files), "
              f"{figures.snapshots} snapshots, {figures.telemetry_rows} readings, {figures.rollup_parts} rollup rows")
    return 0
