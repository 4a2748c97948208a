"""Event Hubs source: IoT Hub's built-in endpoint in, the same journal, validation and flush as MQTT.

Each event is appended to the journal as source ``eventhub`` under the MQTT topic it stands for, with its partition
id, offset and sequence number as record meta; the flusher then validates and stores it exactly like an MQTT
message. The checkpoint of each partition is written by :func:`checkpoint_hook` inside the flush transaction that
stores the rows, and nowhere else, so:

- a crash before the flush leaves both rows and checkpoint behind: on restart the worker first flushes its journal
  (rows and checkpoint together), then the consumer starts after that checkpoint: nothing lost, nothing repeated;
- several workers share the partitions through ``DuckDBCheckpointStore`` (ownership claims with etags). When a
  partition moves between workers, the new owner starts from the last committed checkpoint; events the old owner
  had journalled but not flushed may be stored by both, and the sink's (device_id, ts) de-duplication drops the
  second copy.

Topics: telemetry becomes ``{prefix}/{device_id}/telemetry`` with the device id from the event's IoT Hub
annotations (``iothub-connection-device-id``); an event sent by an edge module (``iothub-connection-module-id``
present) names its thermostat in the application property ``device_id``. Host samples (``message_kind`` =
``system``) become ``edge/{host}/system``.

Senders: a module may name any thermostat, so only modules of the edge devices in
``THERMOLOG_IOTHUB_ALLOWED_EDGE_DEVICES`` (empty: ``THERMOLOG_IOTHUB_EDGE_DEVICE_ID``; ``*``: any) are believed.
An event from another edge device's module is journalled with the reason in its meta
(:data:`ingest.parse.META_REJECTED`) and stored in ``rejected``; its checkpoint moves on like any other's. A plain
device (no module id) speaks only for itself and needs no listing.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import duckdb
from azure.eventhub import (
    CheckpointStore,
    EventData,
    EventHubConsumerClient,
    PartitionContext,
    parse_connection_string,
)

from ingest.checkpoint_store import CheckpointRow, DuckDBCheckpointStore, write_checkpoints
from ingest.journal import Journal, Record
from ingest.parse import META_REJECTED
from ingest.sinks.duckdb import TransactionHook
from thermolog import contract
from thermolog.settings import Settings

log = logging.getLogger(__name__)

SOURCE = "eventhub"
ANNOTATION_DEVICE_ID = b"iothub-connection-device-id"
ANNOTATION_MODULE_ID = b"iothub-connection-module-id"
STARTING_POSITION = "-1"
"""Where a partition without a checkpoint starts: the oldest retained event (nothing the hub still has is lost)."""
ALLOW_ANY_EDGE_DEVICE = "*"
_ID_SHOWN_CHARS = 128
"""IoT Hub ids are at most 128 characters; a rejection reason shows no more of one."""
_REFUSALS_LOGGED = 1000
"""Edge devices whose first refused message is logged; past that only the `rejected` table records them."""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _property(event: EventData, name: str) -> str | None:
    # Received events carry application property keys as bytes; locally built ones as str.
    props = event.properties or {}
    return _text(props.get(name.encode(), props.get(name)))


def event_topic(event: EventData, prefix: str) -> str:
    """The MQTT topic this event stands for (an unusable id still yields a topic, which validation rejects)."""
    annotations = event.system_properties
    connection_device = _text(annotations.get(ANNOTATION_DEVICE_ID)) or "?"
    from_module = annotations.get(ANNOTATION_MODULE_ID) is not None
    if _property(event, contract.IOTHUB_PROP_KIND) == contract.SYSTEM:
        host = (_property(event, contract.IOTHUB_PROP_HOST) if from_module else None) or connection_device
        return f"{contract.EDGE_PREFIX}/{host}/{contract.SYSTEM}"
    device_id = (_property(event, contract.IOTHUB_PROP_DEVICE_ID) if from_module else None) or connection_device
    return f"{prefix}/{device_id}/{contract.TELEMETRY}"


def allowed_edge_devices(settings: Settings) -> frozenset[str] | None:
    """Edge device ids whose modules may send; None when any may (``*``)."""
    listed = {part.strip() for part in settings.iothub_allowed_edge_devices.split(",") if part.strip()}
    if ALLOW_ANY_EDGE_DEVICE in listed:
        return None
    if not listed and settings.iothub_edge_device_id:
        listed = {settings.iothub_edge_device_id}
    return frozenset(listed)


def sender_refusal(event: EventData, allowed: frozenset[str] | None) -> str | None:
    """Why the event's sender may not send, or None: only edge modules are checked (a plain device cannot speak
    for another device)."""
    annotations = event.system_properties
    module = annotations.get(ANNOTATION_MODULE_ID)
    if module is None or allowed is None:
        return None
    device = _text(annotations.get(ANNOTATION_DEVICE_ID)) or ""
    if device in allowed:
        return None
    return (f"untrusted sender: module {_text(module)[:_ID_SHOWN_CHARS]!r} of edge device "
            f"{device[:_ID_SHOWN_CHARS]!r}, which is not in THERMOLOG_IOTHUB_ALLOWED_EDGE_DEVICES")


def event_body(event: EventData) -> bytes:
    """The event's payload bytes."""
    body = event.body
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return b"".join(part if isinstance(part, bytes) else str(part).encode() for part in body)


