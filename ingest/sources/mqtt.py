"""MQTT source: a persistent QoS 1 subscription whose receive callback only appends raw messages to the journal.

The client (``FastReadClient``) hands over the messages of each socket read together and sends their PUBACKs
after the callback that journals them returns (paho-mqtt 1.6 likewise sends a PUBACK after ``on_message``
returns), so a message is in the journal before the broker forgets it; a crash before the PUBACK makes the
broker deliver it again (the flusher drops the repeat). Nothing expensive happens in the callback: parsing and
validation are the flusher's, so receiving keeps pace with the broker. The session is persistent
(``clean_session=False``, stable client id), so the broker queues messages while the worker is down; the
broker's ``max_queued_messages`` must be large enough for the longest outage.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from ingest.journal import Journal
from ingest.sources.fast_reader import FastReadClient
from thermolog.contract import QOS, TELEMETRY, subscriptions
from thermolog.mqttclient import connect, make_client
from thermolog.profiles import profiles_from_settings
from thermolog.settings import Settings

log = logging.getLogger(__name__)

SOURCE = "mqtt"
MAX_INFLIGHT = 100
"""Outgoing QoS>0 messages in flight (only SUBSCRIBEs here; incoming flow is the broker's max_inflight)."""
SESSION_KEY = "mqtt_session"
"""``ingest_state`` key naming the persistent session ingest subscribed with (so the next run expects it)."""
MAX_QUEUED = 1000
"""Outgoing messages paho may queue while disconnected (bounded so a broker outage cannot grow memory)."""


def session_key(settings: Settings) -> str:
    """Which persistent session ingest uses: its client id at its broker."""
    return f"{settings.ingest_client_id}@{settings.mqtt_endpoint()!r}"


class MqttSource:
    """Subscribes to the thermolog topics and journals every message; ``start``/``stop``."""

    def __init__(self, settings: Settings, journal: Journal, session_expected: bool = False) -> None:
        """``session_expected``: an earlier run subscribed with this client id at this broker (``SESSION_KEY`` in
        ``ingest_state`` equals :func:`session_key`), so the broker should still hold the session."""
        self.settings = settings
        self.journal = journal
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.failed = threading.Event()
        """Set when a message could not be journalled (disk full): the receive loop stopped without acknowledging
        it; :meth:`halt` drops the connection and a later :meth:`start` resumes the session."""
        self.received = 0
        self.reconnects = 0
        self.sessions_lost = 0
        """Connections on which the broker had no session although ingest had one (messages queued are gone)."""
        self.session_lost_at: datetime | None = None
        self._session_expected = session_expected
        self._client: mqtt.Client | None = None
        self._topics = subscriptions(settings.topic_prefix) + [
            (topic_filter, QOS[TELEMETRY]) for topic_filter in profiles_from_settings(settings).subscriptions()]

    # --- paho callbacks (network thread) ------------------------------------------------------------------
    def on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        """Append the raw message to the journal; returning lets paho acknowledge it."""
        # message._topic is the raw topic; .topic would decode strictly and raise on bad UTF-8.
        topic = message._topic.decode("utf-8", errors="surrogateescape")
        try:
            self.journal.append(SOURCE, topic, message.payload, time.time_ns())
        except Exception:
            self.failed.set()
            log.critical("cannot journal a message on %s; stopping receive without acknowledging it", topic,
                         exc_info=True)
            raise  # paho re-raises from its loop: no PUBACK goes out, the broker keeps the message
        self.received += 1

    def on_publish_batch(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Append the ``(raw topic, payload)`` messages of one socket read to the journal in one write; returning
        lets the client acknowledge them."""
        try:
            self.journal.append_batch(SOURCE, messages, time.time_ns())
        except Exception:
            self.failed.set()
            log.critical("cannot journal a message on %s (read with %s more); stopping receive without acknowledging "
                         "any of them", messages[0][0].decode("utf-8", errors="replace"), len(messages) - 1,
                         exc_info=True)
            raise  # out of paho's loop: no PUBACK goes out, the broker keeps the messages
        self.received += len(messages)

    def on_connect(self, client: mqtt.Client, _userdata: object, flags: dict, rc: int) -> None:
        """(Re)subscribe on every successful connection."""
        if rc != 0:
            log.warning("broker refused the connection: %s", mqtt.connack_string(rc))
            return
        present = bool(flags.get("session present"))
        if self._session_expected and not present:
            self.sessions_lost += 1
            self.session_lost_at = datetime.now(UTC)
            log.error("the MQTT broker has no session for client id %r on this reconnect: messages queued for ingest "
                      "while it was away are lost. Another client connected with this client id (see the broker's "
                      "log), or the broker restarted without persistence.", self.settings.ingest_client_id)
        elif self.reconnects:
            log.info("reconnected to the MQTT broker (session present: %s)", present)
        client.subscribe(self._topics)
        self.connected.set()

    def on_subscribe(self, _client: mqtt.Client, _userdata: object, _mid: int, granted_qos: tuple[int, ...]) -> None:
        """The broker confirmed the subscriptions; from now on every matching message reaches us."""
        if 0x80 in granted_qos:
            log.error("the broker refused some subscriptions (granted %s): check its ACL", granted_qos)
        self._session_expected = True  # the broker keeps this persistent session from now on
        self.subscribed.set()

    def on_disconnect(self, _client: mqtt.Client, _userdata: object, rc: int) -> None:
        """Log unexpected disconnects; paho's loop reconnects with backoff (1 s doubling to 30 s)."""
        self.connected.clear()
        self.subscribed.clear()
        if rc != 0:
            self.reconnects += 1
            log.warning("lost the MQTT broker (%s); reconnecting with backoff", mqtt.error_string(rc))

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe and start the network loop; raises ConnectionError when the broker is unreachable.

        Also resumes after :meth:`halt` (same client id, so the same persistent session)."""
        self.failed.clear()
        client = make_client(self.settings.ingest_client_id, self.settings, clean_session=False,
                             client_class=FastReadClient)
        client.on_message = self.on_message  # messages paho reads itself (cut by a read, larger than 64 KiB)
        client.on_publish_batch = self.on_publish_batch
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        client.on_subscribe = self.on_subscribe
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(MAX_QUEUED)
        self._client = client
        endpoint = self.settings.mqtt_endpoint()
        log.info("connecting to %r as %r (persistent session), topics %s", endpoint,
                 self.settings.ingest_client_id, ", ".join(t for t, _q in self._topics))
        connect(client, self.settings, timeout=timeout)
        if not self.subscribed.wait(timeout):
            raise ConnectionError(f"connected to {endpoint!r} but the subscription did not complete")

    def state(self) -> dict[str, str]:
        """Values the flusher stores in ``ingest_state``."""
        live = self.connected.is_set() and self.subscribed.is_set() and not self.failed.is_set()
        return {"mqtt_connected": "true" if live else "false",
                "mqtt_broker": repr(self.settings.mqtt_endpoint()),
                "journal_write_failed": "true" if self.failed.is_set() else "false",
                "mqtt_sessions_lost": str(self.sessions_lost),
                "mqtt_session_lost_at": self.session_lost_at.isoformat() if self.session_lost_at else "",
                **({SESSION_KEY: session_key(self.settings)} if self._session_expected else {})}

    def halt(self) -> None:
        """Drop the connection after a failed append, acknowledging nothing more: the broker keeps the session's
        unacknowledged and queued messages and delivers them again when :meth:`start` reconnects."""
        client, self._client = self._client, None
        if client is None:
            return
        client.loop_stop()  # joins the network thread, which ended with the append's exception
        client.disconnect()  # with no loop running paho writes the DISCONNECT at once and closes the socket
        self.connected.clear()
        self.subscribed.clear()

    def stop(self) -> None:
        """Disconnect cleanly (the session stays on the broker) and stop the network loop."""
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()
        self.connected.clear()
