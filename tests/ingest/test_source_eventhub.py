"""Event Hubs source: IoT Hub events go through the real journal, validation and flush into DuckDB, with the
partition checkpoint in the same transaction; a restart neither loses nor repeats."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import orjson
import pytest
from azure.eventhub import PartitionContext

from ingest.checkpoint_store import DuckDBCheckpointStore
from ingest.journal import START
from ingest.sources.eventhub import SOURCE, EventHubSource, allowed_edge_devices, event_topic, worker_options
from ingest.worker import IngestWorker
from tests.conftest import SEED_SYSTEM, SEED_TELEMETRY
from tests.eventhub_support import EDGE_DEVICE, EVENTHUB, NAMESPACE, eventhub_settings_env, iothub_event, reading
from thermolog import settings as settings_module
from thermolog.settings import Settings

GROUP = "$Default"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings with the Event Hubs source configured, database and journal in tmp_path."""
    monkeypatch.chdir(tmp_path)
    for key, value in eventhub_settings_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    settings_module.get_settings.cache_clear()
    yield Settings()
    settings_module.get_settings.cache_clear()


def open_worker(settings: Settings) -> tuple[IngestWorker, EventHubSource]:
    """A worker wired exactly as ``worker_options`` wires it (no MQTT); opened, sources not started."""
    worker = IngestWorker(settings, mqtt=False, **worker_options(settings))
    worker.open()
    (source,) = worker.sources
    assert isinstance(source, EventHubSource)
    return worker, source


def context(source: EventHubSource, partition: str) -> PartitionContext:
    """The library's own partition context, bound to the DuckDB checkpoint store."""
    return PartitionContext(NAMESPACE, EVENTHUB, GROUP, partition, source.checkpoint_store)


def query(settings: Settings, sql: str) -> list[tuple]:
    """Read the database the worker wrote (after it stopped)."""
    with duckdb.connect(str(settings.db_path), read_only=True) as con:
        return con.execute(sql).fetchall()


def checkpoints(settings: Settings) -> dict[str, tuple[str, int]]:
    """Partition -> (offset, sequence number) as the consumer client will read them."""
    store = DuckDBCheckpointStore(settings.db_path)
    return {c["partition_id"]: (c["offset"], c["sequence_number"])
            for c in store.list_checkpoints(NAMESPACE, EVENTHUB, GROUP)}


def test_event_topic_uses_iothub_annotations_and_module_properties() -> None:
    """Direct devices are named by the connection; edge modules name their thermostat and host in properties."""
    assert event_topic(iothub_event(SEED_TELEMETRY, 1, "esp32c3-01"), "thermostats") == \
        "thermostats/esp32c3-01/telemetry"
    via_edge = iothub_event(SEED_TELEMETRY, 2, "edge-gw-1", module="cloud_publisher",
                            properties={"device_id": "esp32c3-01", "message_kind": "telemetry"})
    assert event_topic(via_edge, "thermostats") == "thermostats/esp32c3-01/telemetry"
    system = iothub_event(SEED_SYSTEM, 3, "edge-gw-1", module="cloud_publisher",
                          properties={"host": "edge-gw-1", "message_kind": "system"})
    assert event_topic(system, "thermostats") == "edge/edge-gw-1/system"
    # a plain device cannot speak for another one through a property
    spoof = iothub_event(SEED_TELEMETRY, 4, "esp32c3-02", properties={"device_id": "esp32c3-01"})
    assert event_topic(spoof, "thermostats") == "thermostats/esp32c3-02/telemetry"