def checkpoint_hook(namespace: str, eventhub_name: str, consumer_group: str) -> TransactionHook:
    """A flusher hook that moves each partition's checkpoint to the newest ``eventhub`` record being stored.

    A ``partial`` of a module-level function, so it pickles into the flusher process of ``thermolog ingest``.
    """
    return functools.partial(_store_checkpoints, namespace, eventhub_name, consumer_group)


def _store_checkpoints(namespace: str, eventhub_name: str, consumer_group: str, con: duckdb.DuckDBPyConnection,
                       records: Sequence[Record]) -> None:
    write_checkpoints(con, checkpoint_rows(namespace, eventhub_name, consumer_group, records))


def checkpoint_rows(namespace: str, eventhub_name: str, consumer_group: str,
                    records: Sequence[Record]) -> list[CheckpointRow]:
    """The newest position of each partition among the ``eventhub`` records being stored."""
    newest: dict[str, tuple[str, int]] = {}
    for record in records:
        if record.source != SOURCE or not record.meta:
            continue
        partition, seq = str(record.meta["partition_id"]), int(record.meta["sequence_number"])
        if partition not in newest or seq > newest[partition][1]:
            newest[partition] = (str(record.meta["offset"]), seq)
    return [(namespace, eventhub_name, consumer_group, pid, offset, seq)
            for pid, (offset, seq) in sorted(newest.items())]


