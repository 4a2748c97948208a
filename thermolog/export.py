"""``thermolog export``: raw readings of devices over a time range to CSV or Parquet, streamed page by page.

The same :func:`export` backs the app's Export page. Pages of ``export_batch_rows`` readings are read with a
fresh read-only connection each (keyset paging in ``thermolog.queries``), so memory stays bounded and the ingest
writer is never locked out for the length of a large export. CSV has a header and ISO-8601 UTC times.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from tqdm import tqdm

from thermolog import queries
from thermolog.reader import DatabaseNotReady, read_connection
from thermolog.settings import get_settings

FORMATS = ("csv", "parquet")
MEDIA_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


def parse_time(text: str) -> datetime:
    """An ISO-8601 date or time (``2025-07-04``, ``2025-07-04T00:13:36Z``); without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time such as 2025-07-04T00:00:00Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _Writer:
    """One output file: CSV (ISO text times) or Parquet (typed times); opened with the first page's schema."""

    def __init__(self, out: BinaryIO, fmt: str) -> None:
        self.out, self.fmt = out, fmt
        self._writer: pa_csv.CSVWriter | pq.ParquetWriter | None = None

    def _shape(self, table: pa.Table) -> pa.Table:
        if self.fmt == "csv":
            table = table.drop_columns(["ts"]).rename_columns(
                ["ts" if name == "ts_iso" else name for name in table.column_names if name != "ts"]
            )
        else:
            table = table.drop_columns(["ts_iso"])
        return table.select(list(queries.EXPORT_COLUMNS))

    def write(self, table: pa.Table) -> None:
        table = self._shape(table)
        if self._writer is None:
            if self.fmt == "csv":
                self._writer = pa_csv.CSVWriter(self.out, table.schema)
            else:
                self._writer = pq.ParquetWriter(self.out, table.schema)
        self._writer.write_table(table)

    def close(self, empty: pa.Table) -> None:
        if self._writer is None:  # nothing matched: still a valid file with the header / schema
            self.write(empty)
        assert self._writer is not None
        self._writer.close()


def export(device_ids: Sequence[str], start: datetime, end: datetime, fmt: str, out: BinaryIO,
           progress: bool = False, batch_rows: int | None = None, db_path: Path | str | None = None) -> int:
    """Write the raw readings of ``device_ids`` in [start, end) to ``out`` as ``fmt``; returns the row count.

    Rows are ordered by device, then time. ``progress`` shows a tqdm bar on stderr.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if end <= start:
        raise ValueError("the end of the range must be after its start")
    batch = batch_rows or get_settings().export_batch_rows
    devices = sorted(set(device_ids))
    total = queries.export_count(devices, start, end, db_path)
    writer = _Writer(out, fmt)
    written = 0
    empty: pa.Table | None = None
    with tqdm(total=total, unit="rows", unit_scale=True, disable=not progress, file=sys.stderr) as bar:
        for device_id in devices:
            after: datetime | None = None
            while True:
                sql, params = queries.export_page_sql(device_id, start, end, after, batch)
                with read_connection(db_path) as con:  # closed between pages: the writer gets its turn
                    table = con.sql(sql, params=params).to_arrow_table()
                if empty is None:
                    empty = table.slice(0, 0)
                if table.num_rows:
                    writer.write(table)
                    written += table.num_rows
                    bar.update(table.num_rows)
                    after = table.column("ts")[-1].as_py()
                if table.num_rows < batch:
                    break
    if empty is None:  # no devices at all: build the empty page from the query's own schema
        sql, params = queries.export_page_sql("none", start, end, None, 0)
        with read_connection(db_path) as con:
            empty = con.sql(sql, params=params).to_arrow_table()
    writer.close(empty)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``thermolog export``."""
    parser.add_argument("--device", action="append", default=[], metavar="ID",
                        help="device to export (repeat for several; default: every device)")
    parser.add_argument("--from", dest="start", type=parse_time, metavar="ISO",
                        help="start of the range, inclusive (default: 24 h before --to)")
    parser.add_argument("--to", dest="end", type=parse_time, metavar="ISO",
                        help="end of the range, exclusive (default: now)")
    parser.add_argument("--format", choices=(*FORMATS, "delta"),
                        help="output format (default: from the --out extension, else csv); delta: append what is "
                        "new since the last export to the Delta table at --out (a directory, abfss:// or s3://)")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="delta on cloud storage: a deltalake storage option, e.g. azure_storage_account_name=..."
                        " (repeat for several)")
    parser.add_argument("--out", default="-", metavar="FILE", help="output file; '-' writes CSV to stdout")
    parser.add_argument("--no-progress", action="store_true", help="never show the progress bar")


def _run_export(args: argparse.Namespace, start: datetime, end: datetime, fmt: str) -> tuple[int, list[str]]:
    devices = args.device or queries.devices()
    if not devices:
        print("thermolog export: no devices in the database yet", file=sys.stderr)
    # A bar only for exports large enough to take a while, and only for a person watching a terminal.
    show = not args.no_progress and sys.stderr.isatty() and \
        queries.export_count(devices, start, end) >= get_settings().export_batch_rows
    if args.out == "-":
        return export(devices, start, end, fmt, sys.stdout.buffer, progress=show), devices
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as out:
            rows = export(devices, start, end, fmt, out, progress=show)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)  # a failed export never leaves a truncated file under the requested name
    return rows, devices


def run(args: argparse.Namespace) -> int:
    """Export and report the row count on stderr."""
    end = args.end or datetime.now(UTC)
    start = args.start or end - timedelta(hours=24)
    fmt = args.format or ("parquet" if str(args.out).endswith(".parquet") else "csv")
    if fmt == "delta":
        return _run_delta(args)
    if end <= start:
        print("thermolog export: --to must be after --from", file=sys.stderr)
        return 2
    if args.out == "-" and fmt != "csv":
        print("thermolog export: Parquet needs a file: add --out FILE.parquet", file=sys.stderr)
        return 2
    try:
        rows, devices = _run_export(args, start, end, fmt)
    except DatabaseNotReady as exc:
        print(f"thermolog export: {exc}", file=sys.stderr)
        return 1
    where = "stdout" if args.out == "-" else args.out
    print(f"exported {rows} readings of {len(devices)} device(s) to {where} ({fmt})", file=sys.stderr)
    return 0


def _run_delta(args: argparse.Namespace) -> int:
    """``--format delta``: incremental append to a Delta table (thermolog/export_delta.py)."""
    from thermolog.export_delta import export_delta

    if args.out == "-":
        print("thermolog export: Delta needs a table location: add --out DIR (or abfss://...)", file=sys.stderr)
        return 2
    options = dict(item.split("=", 1) for item in args.storage_option if "=" in item)
    try:
        done = export_delta(args.out, options or None)
    except DatabaseNotReady as exc:
        print(f"thermolog export: {exc}", file=sys.stderr)
        return 1
    print(f"appended {done.rows} readings to the Delta table {args.out} (watermark {done.watermark})",
          file=sys.stderr)
    return 0
