"""The lake: a DuckLake (metadata in a catalog database, data as Parquet on disk, Azure Blob or S3) that any
number of ingest workers write at once and every reader reads, when ``THERMOLOG_LAKE_CATALOG`` is set.

Extensions come from the PyPI packages ``duckdb-extension-*`` (a third party's repackaging of DuckDB's official
binaries, so the machine needs no access to DuckDB's extension repository). They are loaded by file path and DuckDB
checks each file's official signature while loading: unsigned extensions stay disallowed, which is what makes
loading a repackaged binary safe. The packages match one DuckDB release, hence the exact DuckDB pin in
pyproject.toml.

DuckLake has no keys and treats a delete or update in a table as conflicting with any concurrent change of that
table, so every table the workers write is insert-only (``LAKE_DDL``): rollups are partial aggregates per flush
merged by the views ``telemetry_1m`` / ``telemetry_1h``; device state, commands and worker state are logs whose
views show the latest values. Readers query the same names as in the local file.
"""

from __future__ import annotations

import importlib.resources
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from thermolog.schema import ROLLUP_COLUMNS, SCHEMA_VERSION, TELEMETRY_1H, TELEMETRY_1M
from thermolog.settings import Settings, get_settings

log = logging.getLogger(__name__)

ALIAS = "lake"
ROLLUP_PARTS = {TELEMETRY_1M: f"{TELEMETRY_1M}_parts", TELEMETRY_1H: f"{TELEMETRY_1H}_parts"}
"""Each rollup view and the insert-only table of per-flush partial aggregates behind it."""
COUNTER_KEYS = ("messages_total", "rejected_total", "duplicates_total")
"""``ingest_state`` keys that are per-worker counters: the view sums them over workers."""

_EXTENSIONS = {
    "ducklake": "duckdb_extension_ducklake",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "azure": "duckdb_extension_azure",
    "httpfs": "duckdb_extension_httpfs",
}

_ROLLUP_VIEW = """
    SELECT device_id, bucket, sum(n)::BIGINT AS n,
        min(temp_min) AS temp_min, max(temp_max) AS temp_max, sum(temp_sum) AS temp_sum,
        sum(hum_n)::BIGINT AS hum_n, min(hum_min) AS hum_min, max(hum_max) AS hum_max, sum(hum_sum) AS hum_sum,
        min(target_min) AS target_min, max(target_max) AS target_max, sum(target_sum) AS target_sum,
        sum(heating_n)::BIGINT AS heating_n, min(first_ts) AS first_ts, max(last_ts) AS last_ts
    FROM {parts} GROUP BY device_id, bucket
"""

