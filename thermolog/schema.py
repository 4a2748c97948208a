"""DuckDB storage schema. Only the ingest worker writes; everything else reads through ``thermolog.reader``.

Times are UTC ``TIMESTAMPTZ``. ``telemetry`` keeps one row per (device_id, ts): the writer drops repeats.
``telemetry_1m`` and ``telemetry_1h`` are rollups the writer keeps in the same transaction as the raw rows, so
long-range charts read a few thousand rows instead of millions; they keep sums and counts so buckets merge.
The writer keeps one rollup row per (device_id, bucket) without a key index: the ART index such a key needs
took 40% of the file and half of what every reader pays to attach and detach it (schema version 2 drops it).
"""

from __future__ import annotations

import logging

import duckdb

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3

TELEMETRY_1M = "telemetry_1m"
TELEMETRY_1H = "telemetry_1h"

TABLES = (
    "telemetry",
    TELEMETRY_1M,
    TELEMETRY_1H,
    "system_metrics",
    "device_status",
    "device_state",
    "commands",
    "schedules",
    "alert_events",
    "rejected",
    "ingest_state",
    "devices",
    "eventhub_ownership",
    "eventhub_checkpoints",
)

ROLLUP_COLUMNS = """
    device_id VARCHAR NOT NULL,
    bucket TIMESTAMPTZ NOT NULL,
    n BIGINT NOT NULL,
    temp_min DOUBLE, temp_max DOUBLE, temp_sum DOUBLE,
    hum_n BIGINT NOT NULL, hum_min DOUBLE, hum_max DOUBLE, hum_sum DOUBLE,
    target_min DOUBLE, target_max DOUBLE, target_sum DOUBLE,
    heating_n BIGINT NOT NULL,
    first_ts TIMESTAMPTZ, last_ts TIMESTAMPTZ
"""
COMMANDS_COLUMNS = """
    request_id VARCHAR NOT NULL,
    device_id VARCHAR NOT NULL,
    sent_at TIMESTAMPTZ,
    issued_by VARCHAR,
    target_temp DOUBLE,
    acked_at TIMESTAMPTZ,
    ok BOOLEAN,
    error VARCHAR,
    transport VARCHAR,
    mode VARCHAR,
    PRIMARY KEY (device_id, request_id)
"""
"""The command audit: one row per (device, request id), so no device's ack or reused id touches another's."""
ROLLUP_UNITS = ((TELEMETRY_1M, "minute"), (TELEMETRY_1H, "hour"))
"""Each rollup table and the ``date_trunc`` unit of its buckets."""
ROLLUP_TABLES = tuple(table for table, _unit in ROLLUP_UNITS)

DDL = f"""
CREATE TABLE IF NOT EXISTS telemetry (
    device_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    temperature DOUBLE NOT NULL,
    humidity DOUBLE,
    target_temp DOUBLE NOT NULL,
    heating BOOLEAN NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS {TELEMETRY_1M} ({ROLLUP_COLUMNS});
CREATE TABLE IF NOT EXISTS {TELEMETRY_1H} ({ROLLUP_COLUMNS});
CREATE TABLE IF NOT EXISTS system_metrics (
    host VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    cpu_usage DOUBLE, memory_usage DOUBLE, disk_usage DOUBLE,
    net_bytes_sent BIGINT, net_bytes_recv BIGINT,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS device_status (
    device_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    status VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS device_state (
    device_id VARCHAR PRIMARY KEY,
    updated_at TIMESTAMPTZ NOT NULL,
    target_temp DOUBLE,
    mode VARCHAR,
    hysteresis DOUBLE,
    firmware VARCHAR,
    raw JSON
);
CREATE TABLE IF NOT EXISTS commands ({COMMANDS_COLUMNS});
-- Alert history: started/cleared (thermolog automation, with where the notice went), acknowledged/silenced (app).
CREATE TABLE IF NOT EXISTS alert_events (
    event_id VARCHAR PRIMARY KEY,
    device_id VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    event VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    message VARCHAR,
    delivered VARCHAR[],
    failed VARCHAR[],
    note VARCHAR,
    actor VARCHAR,
    until TIMESTAMPTZ,
    received_at TIMESTAMPTZ NOT NULL
);
-- Devices of a profile other than the native contract (thermolog.profiles): their kind, display name and the
-- address their own topics use; a device missing here is native.
CREATE TABLE IF NOT EXISTS devices (
    device_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    name VARCHAR,
    address VARCHAR NOT NULL,
    details JSON,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    received_at TIMESTAMPTZ NOT NULL,
    topic VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    payload BLOB,
    payload_size BIGINT NOT NULL,
    source VARCHAR NOT NULL DEFAULT 'mqtt'
);
CREATE TABLE IF NOT EXISTS ingest_state (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Event Hubs (IoT Hub built-in endpoint) partition ownership and checkpoints: ingest/checkpoint_store.py.
-- Checkpoints are written in the same transaction as the rows they cover.
CREATE TABLE IF NOT EXISTS eventhub_ownership (
    fully_qualified_namespace VARCHAR NOT NULL,
    eventhub_name VARCHAR NOT NULL,
    consumer_group VARCHAR NOT NULL,
    partition_id VARCHAR NOT NULL,
    owner_id VARCHAR NOT NULL,
    etag VARCHAR NOT NULL,
    last_modified_time DOUBLE NOT NULL,
    PRIMARY KEY (fully_qualified_namespace, eventhub_name, consumer_group, partition_id)
);
CREATE TABLE IF NOT EXISTS eventhub_checkpoints (
    fully_qualified_namespace VARCHAR NOT NULL,
    eventhub_name VARCHAR NOT NULL,
    consumer_group VARCHAR NOT NULL,
    partition_id VARCHAR NOT NULL,
    "offset" VARCHAR NOT NULL,
    sequence_number BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (fully_qualified_namespace, eventhub_name, consumer_group, partition_id)
);
"""


