"""One way to build a paho-mqtt client from the settings: TLS, credentials, last will, reconnect backoff.

paho-mqtt stays below 2.0 because azure-iot-device requires it; this module is the only place that knows.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from thermolog.settings import MqttEndpoint, Settings, get_settings

log = logging.getLogger(__name__)


class Client(mqtt.Client):
    """paho's client, reading the socket in large chunks.

    paho 1.6 reads every packet with three or four ``recv`` calls (type byte, length bytes one at a time, body)
    and goes back to ``select`` between packets. Under a stream of small QoS 1 messages those system calls are
    most of what the receive thread does; reading up to 64 KiB at once and handling every whole packet in it
    before the next ``select`` cuts them to about one per batch. Packets, callbacks and acknowledgements are
    exactly paho's: only where the bytes come from changes.
    """

    READ_CHUNK = 64 * 1024
    _rbuf = b""
    _rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(self.READ_CHUNK)
            if len(data) <= bufsize:  # all of it wanted (or the connection closed: b"")
                self._rbuf, self._rpos = b"", 0
                return data
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start:self._rpos]

    @property
    def buffered(self) -> int:
        """Bytes read from the socket but not yet handed to paho."""
        return len(self._rbuf) - self._rpos

    def loop_read(self, max_packets: int = 1) -> int:
        """Handle every packet already read before going back to ``select`` (which cannot see buffered bytes)."""
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTT_ERR_SUCCESS and self._sock is not None and self.buffered:
            rc = super().loop_read(max_packets)
        return rc

    def reconnect(self) -> int:
        """Drop bytes left from the previous connection, then reconnect as paho does."""
        self._rbuf, self._rpos = b"", 0
        return super().reconnect()


class HeldAckClient(Client):
    """A client that sends a QoS 1 PUBACK only when told: a message is acknowledged once it is stored, not when it
    is received, so a worker that dies for good leaves every message it had not stored with its session.

    ``on_message`` sets :attr:`ack_tag` (e.g. the journal position of the stored copy); paho's PUBACK for that
    message is then held with the tag until :meth:`acknowledge` accepts it. A message left without a tag is never
    acknowledged: the broker delivers it again to whoever resumes the session. Held PUBACKs belong to one
    connection (packet ids are reused on the next), so they are dropped when it ends.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ack_tag: Any = None
        self._held: deque[tuple[int, Any]] = deque()
        self._held_lock = threading.Lock()

    def _send_puback(self, mid: int) -> int:
        tag, self.ack_tag = self.ack_tag, None
        if tag is not None:
            with self._held_lock:
                self._held.append((mid, tag))
        return mqtt.MQTT_ERR_SUCCESS

    def acknowledge(self, done: Callable[[Any], bool]) -> int:
        """Send the held PUBACKs, in arrival order, of every message whose tag ``done`` accepts; returns how many."""
        sent = 0
        with self._held_lock:
            while self._held and done(self._held[0][1]):
                mid, _tag = self._held.popleft()
                super()._send_puback(mid)
                sent += 1
        return sent

    def drop_held(self) -> int:
        """Forget held PUBACKs (the connection ended: the broker delivers those messages again)."""
        with self._held_lock:
            dropped = len(self._held)
            self._held.clear()
        return dropped

    @property
    def held(self) -> int:
        """PUBACKs waiting for their messages to be stored."""
        return len(self._held)


def make_client(
    client_id: str,
    settings: Settings | None = None,
    *,
    clean_session: bool = True,
    will: tuple[str, bytes, int, bool] | None = None,
    endpoint: MqttEndpoint | None = None,
    client_class: type[Client] = Client,
) -> Client:
    """A configured, not yet connected client. ``will`` is ``(topic, payload, qos, retain)``."""
    settings = settings or get_settings()
    endpoint = endpoint or settings.mqtt_endpoint()
    client = client_class(client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311)
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set(
            ca_certs=str(endpoint.ca_file) if endpoint.ca_file else None,
            certfile=str(endpoint.cert_file) if endpoint.cert_file else None,
            keyfile=str(endpoint.key_file) if endpoint.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if will is not None:
        client.will_set(*will)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.user_data_set({"endpoint": endpoint})
    return client


def connect(client: mqtt.Client, settings: Settings | None = None, timeout: float = 10.0) -> None:
    """Connect and start the network loop; raises ConnectionError with what to check when it fails."""
    settings = settings or get_settings()
    endpoint: MqttEndpoint = client._userdata["endpoint"]  # set by make_client
    connected = threading.Event()
    result: dict[str, int] = {}
    previous = client.on_connect

    def on_connect(c: mqtt.Client, userdata: object, flags: dict, rc: int) -> None:
        result["rc"] = rc
        connected.set()
        if previous is not None:
            previous(c, userdata, flags, rc)

    client.on_connect = on_connect
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=settings.mqtt_keepalive_s)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionError(
            f"cannot reach the MQTT broker at {endpoint!r}: {exc}. Is it running? Check THERMOLOG_MQTT_URL."
        ) from exc
    client.loop_start()
    if not connected.wait(timeout):
        client.loop_stop()
        raise ConnectionError(f"no CONNACK from {endpoint!r} within {timeout}s")
    client.on_connect = previous
    if result["rc"] != 0:
        client.loop_stop()
        raise ConnectionError(
            f"broker {endpoint!r} refused the connection: {mqtt.connack_string(result['rc'])}. "
            "Check THERMOLOG_MQTT_USERNAME / THERMOLOG_MQTT_PASSWORD and the broker's ACL."
        )
