"""The ingest receive path's paho client: the socket read in large chunks.

The only module that touches paho's internals (``_sock_recv``, ``_sock``, ``_send_puback``, ``_out_packet``);
pinned to paho 1.6's reading loop.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt


class FastReadClient(mqtt.Client):
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


class HeldAckClient(FastReadClient):
    """A client that sends a QoS 1 PUBACK only when told: a message is acknowledged once it is stored, not when it
    is received, so a worker that dies for good leaves every message it had not stored with its session.

    ``on_message`` sets :attr:`ack_tag` (e.g. the journal position of the stored copy); paho's PUBACK for that
    message (``_send_puback``, paho 1.6) is then held with the tag until :meth:`acknowledge` accepts it. A message
    left without a tag is never acknowledged: the broker delivers it again to whoever resumes the session. Held
    PUBACKs belong to one connection (packet ids are reused on the next), so they are dropped when it ends.
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

    def wait_sent(self, timeout: float) -> bool:
        """Wait until every queued packet (the PUBACKs above all) is written to the socket; call it before
        ``disconnect``: stopping the network loop drops whatever it had not written yet."""
        deadline = time.monotonic() + timeout
        while self._out_packet and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._out_packet
