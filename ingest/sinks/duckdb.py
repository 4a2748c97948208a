"""DuckDB sink: one transaction per flush moves a parsed batch and the journal position into the database.

The file is opened for each flush and closed right after (tens of milliseconds), so readers can open it
read-only in between. Every insert is a bulk insert of an Arrow stream (``ingest.sinks.columns``); nothing is
inserted row by row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from ingest.journal import START, Position, Record
from ingest.parse import Batch, from_epoch_us, reject

# Re-exported: defined without DuckDB so the receiving process can use them (ingest.sinks.base).
from ingest.sinks.base import JOURNAL_POSITION_KEY as JOURNAL_POSITION_KEY
from ingest.sinks.base import DatabaseLocked as DatabaseLocked
from ingest.sinks.base import is_locked as is_locked
from ingest.sinks.columns import ArrowTable, Columns, columns_of, first_rows
from thermolog.contract import format_timestamp
from thermolog.db_lock import is_lock_conflict, retry_while_locked
from thermolog.schema import ROLLUP_UNITS, create_schema

log = logging.getLogger(__name__)

RETENTION_DELETED_KEY = "retention_deleted_total"
RETENTION_CUTOFF_KEY = "retention_cutoff"
COUNTER_KEYS = ("messages_total", "rejected_total", "duplicates_total", RETENTION_DELETED_KEY, "ignored_total")

TransactionHook = Callable[[duckdb.DuckDBPyConnection, Sequence[Record]], None]
"""Called inside the flush transaction with the records being stored, e.g. to write an Event Hubs checkpoint."""

# Column kinds (ingest.sinks.columns): "Time" columns hold epoch microseconds and arrive as TIMESTAMPTZ.
_TELEMETRY_SCHEMA = {"device_id": "Utf8", "ts": "Time", "temperature": "Float64", "humidity": "Float64",
                     "target_temp": "Float64", "heating": "Boolean", "received_at": "Time"}
_SYSTEM_SCHEMA = {"host": "Utf8", "ts": "Time", "cpu_usage": "Float64", "memory_usage": "Float64",
                  "disk_usage": "Float64", "net_bytes_sent": "Int64", "net_bytes_recv": "Int64",
                  "received_at": "Time"}
_STATUS_SCHEMA = {"device_id": "Utf8", "ts": "Time", "status": "Utf8"}
_REJECTED_SCHEMA = {"received_at": "Time", "topic": "Utf8", "reason": "Utf8", "payload": "Binary",
                    "payload_size": "Int64", "source": "Utf8"}
_STATE_SCHEMA = {"device_id": "Utf8", "updated_at": "Time", "target_temp": "Float64", "mode": "Utf8",
                 "hysteresis": "Float64", "firmware": "Utf8", "raw": "Utf8"}
_COMMAND_SCHEMA = {"request_id": "Utf8", "device_id": "Utf8", "sent_at": "Time", "issued_by": "Utf8",
                   "target_temp": "Float64", "mode": "Utf8"}
_SCHEDULE_SCHEMA = {"device_id": "Utf8", "changed_at": "Time", "request_id": "Utf8", "issued_by": "Utf8",
                    "program": "Utf8"}
_DEVICE_SCHEMA = {"device_id": "Utf8", "kind": "Utf8", "name": "Utf8", "address": "Utf8", "details": "Utf8",
                  "seen_at": "Time"}
_ACK_SCHEMA = {"request_id": "Utf8", "device_id": "Utf8", "acked_at": "Time", "ok": "Boolean",
               "error": "Utf8"}

_ALERT_SCHEMA = {"event_id": "Utf8", "device_id": "Utf8", "rule": "Utf8", "event": "Utf8", "ts": "Time",
                 "message": "Utf8", "delivered": "List:Utf8", "failed": "List:Utf8", "note": "Utf8",
                 "actor": "Utf8", "until": "Time", "received_at": "Time"}

ROLLUP_AGGREGATES = """
    count(*) AS n,
    min(temperature) AS temp_min, max(temperature) AS temp_max, sum(temperature) AS temp_sum,
    count(humidity) AS hum_n, min(humidity) AS hum_min, max(humidity) AS hum_max, sum(humidity) AS hum_sum,
    min(target_temp) AS target_min, max(target_temp) AS target_max, sum(target_temp) AS target_sum,
    count(*) FILTER (WHERE heating) AS heating_n,
    min(ts) AS first_ts, max(ts) AS last_ts