SCHEDULES_DDL = """
CREATE TABLE IF NOT EXISTS schedules (
    device_id VARCHAR NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    request_id VARCHAR NOT NULL,
    issued_by VARCHAR,
    program VARCHAR NOT NULL
);
"""
"""Weekly programs as set (``thermolog.schedule`` format, JSON), one row per change: the audit and the store."""


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table that does not exist yet (idempotent), bring older files up to date and record the
    schema version."""
    con.execute(DDL)
    con.execute(SCHEDULES_DDL)
    _drop_rollup_keys(con)
    _key_commands_by_device(con)
    con.execute(
        "INSERT INTO ingest_state (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()",
        [str(SCHEMA_VERSION)],
    )


def _drop_rollup_keys(con: duckdb.DuckDBPyConnection) -> None:
    """Version 1 files have a primary key on the rollups: rebuild those tables without it (once), in time order."""
    keyed = [row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
        "AND database_name = current_database() AND table_name IN (SELECT unnest(?))",
        [list(ROLLUP_TABLES)],
    ).fetchall()]
    for table in keyed:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"CREATE TABLE {table}__v2 ({ROLLUP_COLUMNS})")
            con.execute(f"INSERT INTO {table}__v2 SELECT * FROM {table} ORDER BY bucket, device_id")
            con.execute(f"DROP TABLE {table}")
            con.execute(f"ALTER TABLE {table}__v2 RENAME TO {table}")
            con.execute("COMMIT")
            log.info("rebuilt %s without its primary key index (schema version %s)", table, SCHEMA_VERSION)
        except Exception:
            con.execute("ROLLBACK")
            raise


def _key_commands_by_device(con: duckdb.DuckDBPyConnection) -> None:
    """Version 2 files key ``commands`` by request id alone: rebuild it keyed by (device_id, request_id), with the
    ``mode`` column, keeping every row (once)."""
    columns = [row[0] for row in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND table_name = 'commands'").fetchall()]
    if "mode" in columns:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE TABLE commands__v3 ({COMMANDS_COLUMNS})")
        con.execute("INSERT INTO commands__v3 (request_id, device_id, sent_at, issued_by, target_temp, acked_at, ok, "
                    "error, transport) SELECT request_id, device_id, sent_at, issued_by, target_temp, acked_at, ok, "
                    "error, transport FROM commands")
        con.execute("DROP TABLE commands")
        con.execute("ALTER TABLE commands__v3 RENAME TO commands")
        con.execute("COMMIT")
        log.info("rebuilt commands keyed by (device_id, request_id) (schema version %s)", SCHEMA_VERSION)
    except Exception:
        con.execute("ROLLBACK")
        raise
