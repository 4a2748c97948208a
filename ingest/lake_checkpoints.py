"""Event Hubs with several lake workers: partition ownership in the catalog's PostgreSQL, checkpoints in the lake.

``LakeCheckpointStore`` is azure-eventhub's ``CheckpointStore`` for the lake: ``EventHubConsumerClient`` balances
partitions between the workers through ownership rows claimed with optimistic concurrency on ``etag`` (a plain
PostgreSQL table, like the Azure Blob store's blob metadata), and starts each partition after the checkpoint the
lake holds. Checkpoints are written only by :func:`lake_checkpoint_hook`, as rows of ``eventhub_checkpoint_log``
inside the flush transaction that stores the events' rows; the view ``eventhub_checkpoints`` takes each
partition's highest sequence number, so a checkpoint never moves back and never runs ahead of the data. When a
partition moves (its owner died), the new owner starts after the last committed checkpoint: what the old owner
journalled but never stored is received again, and the sink's (device_id, ts) de-duplication drops any repeat.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import duckdb
import psycopg
from azure.eventhub import CheckpointStore

from ingest.journal import Record
from ingest.sinks.duckdb import TransactionHook
from ingest.sources.eventhub import checkpoint_rows
from thermolog import lake
from thermolog.settings import Settings

KEY_COLUMNS = ("fully_qualified_namespace", "eventhub_name", "consumer_group", "partition_id")
SETUP = """
CREATE TABLE IF NOT EXISTS thermolog_eventhub_ownership (
    fully_qualified_namespace TEXT NOT NULL, eventhub_name TEXT NOT NULL, consumer_group TEXT NOT NULL,
    partition_id TEXT NOT NULL, owner_id TEXT NOT NULL, etag TEXT NOT NULL,
    last_modified_time DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (fully_qualified_namespace, eventhub_name, consumer_group, partition_id)
)
"""


def lake_checkpoint_hook(namespace: str, eventhub_name: str, consumer_group: str) -> TransactionHook:
    """A flusher hook appending each partition's newest stored position to the lake's checkpoint log."""
    return functools.partial(_log_checkpoints, namespace, eventhub_name, consumer_group)


def _log_checkpoints(namespace: str, eventhub_name: str, consumer_group: str, con: duckdb.DuckDBPyConnection,
                     records: Sequence[Record]) -> None:
    rows = checkpoint_rows(namespace, eventhub_name, consumer_group, records)
    if rows:
        con.executemany("INSERT INTO eventhub_checkpoint_log VALUES (?, ?, ?, ?, ?, ?, now())",
                        [list(row) for row in rows])


class LakeCheckpointStore(CheckpointStore):
    """Ownership in PostgreSQL (``conninfo``), checkpoints read from the lake."""

    def __init__(self, settings: Settings, conninfo: str) -> None:
        self.settings = settings
        self.conninfo = conninfo
        self._lake: duckdb.DuckDBPyConnection | None = None
        self._lake_lock = threading.Lock()
        with psycopg.connect(conninfo, autocommit=True) as con, con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(8616)")  # CREATE TABLE IF NOT EXISTS races otherwise
            con.execute(SETUP)

    def list_ownership(self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str,
                       **kwargs: Any) -> Iterable[dict[str, Any]]:
        """Every ownership record of this event hub and consumer group."""
        with psycopg.connect(self.conninfo, autocommit=True) as con:
            rows = con.execute(
                "SELECT partition_id, owner_id, etag, last_modified_time FROM thermolog_eventhub_ownership "
                "WHERE fully_qualified_namespace = %s AND eventhub_name = %s AND consumer_group = %s "
                "ORDER BY partition_id", [fully_qualified_namespace, eventhub_name, consumer_group]).fetchall()
        return [{"fully_qualified_namespace": fully_qualified_namespace, "eventhub_name": eventhub_name,
                 "consumer_group": consumer_group, "partition_id": pid, "owner_id": owner, "etag": etag,
                 "last_modified_time": modified} for pid, owner, etag, modified in rows]

    def claim_ownership(self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any) -> Iterable[dict[str, Any]]:
        """Claim each partition whose stored ``etag`` still equals the one given (or that nobody claimed yet)."""
        claimed = []
        with psycopg.connect(self.conninfo, autocommit=True) as con:
            for ownership in ownership_list:
                key = [ownership[c] for c in KEY_COLUMNS]
                new_etag, now = uuid.uuid4().hex, time.time()
                if ownership.get("etag") is None:
                    done = con.execute(
                        "INSERT INTO thermolog_eventhub_ownership VALUES (%s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT DO NOTHING RETURNING partition_id",
                        [*key, ownership["owner_id"], new_etag, now]).fetchall()
                else:
                    done = con.execute(
                        "UPDATE thermolog_eventhub_ownership SET owner_id = %s, etag = %s, last_modified_time = %s "
                        "WHERE fully_qualified_namespace = %s AND eventhub_name = %s AND consumer_group = %s "
                        "AND partition_id = %s AND etag = %s RETURNING partition_id",
                        [ownership["owner_id"], new_etag, now, *key, ownership["etag"]]).fetchall()
                if done:
                    claimed.append({**dict(ownership), "etag": new_etag, "last_modified_time": now})
        return claimed

    def update_checkpoint(self, checkpoint: dict[str, Any], **kwargs: Any) -> None:
        """Checkpoints move only with the rows (:func:`lake_checkpoint_hook`); a stand-alone one is refused."""
        raise NotImplementedError("lake checkpoints are written in the flush transaction, not on their own")

    def list_checkpoints(self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str,
                         **kwargs: Any) -> Iterable[dict[str, Any]]:
        """Each partition's newest committed checkpoint, from the lake."""
        with self._lake_lock:
            if self._lake is None:
                self._lake = lake.connect(self.settings, create=True)
            rows = self._lake.execute(
                'SELECT partition_id, "offset", sequence_number FROM eventhub_checkpoints '
                "WHERE fully_qualified_namespace = ? AND eventhub_name = ? AND consumer_group = ? "
                "ORDER BY partition_id", [fully_qualified_namespace, eventhub_name, consumer_group]).fetchall()
        return [{"fully_qualified_namespace": fully_qualified_namespace, "eventhub_name": eventhub_name,
                 "consumer_group": consumer_group, "partition_id": pid, "offset": offset, "sequence_number": seq}
                for pid, offset, seq in rows]

    def close(self) -> None:
        """Close the lake connection."""
        with self._lake_lock:
            if self._lake is not None:
                self._lake.close()
                self._lake = None
