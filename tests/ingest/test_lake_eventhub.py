"""Event Hubs into the lake with partitions moving between workers: ownership in the catalog's PostgreSQL,
checkpoints committed with the rows; a worker that dies for good loses nothing and nothing is stored twice.

The consumer client's callbacks are driven directly with events built as IoT Hub delivers them (no Event Hubs
service runs here); ownership claims go through the real ``LakeCheckpointStore`` as the client's load balancer
would make them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.eventhub import PartitionContext

from ingest.lake_worker import LakeIngestWorker
from tests.eventhub_support import CONNECTION_STRING, EVENTHUB, NAMESPACE, iothub_event, reading
from tests.lake_support import fresh_database
from thermolog import lake
from thermolog.settings import Settings

pytestmark = pytest.mark.slow  # seconds per test: outside the fast loop (docs/testing.md)

GROUP = "$Default"


@pytest.fixture
def catalog() -> Iterator[str]:
    with fresh_database() as conninfo:
        yield conninfo


def _settings(catalog: str, tmp_path: Path, name: str) -> Settings:
    return Settings(lake_catalog=f"postgres:{catalog}", lake_data_path=str(tmp_path / "lake-data"),
                    lake_worker_id=name, journal_dir=tmp_path / f"journal-{name}",
                    eventhub_connection_string=CONNECTION_STRING, iothub_allowed_edge_devices="*")


def _receive(worker: LakeIngestWorker, partition: str, device: str, seqs: range) -> None:
    assert worker.eventhub is not None
    context = PartitionContext(NAMESPACE, EVENTHUB, GROUP, partition, worker.eventhub.checkpoint_store)
    for seq in seqs:
        worker.eventhub.on_event(context, iothub_event(reading(device, seq), seq, device))


def _claim(worker: LakeIngestWorker, partitions: list[str], etags: dict[str, str | None]) -> list[str]:
    store = worker.eventhub.checkpoint_store
    wanted = [{"fully_qualified_namespace": NAMESPACE, "eventhub_name": EVENTHUB, "consumer_group": GROUP,
               "partition_id": p, "owner_id": worker.worker, "etag": etags.get(p)} for p in partitions]
    return sorted(o["partition_id"] for o in store.claim_ownership(wanted))


def test_partitions_move_to_a_live_worker_after_one_dies_for_good(catalog: str, tmp_path: Path) -> None:
    a = LakeIngestWorker(_settings(catalog, tmp_path, "a"), mqtt=False)
    b = LakeIngestWorker(_settings(catalog, tmp_path, "b"), mqtt=False)
    a.open()
    b.open()
    try:
        assert _claim(a, ["0", "1"], {}) == ["0", "1"]
        assert _claim(b, ["0"], {}) == []  # owned: a claim without the current etag fails
        _receive(a, "0", "dev-a", range(1, 26))
        _receive(a, "1", "dev-b", range(1, 11))
        a.flusher.flush(force=True)  # rows and checkpoints in one lake transaction
        a.flusher.stop(final_flush=False)  # a's flushing stops: what follows is journalled, never stored
        _receive(a, "0", "dev-a", range(26, 41))
        _receive(a, "1", "dev-b", range(11, 21))
        a.journal.close()  # a dies for good

        checkpoints = {c["partition_id"]: c["sequence_number"]
                       for c in b.eventhub.checkpoint_store.list_checkpoints(NAMESPACE, EVENTHUB, GROUP)}
        assert checkpoints == {"0": 25, "1": 10}
        owned = {o["partition_id"]: o["etag"]
                 for o in b.eventhub.checkpoint_store.list_ownership(NAMESPACE, EVENTHUB, GROUP)}
        assert _claim(b, ["0", "1"], owned) == ["0", "1"]  # a's ownership expired: b takes both over
        assert _claim(a, ["0"], owned) == []  # a stale claim with the old etag fails
        # b resumes after each checkpoint; the hub may deliver a few events before it again (at least once).
        _receive(b, "0", "dev-a", range(23, 41))
        _receive(b, "1", "dev-b", range(11, 21))
        b.flusher.flush(force=True)
    finally:
        b.stop()
    con = lake.connect(_settings(catalog, tmp_path, "reader"))
    try:
        rows = dict(con.execute("SELECT device_id, count(*) FROM telemetry GROUP BY ALL").fetchall())
        assert rows == {"dev-a": 40, "dev-b": 20}
        assert con.execute("SELECT count(DISTINCT (device_id, ts)) FROM telemetry").fetchone()[0] == 60
        assert dict(con.execute("SELECT partition_id, sequence_number FROM eventhub_checkpoints").fetchall()) == {
            "0": 40, "1": 20}
    finally:
        con.close()