LAKE_DDL = f"""
CREATE TABLE IF NOT EXISTS telemetry (
    device_id VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, temperature DOUBLE NOT NULL, humidity DOUBLE,
    target_temp DOUBLE NOT NULL, heating BOOLEAN NOT NULL, received_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS {ROLLUP_PARTS[TELEMETRY_1M]} ({ROLLUP_COLUMNS});
CREATE TABLE IF NOT EXISTS {ROLLUP_PARTS[TELEMETRY_1H]} ({ROLLUP_COLUMNS});
CREATE TABLE IF NOT EXISTS system_metrics (
    host VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, cpu_usage DOUBLE, memory_usage DOUBLE, disk_usage DOUBLE,
    net_bytes_sent BIGINT, net_bytes_recv BIGINT, received_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS device_status (device_id VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, status VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS device_state_log (
    device_id VARCHAR NOT NULL, updated_at TIMESTAMPTZ NOT NULL, target_temp DOUBLE, mode VARCHAR,
    hysteresis DOUBLE, firmware VARCHAR, raw JSON
);
CREATE TABLE IF NOT EXISTS commands_log (
    request_id VARCHAR NOT NULL, device_id VARCHAR NOT NULL, kind VARCHAR NOT NULL, logged_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ, issued_by VARCHAR, target_temp DOUBLE, acked_at TIMESTAMPTZ, ok BOOLEAN, error VARCHAR,
    transport VARCHAR, mode VARCHAR
);
CREATE TABLE IF NOT EXISTS alert_events (
    event_id VARCHAR NOT NULL, device_id VARCHAR NOT NULL, rule VARCHAR NOT NULL, event VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL, message VARCHAR, delivered VARCHAR[], failed VARCHAR[], note VARCHAR, actor VARCHAR,
    until TIMESTAMPTZ, received_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS devices_log (
    device_id VARCHAR NOT NULL, kind VARCHAR NOT NULL, name VARCHAR, address VARCHAR NOT NULL, details JSON,
    seen_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    received_at TIMESTAMPTZ NOT NULL, topic VARCHAR NOT NULL, reason VARCHAR NOT NULL, payload BLOB,
    payload_size BIGINT NOT NULL, source VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS worker_state (
    worker VARCHAR NOT NULL, key VARCHAR NOT NULL, value VARCHAR NOT NULL, updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS eventhub_checkpoint_log (
    fully_qualified_namespace VARCHAR NOT NULL, eventhub_name VARCHAR NOT NULL, consumer_group VARCHAR NOT NULL,
    partition_id VARCHAR NOT NULL, "offset" VARCHAR NOT NULL, sequence_number BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE OR REPLACE VIEW eventhub_checkpoints AS
    SELECT fully_qualified_namespace, eventhub_name, consumer_group, partition_id,
        arg_max("offset", sequence_number) AS "offset", max(sequence_number) AS sequence_number,
        max(updated_at) AS updated_at
    FROM eventhub_checkpoint_log GROUP BY ALL;
CREATE OR REPLACE VIEW {TELEMETRY_1M} AS {_ROLLUP_VIEW.format(parts=ROLLUP_PARTS[TELEMETRY_1M])};
CREATE OR REPLACE VIEW {TELEMETRY_1H} AS {_ROLLUP_VIEW.format(parts=ROLLUP_PARTS[TELEMETRY_1H])};
CREATE OR REPLACE VIEW device_state AS
    SELECT device_id, updated_at, target_temp, mode, hysteresis, firmware, raw FROM device_state_log
    QUALIFY row_number() OVER (PARTITION BY device_id ORDER BY updated_at DESC) = 1;
CREATE OR REPLACE VIEW commands AS
    -- The first command and the first ack of each (device, request id) count, as in the local file.
    SELECT request_id, device_id,
        arg_min_null(sent_at, logged_at) FILTER (WHERE kind = 'cmd') AS sent_at,
        arg_min_null(issued_by, logged_at) FILTER (WHERE kind = 'cmd') AS issued_by,
        arg_min_null(target_temp, logged_at) FILTER (WHERE kind = 'cmd') AS target_temp,
        arg_min_null(acked_at, logged_at) FILTER (WHERE kind = 'ack') AS acked_at,
        arg_min_null(ok, logged_at) FILTER (WHERE kind = 'ack') AS ok,
        arg_min_null(error, logged_at) FILTER (WHERE kind = 'ack') AS error,
        arg_min_null(transport, logged_at) FILTER (WHERE kind = 'cmd') AS transport,
        arg_min_null(mode, logged_at) FILTER (WHERE kind = 'cmd') AS mode
    FROM commands_log GROUP BY device_id, request_id;
CREATE OR REPLACE VIEW devices AS
    -- The newest kind and address, the newest name and details given (the local file merges details' keys).
    SELECT device_id, arg_max(kind, seen_at) AS kind,
        arg_max(name, seen_at) FILTER (WHERE name IS NOT NULL) AS name, arg_max(address, seen_at) AS address,
        arg_max(details, seen_at) FILTER (WHERE details IS NOT NULL) AS details,
        min(seen_at) AS first_seen, max(seen_at) AS last_seen
    FROM devices_log GROUP BY device_id;
CREATE OR REPLACE VIEW ingest_state AS
    WITH latest AS (
        SELECT worker, key, arg_max(value, updated_at) AS value, max(updated_at) AS updated_at
        FROM worker_state GROUP BY worker, key
    )
    SELECT key,
        CASE WHEN key IN {COUNTER_KEYS} THEN sum(TRY_CAST(value AS BIGINT))::VARCHAR
             ELSE arg_max(value, updated_at) END AS value,
        max(updated_at) AS updated_at
    FROM latest GROUP BY key;
"""


