"""The ingest receive path's paho client: the socket read in large chunks.

The only module that touches paho's internals (``_sock_recv``, ``_sock``); pinned to paho 1.6's reading loop.
"""

from __future__ import annotations

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