def test_events_reach_duckdb_through_journal_and_flush_with_checkpoints(settings: Settings) -> None:
    """Readings, a host sample and a bad payload are stored like MQTT messages; checkpoints cover them."""
    worker, source = open_worker(settings)
    try:
        p0, p1 = context(source, "0"), context(source, "1")
        source.on_event(p0, iothub_event(SEED_TELEMETRY, 10, "esp32c3-01"))
        source.on_event(p0, iothub_event(reading("esp32c3-01", 5), 11, "esp32c3-01"))
        source.on_event(p1, iothub_event(reading("th-7", 6), 40, "edge-gw-1", module="cloud_publisher",
                                         properties={"device_id": "th-7", "message_kind": "telemetry"}))
        source.on_event(p1, iothub_event(SEED_SYSTEM, 41, "edge-gw-1", module="cloud_publisher",
                                         properties={"host": "edge-gw-1", "message_kind": "system"}))
        source.on_event(p1, iothub_event(b'{"temperature": "hot"}', 42, "esp32c3-09"))
        source.on_event(p0, None)  # the client's idle tick carries no event
        records = worker.journal.read(START)
        assert [r.source for r in records] == [SOURCE] * 5
        assert records[0].topic == f"{settings.topic_prefix}/esp32c3-01/telemetry"
        assert records[0].meta == {"partition_id": "0", "offset": "6160", "sequence_number": 10}
        worker.flusher.flush(force=True)
    finally:
        worker.stop()
    assert query(settings, "SELECT device_id, temperature FROM telemetry ORDER BY device_id, ts") == [
        ("esp32c3-01", 25.8), ("esp32c3-01", 21.0), ("th-7", 21.0)]
    assert query(settings, "SELECT host, memory_usage FROM system_metrics") == [("edge-gw-1", 6.6)]
    assert query(settings, "SELECT topic, source FROM rejected") == [
        (f"{settings.topic_prefix}/esp32c3-09/telemetry", "eventhub")]
    assert checkpoints(settings) == {"0": ("6776", 11), "1": ("25872", 42)}


def test_checkpoint_commits_with_the_rows_not_before(settings: Settings) -> None:
    """Journalled but unflushed events have no checkpoint yet: a crash then loses nothing."""
    worker, source = open_worker(settings)
    source.on_event(context(source, "0"), iothub_event(reading("esp32c3-01", 1), 1, "esp32c3-01"))
    # crash: no final flush, journal left as it is
    worker.flusher.stop(final_flush=False)
    worker.journal.close()
    assert checkpoints(settings) == {}
    assert query(settings, "SELECT count(*) FROM telemetry") == [(0,)]


@pytest.mark.slow
def test_restart_replays_the_journal_then_resumes_after_the_checkpoint(settings: Settings) -> None:
    """After a crash the journal backlog is stored with its checkpoint before receiving resumes; events the hub
    sends again (a partition taken over from the last committed checkpoint) add no duplicate rows."""
    worker, source = open_worker(settings)
    p0 = context(source, "0")
    for seq in range(1, 6):
        source.on_event(p0, iothub_event(reading("esp32c3-01", seq), seq, "esp32c3-01"))
    worker.flusher.stop(final_flush=False)  # crash before any flush
    worker.journal.close()

    worker, source = open_worker(settings)  # open() flushes the backlog before any source starts
    try:
        assert checkpoints(settings) == {"0": (str(5 * 616), 5)}
        p0 = context(source, "0")
        for seq in range(3, 9):  # 3..5 again, as another worker resuming from an older checkpoint would see them
            source.on_event(p0, iothub_event(reading("esp32c3-01", seq), seq, "esp32c3-01"))
        worker.flusher.flush(force=True)
    finally:
        worker.stop()
    assert query(settings, "SELECT count(*), count(DISTINCT ts) FROM telemetry") == [(8, 8)]
    assert checkpoints(settings) == {"0": (str(8 * 616), 8)}

    worker, source = open_worker(settings)  # a clean restart: nothing to replay, nothing added
    worker.stop()
    assert query(settings, "SELECT count(*) FROM telemetry") == [(8,)]
    assert query(settings, "SELECT value FROM ingest_state WHERE key = 'duplicates_total'") == [("3",)]