class LakeNotConfigured(RuntimeError):
    """A lake operation was asked for without THERMOLOG_LAKE_CATALOG / THERMOLOG_LAKE_DATA_PATH."""


def is_configured(settings: Settings | None = None) -> bool:
    """Whether the lake replaces the local DuckDB file."""
    return bool((settings or get_settings()).lake_catalog)


def extension_path(name: str) -> Path:
    """The packaged ``.duckdb_extension`` file of ``name`` for the running DuckDB version."""
    package = _EXTENSIONS[name]
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        raise RuntimeError(f"the DuckDB extension package for {name!r} is missing: pip install "
                           f"{package.replace('_', '-')}=={duckdb.__version__}") from exc
    path = Path(str(root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"))
    if not path.is_file():
        found = sorted(p.parent.name for p in Path(str(root / "extensions")).glob(f"*/{name}.duckdb_extension"))
        raise RuntimeError(f"{package} has no build for DuckDB {duckdb.__version__} (it has {found}); install the "
                           f"version matching DuckDB")
    return path


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """LOAD the packaged extension; DuckDB verifies its signature (unsigned extensions stay disallowed)."""
    quoted = str(extension_path(name)).replace("'", "''")
    con.execute(f"LOAD '{quoted}'")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _storage_extension(data_path: str) -> str | None:
    scheme = data_path.split("://", 1)[0].lower() if "://" in data_path else ""
    return {"az": "azure", "azure": "azure", "abfss": "azure", "s3": "httpfs", "gcs": "httpfs",
            "r2": "httpfs", "https": "httpfs"}.get(scheme)


def create_secrets(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Storage credentials from the settings as temporary secrets (nothing is written to disk)."""
    if settings.lake_azure_connection_string:
        con.execute(f"CREATE OR REPLACE SECRET thermolog_azure (TYPE azure, "
                    f"CONNECTION_STRING {_quote(settings.lake_azure_connection_string)})")
    if settings.lake_s3_key_id:
        parts = [f"KEY_ID {_quote(settings.lake_s3_key_id)}", f"SECRET {_quote(settings.lake_s3_secret or '')}"]
        if settings.lake_s3_region:
            parts.append(f"REGION {_quote(settings.lake_s3_region)}")
        if settings.lake_s3_endpoint:
            endpoint = settings.lake_s3_endpoint
            plain = endpoint.startswith("http://")
            parts += [f"ENDPOINT {_quote(endpoint.split('://', 1)[-1])}", "URL_STYLE 'path'",
                      f"USE_SSL {'false' if plain else 'true'}"]
        con.execute(f"CREATE OR REPLACE SECRET thermolog_s3 (TYPE s3, {', '.join(parts)})")


def attach_target(settings: Settings) -> str:
    """The ``ducklake:...`` string of the catalog (with the PostgreSQL password when set)."""
    catalog = settings.lake_catalog
    if catalog.startswith("postgres:") and settings.lake_postgres_password:
        catalog += f" password={settings.lake_postgres_password}"
    return f"ducklake:{catalog}"


READER_CATALOG_SETTINGS = (
    # Each pooled catalog connection was checked with a `SELECT 1` round trip every time a query took it.
    "SET pg_pool_health_check_query = ''",
    # Each cached catalog table was checked for DDL changes before use. The catalog's tables change shape only
    # when DuckLake migrates them (a new ATTACH, which starts a new connection); tables new to the process are
    # looked up anyway.
    "SET pg_staleness_query_enabled = false",
)
"""Set before a reader's ATTACH: a chart query then asks the catalog only what DuckLake needs (snapshot, files,
column statistics), about half the round trips. A read that fails on a broken pooled connection drops the
process's connection (:func:`read_connection`), so the next read attaches afresh."""


def connect(settings: Settings | None = None, create: bool = False, reader: bool = False) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB connection with the lake attached as ``lake`` and in use.

    ``create``: create the lake's tables and views if missing (the ingest workers do; readers do not).
    ``reader``: the catalog connections skip per-query checks (:data:`READER_CATALOG_SETTINGS`).
    """
    settings = settings or get_settings()
    if not settings.lake_catalog or not settings.lake_data_path:
        raise LakeNotConfigured("set THERMOLOG_LAKE_CATALOG and THERMOLOG_LAKE_DATA_PATH to use the lake")
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        load_extension(con, "ducklake")
        if settings.lake_catalog.startswith("postgres:"):
            load_extension(con, "postgres_scanner")
            if reader:
                for statement in READER_CATALOG_SETTINGS:
                    con.execute(statement)
        storage = _storage_extension(settings.lake_data_path)
        if storage:
            load_extension(con, storage)
        create_secrets(con, settings)
        data_path = settings.lake_data_path
        if storage is None:
            Path(data_path).mkdir(parents=True, exist_ok=True)
            data_path = str(Path(data_path).resolve())
        _attach(con, f"ATTACH {_quote(attach_target(settings))} AS {ALIAS} (DATA_PATH {_quote(data_path)})")
        con.execute(f"USE {ALIAS}")
        if create:
            create_lake_schema(con)
    except Exception:
        con.close()
        raise
    return con


def _attach(con: duckdb.DuckDBPyConnection, statement: str, attempts: int = 5) -> None:
    """ATTACH, again after a failure: workers starting together race to initialise a new catalog, and the loser
    finds it initialised on the next attempt."""
    for attempt in range(attempts):
        try:
            con.execute(statement)
            return
        except duckdb.Error as exc:
            if attempt == attempts - 1 or "initialize" not in str(exc).lower():
                raise
            log.info("attaching the lake raced another worker (%s); trying again", str(exc).splitlines()[0])
            time.sleep(0.2 * (attempt + 1))


def create_lake_schema(con: duckdb.DuckDBPyConnection, attempts: int = 5) -> None:
    """Create the lake's tables and views (idempotent). Workers starting together may race to create them: the
    loser's transaction fails on the conflict and the next attempt finds them."""
    run_retrying(con, "creating the lake's tables", [
        (LAKE_DDL, []),
        ("INSERT INTO worker_state VALUES ('', 'schema_version', ?, now())", [str(SCHEMA_VERSION)]),
    ], attempts, backoff_s=0.2)


def run_retrying(con: duckdb.DuckDBPyConnection, what: str, statements: list[tuple[str, list]], attempts: int = 5,
                 backoff_s: float = 0.5) -> None:
    """Run ``statements`` in one transaction, again (after ``backoff_s`` times the attempt) when a concurrent
    worker's commit conflicts with it."""
    for attempt in range(attempts):
        try:
            con.execute("BEGIN")
            for sql, params in statements:
                if params:
                    con.execute(sql, params)
                else:
                    con.execute(sql)
            con.execute("COMMIT")
            return
        except duckdb.Error as exc:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # already aborted
            if attempt == attempts - 1:
                raise
            log.info("%s conflicted with a concurrent commit (%s); again", what, str(exc).splitlines()[0])
            time.sleep(backoff_s * (attempt + 1))


_shared: duckdb.DuckDBPyConnection | None = None
_shared_lock = threading.Lock()
CONNECTION_ERRORS = (duckdb.IOException, duckdb.ConnectionException, duckdb.FatalException)
"""Errors after which the process's lake connection is dropped: the catalog or its connection went away."""


@contextmanager
def read_connection() -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor on this process's lake connection (attached once, kept open: every query sees the newest
    snapshot, and readers never block writers). A connection error drops that connection, so the next read
    attaches anew instead of failing on a dead catalog connection for good."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = connect(reader=True)
        shared = _shared
        cursor = shared.cursor()
    try:
        cursor.execute(f"USE {ALIAS}")
        yield cursor
    except CONNECTION_ERRORS:
        _drop(shared)
        raise
    finally:
        cursor.close()


def _drop(connection: duckdb.DuckDBPyConnection) -> None:
    """Forget ``connection`` if it is still this process's lake connection (another read may have replaced it).
    Not closed here: reads in other threads may still use cursors of it; it closes when the last one is gone."""
    global _shared
    with _shared_lock:
        if _shared is connection:
            _shared = None
            log.warning("a lake read failed on its connection; the next read attaches the lake again")


def close_shared() -> None:
    """Drop this process's lake connection (tests, or after the settings changed)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
            _shared = None