class EventHubSource:
    """Receives from every partition this worker owns and journals each event; ``start``/``stop``/``state``."""

    def __init__(self, settings: Settings, journal: Journal, client: EventHubConsumerClient | None = None,
                 checkpoint_store: CheckpointStore | None = None) -> None:
        if not settings.eventhub_connection_string:
            raise ValueError("THERMOLOG_EVENTHUB_CONNECTION_STRING is empty: set the IoT Hub built-in endpoint's "
                             "Event Hub-compatible connection string")
        props = parse_connection_string(settings.eventhub_connection_string)
        if not props.eventhub_name:
            raise ValueError("THERMOLOG_EVENTHUB_CONNECTION_STRING has no EntityPath=: use the Event Hub-compatible "
                             "endpoint string of the IoT Hub's built-in endpoint")
        self.settings = settings
        self.journal = journal
        self.namespace, self.eventhub_name = props.fully_qualified_namespace, props.eventhub_name
        self.consumer_group = settings.eventhub_consumer_group
        self.checkpoint_store: CheckpointStore = checkpoint_store or DuckDBCheckpointStore(settings.db_path)
        self.client = client or EventHubConsumerClient.from_connection_string(
            settings.eventhub_connection_string, consumer_group=self.consumer_group,
            checkpoint_store=self.checkpoint_store)
        self.allowed_edge_devices = allowed_edge_devices(settings)
        self.partitions: set[str] = set()
        self.received = 0
        self.refused = 0
        self._refused_devices: set[str] = set()
        self._thread: threading.Thread | None = None

    def hook(self) -> TransactionHook:
        """The flusher hook writing this source's checkpoints (see :func:`checkpoint_hook`)."""
        return checkpoint_hook(self.namespace, self.eventhub_name, self.consumer_group)

    # --- consumer callbacks (one thread per partition) -----------------------------------------------------

    def on_event(self, partition_context: PartitionContext, event: EventData | None) -> None:
        """Journal one event with its partition position; the checkpoint follows when the flush stores it. An
        event from a sender that is not allowed is journalled with the reason, so the flush rejects it."""
        if event is None:  # max_wait_time elapsed without an event
            return
        meta: dict[str, Any] = {"partition_id": partition_context.partition_id, "offset": event.offset,
                                "sequence_number": event.sequence_number}
        refusal = sender_refusal(event, self.allowed_edge_devices)
        if refusal:
            meta[META_REJECTED] = refusal
            self._note_refusal(event, refusal)
        self.journal.append(SOURCE, event_topic(event, self.settings.topic_prefix), event_body(event),
                            time.time_ns(), meta)
        self.received += 1

    def _note_refusal(self, event: EventData, refusal: str) -> None:
        self.refused += 1
        device = _text(event.system_properties.get(ANNOTATION_DEVICE_ID)) or ""
        if device not in self._refused_devices and len(self._refused_devices) < _REFUSALS_LOGGED:
            self._refused_devices.add(device)
            log.warning("rejecting IoT Hub messages: %s (first from this device; all are in `rejected`)", refusal)

    def on_partition_initialize(self, partition_context: PartitionContext) -> None:
        """This worker now owns the partition."""
        self.partitions.add(partition_context.partition_id)
        log.info("receiving partition %s of %s", partition_context.partition_id, self.eventhub_name)

    def on_partition_close(self, partition_context: PartitionContext, reason: Any) -> None:
        """The partition went to another worker, or the client is closing."""
        self.partitions.discard(partition_context.partition_id)
        log.info("stopped receiving partition %s: %s", partition_context.partition_id, reason)

    def on_error(self, partition_context: PartitionContext | None, error: Exception) -> None:
        """Errors are logged; the client reconnects and rebalances by itself."""
        where = f"partition {partition_context.partition_id}" if partition_context else "load balancing"
        log.warning("Event Hubs error in %s: %s: %s", where, type(error).__name__, error)

    # --- life cycle ---------------------------------------------------------------------------------------

    def _receive(self) -> None:
        try:
            self.client.receive(
                on_event=self.on_event,
                on_partition_initialize=self.on_partition_initialize,
                on_partition_close=self.on_partition_close,
                on_error=self.on_error,
                starting_position=STARTING_POSITION,
            )
        except Exception:
            log.exception("Event Hubs receive loop ended")

    def start(self) -> None:
        """Start receiving in a background thread (the client balances partitions with other workers)."""
        log.info("Event Hubs source: %s/%s, consumer group %s", self.namespace, self.eventhub_name,
                 self.consumer_group)
        if self.allowed_edge_devices is None:
            log.warning("THERMOLOG_IOTHUB_ALLOWED_EDGE_DEVICES=*: modules of any edge device may send for any "
                        "thermostat")
        elif not self.allowed_edge_devices:
            log.warning("no edge device is allowed: messages from edge modules will be rejected (set "
                        "THERMOLOG_IOTHUB_ALLOWED_EDGE_DEVICES or THERMOLOG_IOTHUB_EDGE_DEVICE_ID)")
        else:
            log.info("edge devices whose modules may send: %s", ", ".join(sorted(self.allowed_edge_devices)))
        self._thread = threading.Thread(target=self._receive, name="eventhub-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the client (it releases its partitions) and wait for the receive thread."""
        self.client.close()
        if self._thread is not None:
            self._thread.join(30)

    def state(self) -> dict[str, str]:
        """Values the flusher stores in ``ingest_state``."""
        return {"eventhub_partitions": ",".join(sorted(self.partitions))}


def worker_options(settings: Settings) -> dict[str, Any]:
    """``IngestWorker`` keyword arguments adding the Event Hubs source when it is configured, else ``{}``."""
    if not settings.eventhub_connection_string:
        return {}
    props = parse_connection_string(settings.eventhub_connection_string)
    hook = checkpoint_hook(props.fully_qualified_namespace, props.eventhub_name or "",
                           settings.eventhub_consumer_group)
    return {"hooks": [hook], "extra_sources": [lambda s, journal: EventHubSource(s, journal)]}