"""


_ROLLUP_MERGE = {
    "n": "{t}.n + r.n",
    "temp_min": "least({t}.temp_min, r.temp_min)",
    "temp_max": "greatest({t}.temp_max, r.temp_max)",
    "temp_sum": "coalesce({t}.temp_sum + r.temp_sum, {t}.temp_sum, r.temp_sum)",
    "hum_n": "{t}.hum_n + r.hum_n",
    "hum_min": "least({t}.hum_min, r.hum_min)",
    "hum_max": "greatest({t}.hum_max, r.hum_max)",
    "hum_sum": "coalesce({t}.hum_sum + r.hum_sum, {t}.hum_sum, r.hum_sum)",
    "target_min": "least({t}.target_min, r.target_min)",
    "target_max": "greatest({t}.target_max, r.target_max)",
    "target_sum": "coalesce({t}.target_sum + r.target_sum, {t}.target_sum, r.target_sum)",
    "heating_n": "{t}.heating_n + r.heating_n",
    "first_ts": "least({t}.first_ts, r.first_ts)",
    "last_ts": "greatest({t}.last_ts, r.last_ts)",
}


def _rollup_statements(table: str, unit: str) -> tuple[str, str, str]:
    """SQL that folds ``new_telemetry`` into a rollup: the batch's buckets, update stored ones, insert the rest.

    The rollups have no key index (an ART over millions of (device, bucket) pairs took 40% of the file and half
    of every reader's attach); the writer keeps (device_id, bucket) unique itself, and the bucket range (bound as
    two parameters) lets zone maps skip every row group outside the batch's span.
    """
    t = table
    sets = ",\n            ".join(f"{column} = {expr.format(t=t)}" for column, expr in _ROLLUP_MERGE.items())
    match = f"{t}.bucket BETWEEN ? AND ? AND {t}.device_id = r.device_id AND {t}.bucket = r.bucket"
    return (
        f"""CREATE OR REPLACE TEMP TABLE new_rollup AS
            SELECT device_id, date_trunc('{unit}', ts) AS bucket, {ROLLUP_AGGREGATES}
            FROM new_telemetry GROUP BY device_id, bucket""",
        f"UPDATE {t} SET\n            {sets}\n        FROM new_rollup r WHERE {match}",
        f"INSERT INTO {t} SELECT r.* FROM new_rollup r WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE {match})",
    )


def _floor(value: datetime, unit: str) -> datetime:
    """``value`` truncated to its minute or hour (the rollup bucket it falls in)."""
    return value.replace(second=0, microsecond=0) if unit == "minute" else value.replace(
        minute=0, second=0, microsecond=0)


_CONFIG = {"threads": 1}
"""Each open: a flush is a few small statements, and one thread leaves the other cores to receiving and readers
(set when opening, a ``SET threads`` afterwards would start and stop the default pool's threads every flush)."""

_OPEN_ERRORS = (duckdb.Error,)  # the lock error's class differs between DuckDB releases; is_lock_conflict tells


def _open_conflict(exc: BaseException) -> bool:
    return isinstance(exc, _OPEN_ERRORS) and is_lock_conflict(exc)


_CONFLICTS = """
    WITH reference AS (
        SELECT device_id, ts, temperature, humidity, target_temp, heating FROM stored_keys
        UNION ALL
        SELECT device_id, ts, temperature, humidity, target_temp, heating FROM batch_first b
        WHERE NOT EXISTS (SELECT 1 FROM stored_keys s WHERE s.device_id = b.device_id AND s.ts = b.ts)
    )
    SELECT b."row" FROM batch_telemetry b JOIN reference r ON b.device_id = r.device_id AND b.ts = r.ts
    WHERE b.temperature IS DISTINCT FROM r.temperature OR b.humidity IS DISTINCT FROM r.humidity
       OR b.target_temp IS DISTINCT FROM r.target_temp OR b.heating IS DISTINCT FROM r.heating
    ORDER BY b."row"
"""
"""Rows of the batch whose (device_id, ts) was stored, or came earlier in the batch, with other values: the
stored reading (else the batch's first) is the reference."""


def store_new_telemetry(con: duckdb.DuckDBPyConnection, batch: Batch,
                        rollups: Callable[[duckdb.DuckDBPyConnection, datetime, datetime], None],
                        ) -> tuple[int, int, list[int]]:
    """Insert the batch's new readings, then ``rollups(con, lo, hi)`` folds table ``new_telemetry`` into the
    rollups; returns (inserted, repeats, rows that conflict).

    A repeat has the (device_id, ts) of a stored or earlier reading and the same values: dropped and counted.
    A conflict has other values: its row numbers are returned so the caller records it in ``rejected``.
    """
    height = len(batch.telemetry["device_id"])
    if not height:
        return 0, 0, []
    schema = {**_TELEMETRY_SCHEMA, "row": "Int64"}
    cols = {**batch.telemetry, "row": list(range(height))}
    unique = first_rows(cols, ("device_id", "ts"))
    lo, hi = from_epoch_us(min(unique["ts"])), from_epoch_us(max(unique["ts"]))
    every = ArrowTable(cols, schema)
    if unique is cols and _nothing_stored_from(con, lo):
        # The usual batch (readings arrive in time order): no key repeats in it and every stored reading is older,
        # so each is new; the checks below cost about as much as storing it.
        con.register("new_telemetry", every)
        inserted = _insert_new(con)
        rollups(con, lo, hi)
        con.unregister("new_telemetry")
        return inserted, 0, []
    con.register("batch_telemetry", every)
    con.register("batch_first", every if unique is cols else ArrowTable(unique, schema))
    # No primary key on the big table (it would cost on every insert); the ts range bounds the joins so
    # DuckDB's zone maps skip every row group outside the batch's time span.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE stored_keys AS
        SELECT t.device_id, t.ts, t.temperature, t.humidity, t.target_temp, t.heating FROM telemetry t
        WHERE t.ts BETWEEN ? AND ? AND EXISTS (
            SELECT 1 FROM batch_first b WHERE t.device_id = b.device_id AND t.ts = b.ts)
        """,
        [lo, hi],
    )
    conflicts = [row[0] for row in con.execute(_CONFLICTS).fetchall()]
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE new_telemetry AS
        SELECT b.* EXCLUDE ("row") FROM batch_first b
        WHERE NOT EXISTS (SELECT 1 FROM stored_keys s WHERE s.device_id = b.device_id AND s.ts = b.ts)
        """
    )
    con.unregister("batch_telemetry")
    con.unregister("batch_first")
    con.execute("DROP TABLE stored_keys")
    inserted = _insert_new(con)
    if inserted:
        rollups(con, lo, hi)
    con.execute("DROP TABLE new_telemetry")
    return inserted, height - inserted - len(conflicts), conflicts


