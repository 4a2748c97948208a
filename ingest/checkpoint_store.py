"""Event Hubs partition ownership and checkpoints in the thermolog DuckDB file.

``DuckDBCheckpointStore`` implements azure-eventhub's ``CheckpointStore``, so ``EventHubConsumerClient`` balances
partitions between several ingest workers through it (ownership with optimistic concurrency on ``etag``, as the
Azure Blob store does) and starts each partition after its checkpoint.

Checkpoints are normally not written through ``update_checkpoint``: the Event Hubs source's flusher hook calls
``write_checkpoints`` inside the flush transaction that stores the rows (``ingest.sources.eventhub``), so a
checkpoint never runs ahead of the data nor behind it. Checkpoints only move forward (by sequence number), so a
worker replaying an older journal cannot move a partition back.

Each call opens the database, works in one transaction and closes it, like the flusher: readers keep getting
their turn. When another process holds the file the call retries for ``lock_timeout_s`` and then raises; the
consumer client retries at its next load-balancing round.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from azure.eventhub import CheckpointStore

from ingest.sinks.duckdb import DuckDBSink, is_locked
from thermolog.db_lock import retry_while_locked

log = logging.getLogger(__name__)

T = TypeVar("T")
KEY_COLUMNS = ("fully_qualified_namespace", "eventhub_name", "consumer_group", "partition_id")
CheckpointRow = tuple[str, str, str, str, str, int]
"""(namespace, event hub, consumer group, partition id, offset, sequence number)."""

_UPSERT_CHECKPOINT = """
    INSERT INTO eventhub_checkpoints
        (fully_qualified_namespace, eventhub_name, consumer_group, partition_id, "offset", sequence_number, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, now())
    ON CONFLICT (fully_qualified_namespace, eventhub_name, consumer_group, partition_id) DO UPDATE SET
        "offset" = excluded."offset", sequence_number = excluded.sequence_number, updated_at = excluded.updated_at
    WHERE excluded.sequence_number > eventhub_checkpoints.sequence_number
"""


def write_checkpoints(con: duckdb.DuckDBPyConnection, rows: Sequence[CheckpointRow]) -> None:
    """Move checkpoints forward in ``con``'s current transaction (a lower sequence number changes nothing)."""
    if rows:
        con.executemany(_UPSERT_CHECKPOINT, [list(row) for row in rows])


class DuckDBCheckpointStore(CheckpointStore):
    """Ownership and checkpoints in the tables ``eventhub_ownership`` and ``eventhub_checkpoints``."""

    def __init__(self, db_path: Path | str, lock_timeout_s: float = 10.0) -> None:
        self.sink = DuckDBSink(db_path)  # the one place that opens the file, creates the schema, detects locks
        self.lock_timeout_s = lock_timeout_s

    def _run(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``work`` in one transaction, retrying while another process holds the file."""

        def attempt() -> T:
            with self.sink.transaction() as con:
                return work(con)

        # Another process's flush or read: tens of milliseconds.
        return retry_while_locked(attempt, self.lock_timeout_s, locked=is_locked,
                                  delay_s=0.05, max_delay_s=0.5)

    # --- ownership ------------------------------------------------------------------------------------------

    def list_ownership(self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str,
                       **kwargs: Any) -> Iterable[dict[str, Any]]:
        """Every ownership record of this event hub and consumer group."""

        def work(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
            rows = con.execute(
                "SELECT partition_id, owner_id, etag, last_modified_time FROM eventhub_ownership "
                "WHERE fully_qualified_namespace = ? AND eventhub_name = ? AND consumer_group = ? "
                "ORDER BY partition_id",
                [fully_qualified_namespace, eventhub_name, consumer_group],
            ).fetchall()
            return [{"fully_qualified_namespace": fully_qualified_namespace, "eventhub_name": eventhub_name,
                     "consumer_group": consumer_group, "partition_id": pid, "owner_id": owner, "etag": etag,
                     "last_modified_time": modified} for pid, owner, etag, modified in rows]

        return self._run(work)

    def claim_ownership(self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any) -> Iterable[dict[str, Any]]:
        """Claim each partition whose stored ``etag`` still equals the one given (or that nobody claimed yet);
        returns the claims that succeeded, with their new ``etag`` and ``last_modified_time``."""
        wanted = [dict(o) for o in ownership_list]

        def work(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
            claimed = []
            for ownership in wanted:
                key = [ownership[c] for c in KEY_COLUMNS]
                new_etag, now = uuid.uuid4().hex, time.time()
                if ownership.get("etag") is None:
                    done = con.execute(
                        "INSERT INTO eventhub_ownership VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING "
                        "RETURNING partition_id", [*key, ownership["owner_id"], new_etag, now]).fetchall()
                else:
                    done = con.execute(
                        "UPDATE eventhub_ownership SET owner_id = ?, etag = ?, last_modified_time = ? "
                        "WHERE fully_qualified_namespace = ? AND eventhub_name = ? AND consumer_group = ? "
                        "AND partition_id = ? AND etag = ? RETURNING partition_id",
                        [ownership["owner_id"], new_etag, now, *key, ownership["etag"]]).fetchall()
                if done:
                    claimed.append({**ownership, "etag": new_etag, "last_modified_time": now})
            return claimed

        try:
            claimed = self._run(work)
        except duckdb.TransactionException as exc:
            # Another connection of this process changed the same rows first: claim nothing this round.
            log.info("ownership claim conflicted (%s); retrying at the next load-balancing round", exc)
            return []
        log.debug("claimed %d of %d partitions", len(claimed), len(wanted))
        return claimed

    # --- checkpoints ----------------------------------------------------------------------------------------

    def update_checkpoint(self, checkpoint: dict[str, Any], **kwargs: Any) -> None:
        """Store a checkpoint on its own (the ingest path writes them with the rows instead)."""
        row = (*(str(checkpoint[c]) for c in KEY_COLUMNS), str(checkpoint["offset"]),
               int(checkpoint["sequence_number"]))
        self._run(lambda con: write_checkpoints(con, [row]))  # type: ignore[arg-type]

    def list_checkpoints(self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str,
                         **kwargs: Any) -> Iterable[dict[str, Any]]:
        """The checkpoint of every partition of this event hub and consumer group that has one."""

        def work(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
            rows = con.execute(
                'SELECT partition_id, "offset", sequence_number FROM eventhub_checkpoints '
                "WHERE fully_qualified_namespace = ? AND eventhub_name = ? AND consumer_group = ? "
                "ORDER BY partition_id",
                [fully_qualified_namespace, eventhub_name, consumer_group],
            ).fetchall()
            return [{"fully_qualified_namespace": fully_qualified_namespace, "eventhub_name": eventhub_name,
                     "consumer_group": consumer_group, "partition_id": pid, "offset": offset,
                     "sequence_number": seq} for pid, offset, seq in rows]

        return self._run(work)
