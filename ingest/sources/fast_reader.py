"""The ingest receive path's paho client: the socket read in large chunks.

The only module that touches paho's internals (``_sock_recv``, ``_sock``, ``_send_puback``, ``_out_packet``,
``_in_packet``, ``_protocol``, ``_last_msg_in`` and the locks and helpers around them); pinned to paho 1.6's
reading loop and packet queue.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

PUBLISH = 0x30
PUBACK = 0x40
_PUBACK = struct.Struct("!BBH")
_QOS_BITS = 0x06

PublishBatch = Callable[[list[tuple[bytes, bytes]]], None]
"""Takes ``(raw topic, payload)`` of every QoS 0/1 PUBLISH of one read, in arrival order."""


class FastReadClient(mqtt.Client):
    """paho's client, reading the socket in large chunks.

    paho 1.6 reads every packet with three or four ``recv`` calls (type byte, length bytes one at a time, body)
    and goes back to ``select`` between packets. Under a stream of small QoS 1 messages those system calls are
    most of what the receive thread does; reading up to 64 KiB at once and handling every whole packet in it
    before the next ``select`` cuts them to about one per batch. Without :attr:`on_publish_batch`, packets,
    callbacks and acknowledgements are exactly paho's: only where the bytes come from changes.

    With :attr:`on_publish_batch` set, the QoS 0 and 1 PUBLISH packets of one read skip paho's per-message
    work: they go to that callback together, and once it returns their PUBACKs leave in one write. Every other
    packet, and a PUBLISH too large to be whole in the buffer, goes through paho (``on_message``) as before, in
    order: the batch before it is handed over first.
    """

    READ_CHUNK = 64 * 1024
    _rbuf = b""
    _rpos = 0
    on_publish_batch: PublishBatch | None = None
    """Called in the network thread with the QoS 0/1 messages of one read; a QoS 1 message is acknowledged
    only after it returns, and none of the batch is when it raises. Topic filters of ``message_callback_add``
    are not consulted for these messages."""

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
        if self.on_publish_batch is not None and self._sock is not None and self._protocol != mqtt.MQTTv5:
            return self._read_batched()  # (MQTT 5 puts properties between packet id and payload: paho's path)
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTT_ERR_SUCCESS and self._sock is not None and self.buffered:
            rc = super().loop_read(max_packets)
        return rc

    def _read_batched(self) -> int:
        if self._in_packet["command"]:  # paho is part way through a packet larger than the buffer
            rc = super().loop_read(1)
            if rc or self._in_packet["command"] or self._sock is None:
                return rc
        else:
            try:
                data = super()._sock_recv(self.READ_CHUNK)
            except BlockingIOError:
                return mqtt.MQTT_ERR_SUCCESS
            except ConnectionError as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                return self._loop_rc_handle(mqtt.MQTT_ERR_CONN_LOST)
            if not data:
                return self._loop_rc_handle(mqtt.MQTT_ERR_CONN_LOST)
            # A packet cut by the previous read (kept only when small, see _handle_buffered) goes first.
            self._rbuf = self._rbuf[self._rpos:] + data if self._rpos < len(self._rbuf) else data
            self._rpos = 0
        return self._handle_buffered()

    def _handle_buffered(self) -> int:
        """Batch the whole QoS 0/1 PUBLISH packets in the buffer; hand every other packet to paho, in order."""
        buf, pos, end = self._rbuf, self._rpos, len(self._rbuf)
        batch: list[tuple[bytes, bytes]] = []
        mids: list[int] = []
        while pos < end:
            header = buf[pos]
            length, multiplier, at = 0, 1, pos + 1
            while at < end and at - pos <= 4:
                byte = buf[at]
                at += 1
                length += (byte & 127) * multiplier
                multiplier <<= 7
                if byte < 128:
                    break
            else:
                if at - pos <= 4:
                    break  # the read ended inside the length: wait for the next
                length = -1  # a fifth length byte: malformed, paho reports it
            packet_end = at + length
            qos = header & _QOS_BITS
            whole = length >= 0 and packet_end <= end
            if whole and header & 0xF0 == PUBLISH and qos <= 2 and length >= 2:
                topic_end = at + 2 + (buf[at] << 8 | buf[at + 1])
                payload_at = topic_end + qos  # QoS 1 (bits 0b010): a 2-byte packet id
                if topic_end > at + 2 and payload_at <= packet_end:
                    if qos:
                        mids.append(buf[topic_end] << 8 | buf[topic_end + 1])
                    batch.append((buf[at + 2:topic_end], buf[payload_at:packet_end]))
                    pos = packet_end
                    continue
            if not whole and length >= 0 and packet_end - pos <= self.READ_CHUNK:
                break  # a small packet cut by this read: kept for the next
            self._rpos = pos
            rc = self._deliver(batch, mids) or super().loop_read(1)  # paho reads the rest of a cut packet itself
            batch, mids = [], []
            if rc or self._sock is None or self._in_packet["command"]:
                return rc
            buf, pos, end = self._rbuf, self._rpos, len(self._rbuf)
        self._rpos = pos
        return self._deliver(batch, mids)

    def _deliver(self, batch: list[tuple[bytes, bytes]], mids: list[int]) -> int:
        """Hand a batch to ``on_publish_batch``, then queue its PUBACKs as one packet and try to write it now."""
        if not batch:
            return mqtt.MQTT_ERR_SUCCESS
        with self._msgtime_mutex:
            self._last_msg_in = mqtt.time_func()
        assert self.on_publish_batch is not None
        with self._in_callback_mutex:
            self.on_publish_batch(batch)  # raising: no PUBACK, the broker keeps every message of the batch
        if not mids:
            return mqtt.MQTT_ERR_SUCCESS
        packet = b"".join([_PUBACK.pack(PUBACK, 2, mid) for mid in mids])
        self._out_packet.append({"command": PUBACK, "mid": 0, "qos": 0, "pos": 0, "to_process": len(packet),
                                 "packet": packet, "info": None})
        return self.loop_write()  # the network thread itself: no need to wake it through paho's socket pair

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
