"""Lake sink: the DuckDB sink's flush transaction, written into the shared DuckLake (``thermolog.lake``).

Each flush commits its rows together with this worker's journal position (keyed by the worker's id) in one
DuckLake transaction, so a crash replays exactly what that worker had not committed, whatever the other workers
do meanwhile. Every write is an insert (DuckLake has no keys, and a delete or update would conflict with the other
workers' inserts): rollups get this flush's partial aggregates, device state and commands get log rows, and the
worker's state gets new rows; the lake's views merge them (``thermolog.lake.LAKE_DDL``). Concurrent inserts never
conflict: DuckLake retries the commit against the newer snapshot by itself.
"""

from __future__ import annotations

import logging
import socket
import threading
from datetime import datetime

import duckdb

from ingest.journal import START, Position
from ingest.parse import Batch
from ingest.sinks.duckdb import (
    _ACK_SCHEMA,
    _COMMAND_SCHEMA,
    _STATE_SCHEMA,
    JOURNAL_POSITION_KEY,
    ROLLUP_AGGREGATES,
    DuckDBSink,
    alert_table,
    arrow_table,
    device_table,
    store_new_telemetry,
)
from thermolog import lake
from thermolog.schema import ROLLUP_UNITS
from thermolog.settings import Settings

log = logging.getLogger(__name__)


def _add_rollup_parts(con: duckdb.DuckDBPyConnection, _lo: datetime, _hi: datetime) -> None:
    """This flush's partial aggregates per (device, bucket); the lake's rollup views merge them."""
    for table, unit in ROLLUP_UNITS:
        con.execute(f"INSERT INTO {lake.ROLLUP_PARTS[table]} "
                    f"SELECT device_id, date_trunc('{unit}', ts) AS bucket, {ROLLUP_AGGREGATES} "
                    "FROM new_telemetry GROUP BY device_id, bucket")


def worker_id(settings: Settings) -> str:
    """This worker's name in the lake: THERMOLOG_LAKE_WORKER_ID, else host name and journal directory (a worker
    is its journal: the position stored under this name points into that directory)."""
    return settings.lake_worker_id or f"{socket.gethostname()}:{settings.journal_dir.resolve()}"


class LakeSink(DuckDBSink):
    """Writes batches into the lake; one lake connection per sink, kept open (attaching costs ~0.3 s)."""

    def __init__(self, settings: Settings, worker: str | None = None) -> None:
        super().__init__(settings.db_path)
        self.settings = settings
        self.worker = worker or worker_id(settings)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_lock = threading.Lock()

    def connect(self) -> duckdb.DuckDBPyConnection:
        with self._con_lock:
            if self._con is None:
                self._con = lake.connect(self.settings, create=True)
            cursor = self._con.cursor()
        cursor.execute(f"USE {lake.ALIAS}")
        cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    def close(self) -> None:
        """Close the lake connection (the next write opens a new one)."""
        with self._con_lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def read_state(self) -> dict[str, str]:
        """This worker's latest ``ingest_state`` values."""
        con = self.connect()
        try:
            return dict(con.execute(
                "SELECT key, arg_max(value, updated_at) FROM worker_state WHERE worker = ? GROUP BY key",
                [self.worker]).fetchall())
        finally:
            con.close()

    def delete_raw_before(self, cutoff: datetime, max_rows: int) -> int:
        """Nothing: in the lake `thermolog lake maintain` applies the raw retention, since a worker's delete
        would conflict with the other workers' inserts into the same table."""
        return 0

    def _position_in(self, con: duckdb.DuckDBPyConnection) -> Position:
        rows = con.execute(
            "SELECT arg_max(value, updated_at) FROM worker_state WHERE worker = ? AND key = ?",
            [self.worker, JOURNAL_POSITION_KEY]).fetchall()
        return Position.decode(rows[0][0]) if rows and rows[0][0] else START

    @staticmethod
    def _telemetry(con: duckdb.DuckDBPyConnection, batch: Batch) -> tuple[int, int, list[int]]:
        return store_new_telemetry(con, batch, _add_rollup_parts)

    @staticmethod
    def _state(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        if not batch.state:
            return
        con.register("batch_state", arrow_table(batch.state, _STATE_SCHEMA, ("device_id",), keep="last"))
        con.execute("INSERT INTO device_state_log SELECT device_id, updated_at, target_temp, mode, hysteresis, "
                    "firmware, raw::JSON FROM batch_state")
        con.unregister("batch_state")

    @staticmethod
    def _commands(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        if batch.commands:
            con.register("batch_cmd", arrow_table(batch.commands, _COMMAND_SCHEMA))
            con.execute("INSERT INTO commands_log (request_id, device_id, kind, logged_at, sent_at, issued_by, "
                        "target_temp, transport, mode) SELECT request_id, device_id, 'cmd', now(), sent_at, "
                        "issued_by, target_temp, 'mqtt', mode FROM batch_cmd")
            con.unregister("batch_cmd")
        if batch.acks:
            con.register("batch_ack", arrow_table(batch.acks, _ACK_SCHEMA))
            con.execute("INSERT INTO commands_log (request_id, device_id, kind, logged_at, acked_at, ok, error) "
                        "SELECT request_id, device_id, 'ack', now() + to_microseconds(row_number() OVER ()), "
                        "acked_at, ok, error FROM batch_ack")
            con.unregister("batch_ack")

    @staticmethod
    def _alerts(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        if not batch.alerts:
            return
        con.register("batch_alert", alert_table(batch))
        # A redelivered event keeps its first row (no key in the lake: the insert skips stored ids).
        con.execute("INSERT INTO alert_events SELECT event_id, device_id, rule, event, ts, message, delivered, failed, "
                    "note, actor, until, received_at FROM batch_alert b "
                    "WHERE NOT EXISTS (SELECT 1 FROM alert_events a WHERE a.event_id = b.event_id)")
        con.unregister("batch_alert")

    @staticmethod
    def _devices(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        if not batch.devices:
            return
        con.register("batch_devices", device_table(batch))
        con.execute("INSERT INTO devices_log SELECT device_id, kind, name, address, details::JSON, seen_at "
                    "FROM batch_devices")
        con.unregister("batch_devices")

    def _set_state(self, con: duckdb.DuckDBPyConnection, values: dict[str, str],  # type: ignore[override]
                   increments: dict[str, int]) -> None:
        previous = dict(con.execute(
            "SELECT key, arg_max(value, updated_at) FROM worker_state WHERE worker = ? AND key IN (SELECT unnest(?)) "
            "GROUP BY key", [self.worker, list(increments)]).fetchall())
        rows = dict(values)
        for key, step in increments.items():
            rows[key] = str(int(previous.get(key) or 0) + step)
        con.register("batch_worker_state", arrow_table({"key": list(rows), "value": list(rows.values())},
                                                 {"key": "Utf8", "value": "Utf8"}))
        con.execute("INSERT INTO worker_state SELECT ?, key, value, now() FROM batch_worker_state", [self.worker])
        con.unregister("batch_worker_state")