def test_an_older_replay_never_moves_a_checkpoint_back(settings: Settings) -> None:
    """A worker flushing an older journal after another worker advanced the partition keeps the newer checkpoint."""
    worker, source = open_worker(settings)
    try:
        source.on_event(context(source, "0"), iothub_event(reading("esp32c3-01", 9), 9, "esp32c3-01"))
        worker.flusher.flush(force=True)
        source.on_event(context(source, "0"), iothub_event(reading("esp32c3-01", 4), 4, "esp32c3-01"))
        worker.flusher.flush(force=True)
    finally:
        worker.stop()
    assert checkpoints(settings) == {"0": (str(9 * 616), 9)}


def test_source_refuses_a_connection_string_without_entity_path(settings: Settings) -> None:
    """The namespace-level string is a common mistake: say which one is needed."""
    wrong = settings.model_copy(update={"eventhub_connection_string":
                                        f"Endpoint=sb://{NAMESPACE}/;SharedAccessKeyName=s;SharedAccessKey=a2V5"})
    with pytest.raises(ValueError, match="EntityPath"):
        EventHubSource(wrong, journal=None)  # type: ignore[arg-type]


def test_worker_options_are_empty_without_a_connection_string(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """MQTT-only deployments get no Event Hubs source."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("THERMOLOG_EVENTHUB_CONNECTION_STRING", raising=False)
    assert worker_options(Settings()) == {}


def test_payload_bytes_are_journalled_unchanged(settings: Settings) -> None:
    """The journal keeps the event body byte for byte (validation is the flusher's)."""
    worker, source = open_worker(settings)
    try:
        body = orjson.dumps({"temperature": 20.5, "timestamp": "2026-01-01T00:00:00Z", "target_temp": 20,
                             "device_id": "esp32c3-01", "heating": "OFF"})
        source.on_event(context(source, "3"), iothub_event(body, 77, "esp32c3-01"))
        assert worker.journal.read(START)[0].payload == body
    finally:
        worker.stop()


def from_module(device_id: str, second: int, sequence_number: int, edge_device: str) -> object:
    """A reading of thermostat ``device_id`` forwarded by ``cloud_publisher`` of ``edge_device``."""
    return iothub_event(reading(device_id, second), sequence_number, edge_device, module="cloud_publisher",
                        properties={"device_id": device_id, "message_kind": "telemetry"})


def test_modules_of_unlisted_edge_devices_are_rejected_with_the_reason(settings: Settings) -> None:
    """Only the listed edge device's modules speak for thermostats; a reading and a host sample from another edge
    device land in `rejected` under the topic they claimed, with the sender named, and the checkpoint moves past
    them; a plain device still speaks for itself."""
    worker, source = open_worker(settings)
    try:
        p0 = context(source, "0")
        source.on_event(p0, from_module("esp32c3-01", 1, 1, EDGE_DEVICE))
        source.on_event(p0, from_module("esp32c3-01", 2, 2, "rogue-gw"))
        source.on_event(p0, iothub_event(SEED_SYSTEM, 3, "rogue-gw", module="sneaky",
                                         properties={"host": EDGE_DEVICE, "message_kind": "system"}))
        source.on_event(p0, iothub_event(reading("esp32c3-07", 4), 4, "esp32c3-07"))
        assert (source.received, source.refused) == (4, 2)
        worker.flusher.flush(force=True)
    finally:
        worker.stop()
    assert query(settings, "SELECT device_id, second(ts) FROM telemetry ORDER BY device_id") == [
        ("esp32c3-01", 1), ("esp32c3-07", 4)]
    assert query(settings, "SELECT count(*) FROM system_metrics") == [(0,)]
    assert query(settings, "SELECT topic, reason, source, payload FROM rejected ORDER BY topic") == [
        (f"edge/{EDGE_DEVICE}/system",
         "untrusted sender: module 'sneaky' of edge device 'rogue-gw', which is not in "
         "THERMOLOG_IOTHUB_ALLOWED_EDGE_DEVICES", "eventhub", SEED_SYSTEM),
        (f"{settings.topic_prefix}/esp32c3-01/telemetry",
         "untrusted sender: module 'cloud_publisher' of edge device 'rogue-gw', which is not in "
         "THERMOLOG_IOTHUB_ALLOWED_EDGE_DEVICES", "eventhub", reading("esp32c3-01", 2))]
    assert checkpoints(settings) == {"0": (str(4 * 616), 4)}


def test_a_rejected_sender_stays_rejected_after_a_crash_and_replay(settings: Settings) -> None:
    """The refusal is journalled with the event: replaying the journal after a crash rejects it again."""
    worker, source = open_worker(settings)
    source.on_event(context(source, "0"), from_module("esp32c3-01", 1, 1, "rogue-gw"))
    worker.flusher.stop(final_flush=False)  # crash before any flush
    worker.journal.close()
    worker, _ = open_worker(settings.model_copy(update={"iothub_allowed_edge_devices": "*"}))
    worker.stop()
    assert query(settings, "SELECT count(*) FROM telemetry") == [(0,)]
    assert query(settings, "SELECT count(*) FROM rejected WHERE reason LIKE 'untrusted sender:%'") == [(1,)]


@pytest.mark.parametrize(("listed", "edge_device_id", "allowed"), [
    (" edge-a , edge-b,,", "", frozenset({"edge-a", "edge-b"})),
    ("edge-a", "edge-cmd", frozenset({"edge-a"})),
    ("", "edge-cmd", frozenset({"edge-cmd"})),
    ("", "", frozenset()),
    ("edge-a,*", "edge-cmd", None),
])
def test_allowed_edge_devices_setting(settings: Settings, listed: str, edge_device_id: str,
                                      allowed: frozenset[str] | None) -> None:
    """The list as written; empty falls back to the command transport's edge device, then to none; `*` is any."""
    configured = settings.model_copy(update={"iothub_allowed_edge_devices": listed,
                                             "iothub_edge_device_id": edge_device_id})
    assert allowed_edge_devices(configured) == allowed


def test_allow_list_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the list, the source trusts THERMOLOG_IOTHUB_EDGE_DEVICE_ID only; with neither, no edge module;
    `*` trusts every edge device."""
    monkeypatch.chdir(tmp_path)
    for key, value in eventhub_settings_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("THERMOLOG_IOTHUB_ALLOWED_EDGE_DEVICES")
    monkeypatch.delenv("THERMOLOG_IOTHUB_EDGE_DEVICE_ID", raising=False)
    assert EventHubSource(Settings(), journal=None).allowed_edge_devices == frozenset()  # type: ignore[arg-type]
    monkeypatch.setenv("THERMOLOG_IOTHUB_EDGE_DEVICE_ID", "edge-cmd")
    assert EventHubSource(Settings(), journal=None).allowed_edge_devices == {"edge-cmd"}  # type: ignore[arg-type]
    monkeypatch.setenv("THERMOLOG_IOTHUB_ALLOWED_EDGE_DEVICES", "*")
    assert EventHubSource(Settings(), journal=None).allowed_edge_devices is None  # type: ignore[arg-type]


def test_with_no_edge_device_allowed_every_module_message_is_rejected(settings: Settings) -> None:
    """Neither setting given: edge modules are refused (nothing trusted by default), plain devices are stored."""
    closed = settings.model_copy(update={"iothub_allowed_edge_devices": "", "iothub_edge_device_id": ""})
    worker, source = open_worker(closed)
    try:
        source.on_event(context(source, "0"), from_module("esp32c3-01", 1, 1, EDGE_DEVICE))
        source.on_event(context(source, "0"), iothub_event(reading("esp32c3-02", 2), 2, "esp32c3-02"))
        worker.flusher.flush(force=True)
    finally:
        worker.stop()
    assert query(settings, "SELECT device_id FROM telemetry") == [("esp32c3-02",)]
    assert query(settings, "SELECT reason FROM rejected") == [
        (f"untrusted sender: module 'cloud_publisher' of edge device '{EDGE_DEVICE}', which is not in "
         "THERMOLOG_IOTHUB_ALLOWED_EDGE_DEVICES",)]
