"""MQTT for several ingest workers: one persistent session per worker slot, acknowledged only once stored.

The lake's workers share the thermolog topics through a Mosquitto shared subscription (``$share/<group>/...``)
made by a fixed set of slot sessions (client ids ``{ingest_client_id}-slot-N``), each held by one live worker at a
time (``ingest.leases``). A shared-subscription member that goes away keeps receiving its share into its session,
and a plain subscriber acknowledges what only its own journal holds; so here a PUBACK leaves only after the
message's journal record is committed to the lake (``HeldAckClient``). When a worker dies for good, everything it
had not stored is still unacknowledged in its slots' sessions, and the worker that takes a slot over resumes the
session and gets it all again. Retained messages are not delivered to shared subscriptions (MQTT 5 rule Mosquitto
applies to every protocol level): live status and state messages are stored, a resubscription replays nothing.
"""

from __future__ import annotations

import logging
import threading
import time

import paho.mqtt.client as mqtt

from ingest.journal import Journal, Position
from ingest.sources.fast_reader import HeldAckClient
from thermolog.contract import subscriptions
from thermolog.mqttclient import connect, make_client
from thermolog.settings import Settings

log = logging.getLogger(__name__)

SOURCE = "mqtt"


def slot_client_id(settings: Settings, slot: int) -> str:
    """The persistent MQTT client id of worker slot ``slot``."""
    return f"{settings.ingest_client_id}-slot-{slot}"


def shared_topics(settings: Settings) -> list[tuple[str, int]]:
    """The thermolog subscriptions as one shared-subscription group of the slot sessions."""
    return [(f"$share/{settings.ingest_client_id}/{topic}", qos) for topic, qos in subscriptions(settings.topic_prefix)]


class SlotSource:
    """The MQTT session of one worker slot: journals every message, acknowledges it after the lake commit."""

    def __init__(self, settings: Settings, journal: Journal, slot: int) -> None:
        self.settings = settings
        self.journal = journal
        self.slot = slot
        self.client_id = slot_client_id(settings, slot)
        self.subscribed = threading.Event()
        self.received = 0
        self.closing = False
        """Set before the slot is handed back: later messages are left unacknowledged for the next holder."""
        self._client: HeldAckClient | None = None

    def on_message(self, client: HeldAckClient, _userdata: object, message: mqtt.MQTTMessage) -> None:
        """Journal the message and tag its PUBACK with the journal position (sent once that is committed)."""
        client.ack_tag = None
        if self.closing:
            return  # not journalled, never acknowledged: the slot's next holder receives it
        topic = message._topic.decode("utf-8", errors="surrogateescape")  # raw bytes, as MqttSource does
        client.ack_tag = self.journal.append(SOURCE, topic, message.payload, time.time_ns())
        self.received += 1

    def on_connect(self, client: mqtt.Client, _userdata: object, flags: dict, rc: int) -> None:
        if rc != 0:
            log.warning("slot %s: broker refused the connection: %s", self.slot, mqtt.connack_string(rc))
            return
        client.subscribe(shared_topics(self.settings))

    def on_subscribe(self, _client: mqtt.Client, _userdata: object, _mid: int, granted: tuple[int, ...]) -> None:
        if 0x80 in granted:
            log.error("slot %s: the broker refused some subscriptions (granted %s)", self.slot, granted)
        self.subscribed.set()

    def on_disconnect(self, client: HeldAckClient, _userdata: object, rc: int) -> None:
        self.subscribed.clear()
        dropped = client.drop_held()
        if rc != 0:
            log.warning("slot %s lost the broker (%s); %s unstored messages will come again", self.slot,
                        mqtt.error_string(rc), dropped)

    def start(self, timeout: float = 10.0) -> None:
        """Resume the slot's persistent session and subscribe; raises ConnectionError when that fails."""
        client = make_client(self.client_id, self.settings, clean_session=False, client_class=HeldAckClient)
        assert isinstance(client, HeldAckClient)
        client.on_message = self.on_message
        client.on_connect = self.on_connect
        client.on_subscribe = self.on_subscribe
        client.on_disconnect = self.on_disconnect
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(1000)
        self._client = client
        connect(client, self.settings, timeout=timeout)
        if not self.subscribed.wait(timeout):
            self.stop()
            raise ConnectionError(f"slot {self.slot}: connected but the subscription did not complete")
        log.info("holding MQTT slot %s (%s)", self.slot, self.client_id)

    def acknowledge(self, committed: Position) -> int:
        """PUBACK every message whose journal record is at or before ``committed``."""
        client = self._client
        return client.acknowledge(lambda end: end <= committed) if client is not None else 0

    @property
    def held(self) -> int:
        """Messages received but not yet acknowledged."""
        return self._client.held if self._client is not None else 0

    def stop(self) -> None:
        """Disconnect; the session (with whatever is unacknowledged) stays on the broker for the next holder."""
        client, self._client = self._client, None
        if client is None:
            return
        if not client.wait_sent(5.0):
            log.warning("slot %s: some acknowledgements were not sent; those messages will come again", self.slot)
        client.disconnect()
        client.loop_stop()
        self.subscribed.clear()

    def state(self) -> dict[str, str]:
        return {f"mqtt_slot_{self.slot}": "subscribed" if self.subscribed.is_set() else "connecting"}