def _nothing_stored_from(con: duckdb.DuckDBPyConnection, lo: datetime) -> bool:
    """Whether no stored reading is stamped at or after ``lo`` (zone maps skip all but the newest row groups)."""
    return con.execute("SELECT NOT EXISTS (SELECT 1 FROM telemetry WHERE ts >= ?)", [lo]).fetchall()[0][0]


def _insert_new(con: duckdb.DuckDBPyConnection) -> int:
    """Append ``new_telemetry`` to the readings; returns how many."""
    return con.execute("INSERT INTO telemetry SELECT device_id, ts, temperature, humidity, target_temp, heating, "
                       "received_at FROM new_telemetry").fetchall()[0][0]


def _merge_rollups(con: duckdb.DuckDBPyConnection, lo: datetime, hi: datetime) -> None:
    """Fold ``new_telemetry`` (readings between ``lo`` and ``hi``) into the rollups: update, then insert."""
    for table, unit in ROLLUP_UNITS:
        build, update, insert = _rollup_statements(table, unit)
        span = [_floor(lo, unit), hi]
        con.execute(build)
        con.execute(update, span)  # update first: the insert then skips every bucket already stored
        con.execute(insert, span)
    con.execute("DROP TABLE new_rollup")


def arrow_table(rows: Sequence[dict[str, object]] | Columns, schema: dict[str, str], unique: Sequence[str] = (),
                keep: str = "first") -> ArrowTable:
    """Row dicts (or columns) as a table of ``schema``'s columns; with ``unique``, one row per distinct value of
    those columns (``keep``: the first or the last of each)."""
    columns = rows if isinstance(rows, dict) else columns_of(rows, schema)
    return ArrowTable(first_rows(columns, unique, keep) if unique else columns, schema)


