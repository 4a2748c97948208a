"""DuckDBCheckpointStore: ownership claims with etags, checkpoints, and azure-eventhub's own load balancer on top."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from azure.eventhub import CheckpointStore, EventHubConsumerClient, LoadBalancingStrategy
from azure.eventhub._eventprocessor.ownership_manager import OwnershipManager

from ingest.checkpoint_store import DuckDBCheckpointStore
from ingest.sinks.duckdb import DatabaseLocked
from tests.eventhub_support import CONNECTION_STRING, EVENTHUB, NAMESPACE
from tests.waiting import wait_until

GROUP = "$Default"
PARTITIONS = ["0", "1", "2", "3"]


def ownership(partition: str, owner: str, etag: str | None = None) -> dict:
    """A claim as the consumer client builds it."""
    claim = {"fully_qualified_namespace": NAMESPACE, "eventhub_name": EVENTHUB, "consumer_group": GROUP,
             "partition_id": partition, "owner_id": owner}
    return claim | ({"etag": etag} if etag else {})


@pytest.fixture
def store(tmp_path: Path) -> DuckDBCheckpointStore:
    """A store on a fresh database file."""
    return DuckDBCheckpointStore(tmp_path / "thermolog.duckdb", lock_timeout_s=1.0)


def test_is_an_azure_eventhub_checkpoint_store(store: DuckDBCheckpointStore) -> None:
    """The consumer client accepts it as its checkpoint_store."""
    assert isinstance(store, CheckpointStore)
    client = EventHubConsumerClient.from_connection_string(CONNECTION_STRING, consumer_group=GROUP,
                                                           checkpoint_store=store)
    client.close()


def test_first_claim_wins_and_later_claims_need_the_current_etag(store: DuckDBCheckpointStore) -> None:
    """Optimistic concurrency: a claim with a stale (or no) etag fails; the current etag succeeds."""
    (won,) = store.claim_ownership([ownership("0", "worker-a")])
    assert won["owner_id"] == "worker-a" and won["etag"] and won["last_modified_time"] <= time.time()
    assert list(store.claim_ownership([ownership("0", "worker-b")])) == []           # already owned
    assert list(store.claim_ownership([ownership("0", "worker-b", "stale")])) == []  # wrong etag
    (taken,) = store.claim_ownership([ownership("0", "worker-b", won["etag"])])
    assert taken["owner_id"] == "worker-b" and taken["etag"] != won["etag"]
    assert list(store.claim_ownership([ownership("0", "worker-a", won["etag"])])) == []  # a's etag is old now
    (listed,) = store.list_ownership(NAMESPACE, EVENTHUB, GROUP)
    assert (listed["owner_id"], listed["etag"]) == ("worker-b", taken["etag"])
    assert list(store.list_ownership(NAMESPACE, EVENTHUB, "other-group")) == []


def test_checkpoints_move_forward_only(store: DuckDBCheckpointStore) -> None:
    """update_checkpoint keeps the highest sequence number per partition and consumer group."""
    base = {"fully_qualified_namespace": NAMESPACE, "eventhub_name": EVENTHUB, "consumer_group": GROUP}
    store.update_checkpoint(base | {"partition_id": "0", "offset": "100", "sequence_number": 10})
    store.update_checkpoint(base | {"partition_id": "0", "offset": "50", "sequence_number": 5})
    store.update_checkpoint(base | {"partition_id": "1", "offset": "7", "sequence_number": 1})
    store.update_checkpoint(base | {"consumer_group": "audit", "partition_id": "0", "offset": "9",
                                    "sequence_number": 2})
    assert list(store.list_checkpoints(NAMESPACE, EVENTHUB, GROUP)) == [
        base | {"partition_id": "0", "offset": "100", "sequence_number": 10},
        base | {"partition_id": "1", "offset": "7", "sequence_number": 1},
    ]


def manager(owner: str, store: DuckDBCheckpointStore, timeout: float) -> OwnershipManager:
    """azure-eventhub's own load balancer for one worker, told the partition ids instead of asking the hub."""
    client = EventHubConsumerClient.from_connection_string(CONNECTION_STRING, consumer_group=GROUP)
    balancer = OwnershipManager(client, GROUP, owner, store, timeout, LoadBalancingStrategy.BALANCED, None)
    balancer.cached_parition_ids = list(PARTITIONS)
    return balancer


@pytest.mark.slow
def test_workers_share_partitions_and_take_over_an_expired_owner(tmp_path: Path) -> None:
    """Two workers balanced by the library end with two partitions each; when one stops renewing, the other
    takes all four once the ownership times out."""
    store = DuckDBCheckpointStore(tmp_path / "thermolog.duckdb")
    # Each store call opens the file and commits (~0.1-0.5 s on a busy machine): the timeout must exceed a round.
    timeout = 5.0
    a, b = manager("worker-a", store, timeout), manager("worker-b", store, timeout)
    owned: dict[str, list[str]] = {"a": [], "b": []}
    for _ in range(12):  # the balanced strategy claims one partition per round
        owned["a"], owned["b"] = a.claim_ownership(), b.claim_ownership()
        if len(owned["a"]) == len(owned["b"]) == 2:
            break
    assert sorted(owned["a"] + owned["b"]) == PARTITIONS
    assert len(owned["a"]) == len(owned["b"]) == 2

    # worker-a has stopped; worker-b keeps balancing. The library's rounds are timed: nothing to wait on but the clock.
    owned["b"] = wait_until(lambda: (o := b.claim_ownership()) and sorted(o) == PARTITIONS and o, 30,
                            "worker-b to own every partition", interval=0.5)
    assert {o["owner_id"] for o in store.list_ownership(NAMESPACE, EVENTHUB, GROUP)} == {"worker-b"}


def test_release_hands_a_partition_back(store: DuckDBCheckpointStore) -> None:
    """On close the client releases its partitions (empty owner), and another worker can claim them at once."""
    a = manager("worker-a", store, 60)
    for _ in range(4):
        a.claim_ownership()
    a.release_ownership("2")
    released = {o["partition_id"]: o["owner_id"] for o in store.list_ownership(NAMESPACE, EVENTHUB, GROUP)}
    assert released["2"] == ""
    b = manager("worker-b", store, 60)
    assert "2" in b.claim_ownership()


def test_a_locked_database_is_retried_then_reported(tmp_path: Path) -> None:
    """While another process holds the file the store retries; past its timeout it raises DatabaseLocked."""
    db = tmp_path / "thermolog.duckdb"
    store = DuckDBCheckpointStore(db, lock_timeout_s=0.5)
    store.list_ownership(NAMESPACE, EVENTHUB, GROUP)  # creates the file and schema
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(db)!r}); "
                               "print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DatabaseLocked):
            store.claim_ownership([ownership("0", "worker-a")])
    finally:
        holder.stdin.close()
        holder.wait(10)
    (claimed,) = store.claim_ownership([ownership("0", "worker-a")])
    assert claimed["owner_id"] == "worker-a"
