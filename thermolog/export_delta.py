"""``thermolog export --format delta``: the readings as a Delta table (the official ``deltalake`` package), for
Power BI and Microsoft Fabric (docs/powerbi.md).

Incremental: each export appends only what was stored since the previous one. The watermark travels in the Delta
commit's own metadata (``thermolog.watermark``), so the table alone says how far it got and an export that fails
leaves neither rows nor watermark behind. With the lake the watermark is its snapshot id and new rows come from
DuckLake's change feed (``ducklake_table_insertions``), which is exact however the workers' commits interleave;
with the local file (one writer, stored in arrival order) it is the newest ``received_at``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from thermolog import lake
from thermolog.reader import read_connection
from thermolog.settings import get_settings

WATERMARK_KEY = "thermolog.watermark"
COLUMNS = "device_id, ts, temperature, humidity, target_temp, heating, received_at, CAST(ts AS DATE) AS day"
SCHEMA = pa.schema([("device_id", pa.string()), ("ts", pa.timestamp("us", "UTC")), ("temperature", pa.float64()),
                    ("humidity", pa.float64()), ("target_temp", pa.float64()), ("heating", pa.bool_()),
                    ("received_at", pa.timestamp("us", "UTC")), ("day", pa.date32())])


@dataclass(frozen=True)
class DeltaExport:
    """What one export appended and the watermark it recorded."""

    rows: int
    watermark: str
    previous: str | None


def last_watermark(out: str, storage_options: dict[str, str] | None = None) -> str | None:
    """The watermark of the newest export into the Delta table at ``out`` (None: no table yet)."""
    try:
        table = DeltaTable(out, storage_options=storage_options)
    except TableNotFoundError:
        return None
    for commit in table.history():  # newest first
        if WATERMARK_KEY in commit:
            return str(commit[WATERMARK_KEY])
    return None


def _new_rows_sql(previous: str | None) -> tuple[str, str, list]:
    """(watermark now, SQL of the rows after ``previous`` up to it, parameters)."""
    settings = get_settings()
    with read_connection() as con:
        if lake.is_configured(settings):
            current = con.execute(f"SELECT id FROM ducklake_current_snapshot('{lake.ALIAS}')").fetchone()[0]
            if previous is None:
                return str(current), f"SELECT {COLUMNS} FROM telemetry AT (VERSION => {int(current)})", []
            if int(previous) >= int(current):
                return previous, f"SELECT {COLUMNS} FROM telemetry WHERE false", []
            return str(current), (f"SELECT {COLUMNS} FROM ducklake_table_insertions('{lake.ALIAS}', 'main', "
                                  f"'telemetry', {int(previous) + 1}, {int(current)})"), []
        newest = con.execute("SELECT epoch_us(max(received_at)) FROM telemetry").fetchone()[0]
    current = str(newest if newest is not None else previous or 0)
    return current, (f"SELECT {COLUMNS} FROM telemetry WHERE epoch_us(received_at) > ? "
                     f"AND epoch_us(received_at) <= ?"), [int(previous or -1), int(current)]


def export_delta(out: str, storage_options: dict[str, str] | None = None,
                 batch_rows: int | None = None) -> DeltaExport:
    """Append the readings stored since the last export to the Delta table at ``out`` (created on first use,
    partitioned by ``day``)."""
    previous = last_watermark(out, storage_options)
    current, sql, params = _new_rows_sql(previous)
    batch = batch_rows or get_settings().export_batch_rows
    counted = [0]
    with read_connection() as con:
        result = con.execute(f"{sql} ORDER BY ts, device_id", params)
        batches: Iterator[pa.RecordBatch] = iter(result.to_arrow_reader(batch))

        def counting() -> Iterator[pa.RecordBatch]:
            for record_batch in batches:
                counted[0] += record_batch.num_rows
                yield record_batch.cast(SCHEMA)

        write_deltalake(out, pa.RecordBatchReader.from_batches(SCHEMA, counting()), mode="append",
                        partition_by=["day"], storage_options=storage_options,
                        commit_properties=CommitProperties(custom_metadata={WATERMARK_KEY: current}))
    return DeltaExport(counted[0], current, previous)