def alert_table(batch: Batch) -> ArrowTable:
    """The batch's alert events, the first of each event id (a redelivered event keeps its first row)."""
    return arrow_table(batch.alerts, _ALERT_SCHEMA, ("event_id",))


def device_table(batch: Batch) -> ArrowTable:
    """The batch's devices of a profile (kind, name, address, details, when seen)."""
    return arrow_table(list(batch.devices.values()), _DEVICE_SCHEMA)


class PositionMoved(RuntimeError):
    """The committed journal position is not the one this flusher expected (another writer committed)."""

    def __init__(self, expected: Position, actual: Position) -> None:
        super().__init__(f"journal position in the database is {actual.encode()}, expected {expected.encode()}")
        self.expected, self.actual = expected, actual


@dataclass(frozen=True)
class FlushResult:
    """What one flush stored."""

    records: int
    telemetry: int
    duplicates: int
    rejected: int
    seconds: float


class DuckDBSink:
    """Writes batches into the DuckDB file at ``db_path`` (created with the schema on first open)."""

    def __init__(self, db_path: Path | str, lock_retry_s: float = 0.5) -> None:
        """``lock_retry_s``: how long one open keeps retrying while readers hold the file (they hold it briefly)."""
        self.db_path = Path(db_path)
        self.lock_retry_s = lock_retry_s
        self._schema_ready = False

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-write connection with the schema in place; raises DatabaseLocked when another process keeps the
        file past ``lock_retry_s``. The caller closes it soon: nobody else can open the file meanwhile."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Readers hold the file for one query: back off gently and try again.
            con = retry_while_locked(lambda: duckdb.connect(str(self.db_path), config=_CONFIG), self.lock_retry_s,
                                     locked=_open_conflict, max_delay_s=0.05)
        except _OPEN_ERRORS as exc:
            if not is_lock_conflict(exc):
                raise
            raise DatabaseLocked(f"{self.db_path} is held by another process: {exc}") from exc
        try:
            con.execute("SET TimeZone = 'UTC'")  # date_trunc buckets and timestamps in UTC
            if not self._schema_ready:
                create_schema(con)  # once per sink: the DDL costs tens of ms per flush otherwise
                self._schema_ready = True
        except Exception:
            con.close()
            raise
        return con

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One read-write transaction for the ``with`` block: committed when it ends, rolled back on an exception,
        the file released either way. Raises DatabaseLocked like :meth:`connect`."""
        con = self.connect()
        try:
            con.begin()
            yield con
            con.commit()
        except BaseException:
            try:
                con.rollback()
            except duckdb.Error:
                pass  # the transaction may already be aborted
            raise
        finally:
            con.close()

    def read_state(self) -> dict[str, str]:
        """All ``ingest_state`` values (creates the database on first use)."""
        con = self.connect()
        try:
            return dict(con.execute("SELECT key, value FROM ingest_state").fetchall())
        finally:
            con.close()

    def read_state_when_free(self, timeout: float, pause: Callable[[float], bool]) -> dict[str, str]:
        """``read_state``, retried every half second while readers hold the file, for up to ``timeout`` seconds;
        ``pause(seconds)`` waits between tries and returns True to give up early. Raises DatabaseLocked."""
        def wait(seconds: float) -> bool:
            log.warning("waiting for a reader to release %s", self.db_path)
            return pause(seconds)

        return retry_while_locked(self.read_state, timeout, locked=is_locked, delay_s=0.5, max_delay_s=0.5,
                                  wait=wait)

    def device_ids(self) -> list[str]:
        """Ids in the ``devices`` table: thermostats of a device profile seen before (creates the database)."""
        con = self.connect()
        try:
            return [row[0] for row in con.execute("SELECT device_id FROM devices").fetchall()]
        finally:
            con.close()

    def committed_position(self) -> Position:
        """The journal position of the last committed flush (START when none)."""
        value = self.read_state().get(JOURNAL_POSITION_KEY)
        return Position.decode(value) if value else START

    def delete_raw_before(self, cutoff: datetime, max_rows: int) -> int:
        """Delete at most ``max_rows`` raw readings stamped before ``cutoff`` (rollups stay) in one short transaction,
        and count them in ``ingest_state``; returns how many were deleted. Raises DatabaseLocked like a flush."""
        with self.transaction() as con:
            deleted = con.execute(
                "DELETE FROM telemetry WHERE rowid IN (SELECT rowid FROM telemetry WHERE ts < ? LIMIT ?)",
                [cutoff, max_rows],
            ).fetchall()[0][0]
            self._set_state(con, {RETENTION_CUTOFF_KEY: cutoff.isoformat()}, {RETENTION_DELETED_KEY: deleted})
        return deleted

    def write(self, batch: Batch, records: Sequence[Record], state: dict[str, str] | None = None,
              hooks: Sequence[TransactionHook] = (), expected: Position | None = None) -> FlushResult:
        """Store ``batch`` (parsed from ``records``), the position after the last record and ``state`` in one
        transaction. Raises DatabaseLocked when another process holds the file, PositionMoved when ``expected``
        is not the committed position (nothing is written then)."""
        started = time.perf_counter()
        with self.transaction() as con:
            if expected is not None:
                actual = self._position_in(con)
                if actual != expected:
                    raise PositionMoved(expected, actual)
            inserted, duplicates, conflicts = self._telemetry(con, batch)
            self._reject_conflicts(batch, records, conflicts)
            self._system(con, batch)
            self._status(con, batch)
            self._state(con, batch)
            self._commands(con, batch)
            self._schedules(con, batch)
            self._alerts(con, batch)
            self._devices(con, batch)
            rejected = self._rejected(con, batch)
            for hook in hooks:
                hook(con, records)
            values = dict(state or {})
            if records:
                values[JOURNAL_POSITION_KEY] = records[-1].end.encode()
            self._set_state(con, values, {"messages_total": batch.records, "rejected_total": rejected,
                                          "duplicates_total": duplicates, "ignored_total": batch.ignored})
        return FlushResult(len(records), inserted, duplicates, rejected, time.perf_counter() - started)

    def _position_in(self, con: duckdb.DuckDBPyConnection) -> Position:
        """The committed journal position, read inside the flush transaction."""
        rows = con.execute("SELECT value FROM ingest_state WHERE key = ?", [JOURNAL_POSITION_KEY]).fetchall()
        return Position.decode(rows[0][0]) if rows else START

    @staticmethod
    def _telemetry(con: duckdb.DuckDBPyConnection, batch: Batch) -> tuple[int, int, list[int]]:
        """Insert the batch's new readings (``store_new_telemetry``); returns (inserted, repeats, conflicts)."""
        return store_new_telemetry(con, batch, _merge_rollups)

    @staticmethod
    def _reject_conflicts(batch: Batch, records: Sequence[Record], rows: list[int]) -> None:
        """Record each conflicting reading in ``rejected`` with its own payload."""
        for row in rows:
            index = batch.telemetry_records[row] if row < len(batch.telemetry_records) else None
            if index is None or index >= len(records):
                log.warning("a conflicting duplicate reading without its record was dropped")
                continue
            device_id, ts = batch.telemetry["device_id"][row], batch.telemetry["ts"][row]
            when = format_timestamp(from_epoch_us(ts))
            reject(batch, records[index], f"conflicting duplicate: a reading of {device_id} at {when} with other "
                   "values was stored first", batch.rejected_max_bytes)

    @staticmethod
    def _system(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        cols = batch.system
        if not cols["host"]:
            return
        unique = first_rows(cols, ("host", "ts"))
        con.register("batch_system", ArrowTable(unique, _SYSTEM_SCHEMA))
        con.execute(
            """
            INSERT INTO system_metrics
            SELECT host, ts, cpu_usage, memory_usage, disk_usage, net_bytes_sent, net_bytes_recv, received_at
            FROM batch_system b
            WHERE NOT EXISTS (
                SELECT 1 FROM system_metrics s
                WHERE s.ts BETWEEN ? AND ? AND s.host = b.host AND s.ts = b.ts
            )
            """,
            [from_epoch_us(min(unique["ts"])), from_epoch_us(max(unique["ts"]))],
        )
        con.unregister("batch_system")

    @staticmethod
    def _status(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        if not batch.status:
            return
        devices = sorted({device for device, _ts, _status in batch.status})
        last = dict(con.execute(
            "SELECT device_id, arg_max(status, ts) FROM device_status WHERE device_id IN (SELECT unnest(?)) "
            "GROUP BY device_id",
            [devices],
        ).fetchall())
        rows = []
        # Keep transitions only: a retained status is delivered again on every resubscription.
        for device, received_us, status in batch.status:
            if last.get(device) != status:
                rows.append({"device_id": device, "ts": received_us, "status": status})
                last[device] = status
        if rows:
            con.register("batch_status", arrow_table(rows, _STATUS_SCHEMA))
            con.execute("INSERT INTO device_status SELECT device_id, ts, status FROM batch_status")
            con.unregister("batch_status")

    @staticmethod
    def _state(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        if not batch.state:
            return
        con.register("batch_state", arrow_table(batch.state, _STATE_SCHEMA, ("device_id",), keep="last"))
        con.execute(
            """
            INSERT INTO device_state
            SELECT device_id, updated_at, target_temp, mode, hysteresis, firmware, raw::JSON FROM batch_state
            ON CONFLICT (device_id) DO UPDATE SET
                updated_at = excluded.updated_at, target_temp = excluded.target_temp, mode = excluded.mode,
                hysteresis = excluded.hysteresis, firmware = excluded.firmware, raw = excluded.raw
            WHERE excluded.updated_at >= device_state.updated_at
            """
        )
        con.unregister("batch_state")

    @staticmethod
    def _commands(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        if batch.commands:
            con.register("batch_cmd", arrow_table(batch.commands, _COMMAND_SCHEMA, ("device_id", "request_id")))
            # Insert only: a later command reusing a (device, request id) changes nothing. A row made by an ack
            # that arrived before its command (no sent_at yet) gets the command's fields once.
            con.execute(
                """
                INSERT INTO commands (request_id, device_id, sent_at, issued_by, target_temp, mode, transport)
                SELECT request_id, device_id, sent_at, issued_by, target_temp, mode, 'mqtt' FROM batch_cmd
                ON CONFLICT (device_id, request_id) DO UPDATE SET
                    sent_at = excluded.sent_at, issued_by = excluded.issued_by, target_temp = excluded.target_temp,
                    mode = excluded.mode, transport = excluded.transport
                WHERE commands.sent_at IS NULL
                """
            )
            con.unregister("batch_cmd")
        if batch.acks:
            con.register("batch_ack", arrow_table(batch.acks, _ACK_SCHEMA, ("device_id", "request_id")))
            # An ack settles only its own device's command, and only while it is pending: the first answer stands.
            con.execute(
                """
                INSERT INTO commands (request_id, device_id, acked_at, ok, error)
                SELECT request_id, device_id, acked_at, ok, error FROM batch_ack
                ON CONFLICT (device_id, request_id) DO UPDATE SET
                    acked_at = excluded.acked_at, ok = excluded.ok, error = excluded.error
                WHERE commands.acked_at IS NULL
                """
            )
            con.unregister("batch_ack")

    @staticmethod
    def _alerts(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        if not batch.alerts:
            return
        con.register("batch_alert", alert_table(batch))
        # A redelivered event (QoS 1, journal replay) keeps its first row.
        con.execute("INSERT INTO alert_events SELECT event_id, device_id, rule, event, ts, message, delivered, failed, "
                    "note, actor, until, received_at FROM batch_alert ON CONFLICT (event_id) DO NOTHING")
        con.unregister("batch_alert")

    @staticmethod
    def _devices(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        if not batch.devices:
            return
        con.register("batch_devices", device_table(batch))
        con.execute(
            """
            INSERT INTO devices
            SELECT device_id, kind, name, address, details::JSON, seen_at, seen_at FROM batch_devices
            ON CONFLICT (device_id) DO UPDATE SET
                kind = excluded.kind, name = coalesce(excluded.name, devices.name), address = excluded.address,
                details = CASE WHEN devices.details IS NULL THEN excluded.details
                               WHEN excluded.details IS NULL THEN devices.details
                               ELSE json_merge_patch(devices.details, excluded.details) END,
                last_seen = greatest(devices.last_seen, excluded.last_seen)
            """
        )
        con.unregister("batch_devices")

    @staticmethod
    def _schedules(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        # Insert-only audit: a replayed change (same device and request id) is stored once.
        if not batch.schedules:
            return
        con.register("batch_schedule", arrow_table(batch.schedules, _SCHEDULE_SCHEMA, ("device_id", "request_id")))
        con.execute(
            """
            INSERT INTO schedules (device_id, changed_at, request_id, issued_by, program)
            SELECT b.device_id, b.changed_at, b.request_id, b.issued_by, b.program FROM batch_schedule b
            WHERE NOT EXISTS (SELECT 1 FROM schedules s WHERE s.device_id = b.device_id
                              AND s.request_id = b.request_id)
            """
        )
        con.unregister("batch_schedule")

    @staticmethod
    def _rejected(con: duckdb.DuckDBPyConnection, batch: Batch) -> int:
        cols = batch.rejected
        if not cols["topic"]:
            return 0
        con.register("batch_rejected", arrow_table(cols, _REJECTED_SCHEMA))
        con.execute("INSERT INTO rejected SELECT received_at, topic, reason, payload, payload_size, source "
                    "FROM batch_rejected")
        con.unregister("batch_rejected")
        return len(cols["topic"])

    @staticmethod
    def _set_state(con: duckdb.DuckDBPyConnection, values: dict[str, str], increments: dict[str, int]) -> None:
        # One statement each: executemany runs the upsert once per key, several milliseconds per flush.
        if values:
            con.execute(
                f"INSERT INTO ingest_state (key, value, updated_at) VALUES {_rows_of_two(len(values))} "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                [item for pair in values.items() for item in pair],
            )
        if increments:
            con.execute(
                f"INSERT INTO ingest_state (key, value, updated_at) VALUES {_rows_of_two(len(increments))} "
                "ON CONFLICT (key) DO UPDATE SET "
                "value = CAST(CAST(ingest_state.value AS BIGINT) + CAST(excluded.value AS BIGINT) AS VARCHAR), "
                "updated_at = excluded.updated_at",
                [item for key, step in increments.items() for item in (key, str(step))],
            )


def _rows_of_two(count: int) -> str:
    """``count`` VALUES rows of two parameters and the time now."""
    return ", ".join(["(?, ?, now())"] * count)
