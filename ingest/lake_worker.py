"""``thermolog ingest`` with the lake configured: one of any number of workers writing the same DuckLake.

Each worker keeps its own journal and flusher (in-process: the MQTT acknowledgements leave from the process that
holds the sessions) and writes through ``LakeSink``, which commits rows and this worker's journal position
together. MQTT arrives through the worker slots it holds (``ingest.leases``, ``ingest.sources.mqtt_slots``); a
message is acknowledged to the broker only after its journal record is committed, so a worker that dies for good
leaves nothing acknowledged unstored: its slots expire and the other workers resume their sessions.
"""

from __future__ import annotations

import logging
import threading

from azure.eventhub import parse_connection_string

from ingest.flusher import Flusher
from ingest.journal import Journal, Position
from ingest.lake_checkpoints import LakeCheckpointStore, lake_checkpoint_hook
from ingest.leases import SlotLeases, catalog_conninfo
from ingest.sinks.duckdb import TransactionHook
from ingest.sinks.lake import LakeSink
from ingest.sources.eventhub import EventHubSource
from ingest.sources.mqtt_slots import SlotSource
from thermolog.settings import Settings

log = logging.getLogger(__name__)


class LakeIngestWorker:
    """Journal + flusher into the lake + the MQTT slots this worker holds; ``start()`` / ``stop()``."""

    def __init__(self, settings: Settings, mqtt: bool = True) -> None:
        self.settings = settings
        self.sink = LakeSink(settings)
        self.worker = self.sink.worker
        self.use_mqtt = mqtt
        self.leases = SlotLeases(catalog_conninfo(settings), self.worker, settings.lake_mqtt_slots,
                                 settings.lake_lease_s)
        self.hooks: list[TransactionHook] = []
        self.eventhub: EventHubSource | None = None
        self._checkpoints: LakeCheckpointStore | None = None
        if settings.eventhub_connection_string:
            props = parse_connection_string(settings.eventhub_connection_string)
            self.hooks.append(lake_checkpoint_hook(props.fully_qualified_namespace, props.eventhub_name or "",
                                                   settings.eventhub_consumer_group))
        self.journal: Journal | None = None
        self.flusher: Flusher | None = None
        self.slots: dict[int, SlotSource] = {}
        self._slots_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Open the lake and the journal and store the journal's backlog (Event Hubs resumes from the checkpoints
        it commits); no source receives yet."""
        committed = self.sink.committed_position()
        self.journal = Journal.from_settings(self.settings, min_segment=committed.segment)
        log.info("lake worker %s: resuming after journal position %s", self.worker, committed.encode())
        self.flusher = Flusher(self.settings, self.journal, self.sink, committed, self.hooks, [self.state])
        self.flusher.commit_listeners.append(self._acknowledge)
        self.flusher.flush(force=True)
        self.flusher.start()
        if self.hooks:
            self._checkpoints = LakeCheckpointStore(self.settings, catalog_conninfo(self.settings))
            self.eventhub = EventHubSource(self.settings, self.journal, checkpoint_store=self._checkpoints)

    def start(self) -> None:
        """Open, then receive: Event Hubs partitions balanced by the consumer client, MQTT slots by lease."""
        self.open()
        if self.eventhub is not None:
            self.eventhub.start()
        if self.use_mqtt:
            self.leases.setup()
            self.rebalance()
            self._thread = threading.Thread(target=self._lease_loop, name="slot-leases", daemon=True)
            self._thread.start()

    def _acknowledge(self, committed: Position) -> None:
        with self._slots_lock:
            slots = list(self.slots.values())
        for slot in slots:
            slot.acknowledge(committed)

    def state(self) -> dict[str, str]:
        """``ingest_state`` values stored with each flush (under this worker)."""
        with self._slots_lock:
            held = sorted(self.slots)
        values = {"mqtt_slots": ",".join(map(str, held)), "mqtt_connected": "true" if held else "false"}
        if self.eventhub is not None:
            values.update(self.eventhub.state())
        return values

    def rebalance(self) -> None:
        """Renew leases, drop lost slots at once, start claimed ones, hand back the surplus after storing it."""
        round_ = self.leases.renew()
        for slot in round_.lost:
            self._drop(slot, store=False)  # someone else holds the session now: acknowledge nothing more
        for slot in sorted(round_.held - set(self.slots)):
            source = SlotSource(self.settings, self.journal, slot)
            try:
                source.start()
            except ConnectionError as exc:
                log.warning("cannot open slot %s yet (%s); handing it back", slot, exc)
                self.leases.release({slot})
                continue
            with self._slots_lock:
                self.slots[slot] = source
        for slot in round_.surplus:
            self._drop(slot, store=True)
            self.leases.release({slot})

    def _drop(self, slot: int, store: bool) -> None:
        with self._slots_lock:
            source = self.slots.pop(slot, None) if not store else self.slots.get(slot)
        if source is None:
            return
        source.closing = True  # later messages stay unacknowledged for the next holder
        if store and self.flusher is not None:
            self.flusher.flush(force=True)  # store and acknowledge what this slot journalled
            with self._slots_lock:
                self.slots.pop(slot, None)
        source.stop()
        log.info("slot %s handed over", slot)

    def _lease_loop(self) -> None:
        while not self._stop.wait(self.settings.lake_lease_s / 3):
            try:
                self.rebalance()
            except Exception:  # the catalog database may be briefly unreachable: try again next period
                log.exception("renewing the slot leases failed")

    def stop(self) -> None:
        """Store and acknowledge what was received, close the sessions, hand the slots back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.eventhub is not None:
            self.eventhub.stop()
        for slot in list(self.slots):
            self._drop(slot, store=True)
        if self.use_mqtt:
            try:
                self.leases.leave()
            except Exception:
                log.exception("releasing the slot leases failed; they expire by themselves")
        self.leases.close()
        if self._checkpoints is not None:
            self._checkpoints.close()
        if self.flusher is not None:
            self.flusher.stop(final_flush=True)
        if self.journal is not None:
            self.journal.close()
        self.sink.close()
        log.info("lake worker %s stopped", self.worker)


def run(settings: Settings, stop: threading.Event) -> int:
    """Run a lake worker until ``stop`` is set."""
    worker = LakeIngestWorker(settings)
    worker.start()
    try:
        stop.wait()
    finally:
        worker.stop()
    return 0
