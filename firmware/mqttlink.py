"""A resilient MQTT connection around ``umqtt.simple.MQTTClient``: reconnect with backoff, keepalive pings.

``umqtt.simple`` raises on any socket problem and never reconnects; this wrapper turns every failure into
"link down", closes the socket, and reconnects later with exponential backoff, all without blocking the control
loop for longer than one connection attempt. A fresh client comes from ``factory()`` on every attempt.
"""


class MqttLink:
    """Connection state machine; the device calls ``ensure(now)`` and ``poll(now)`` once per loop.

    ``on_connect(link)`` runs right after each successful connect (publish status, state, subscribe); if it
    raises, the connection counts as failed. ``on_message(topic, payload)`` receives bytes.
    """

    def __init__(self, factory, will_topic, will_payload, on_connect, on_message, keepalive_s=60,
                 backoff_min_s=1, backoff_max_s=60, log=None):
        self._factory = factory
        self._will = (will_topic, will_payload)
        self._on_connect = on_connect
        self._on_message = on_message
        self.keepalive_s = keepalive_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self._log = log or (lambda msg: None)
        self.client = None
        self.connected = False
        self.connects = 0
        self.failures = 0
        self._backoff = backoff_min_s
        self._next_attempt = 0.0
        self._last_ping = 0.0

    def ensure(self, now):
        """Connect if down and the backoff allows it; returns True when connected."""
        if self.connected:
            return True
        if now < self._next_attempt:
            return False
        client = None
        try:
            client = self._factory()
            client.set_callback(self._on_message)
            client.set_last_will(self._will[0], self._will[1], retain=True, qos=1)
            client.connect(clean_session=True)
            self.client = client
            self.connected = True
            self._on_connect(self)
        except Exception as exc:  # noqa: BLE001 - any failure (DNS, TLS, refused, assert in umqtt) means retry later
            self._log("mqtt: connect failed: %r; retry in %ss" % (exc, self._backoff))
            self._drop(client)
            self._next_attempt = now + self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_max_s)
            return False
        self.connects += 1
        self._backoff = self.backoff_min_s
        self._last_ping = now
        self._log("mqtt: connected")
        return True

    def _drop(self, client):
        self.connected = False
        self.client = None
        if client is not None:
            try:
                client.sock.close() if getattr(client, "sock", None) is not None else client.disconnect()
            except Exception:  # noqa: BLE001 - the socket is already gone
                pass

    def down(self, now, exc=None):
        """Mark the link broken after an error; the next ``ensure`` after the backoff reconnects."""
        if self.connected:
            self.failures += 1
            self._log("mqtt: link lost: %r" % (exc,))
        self._drop(self.client)
        self._next_attempt = now + self._backoff

    def publish(self, topic, payload, qos, retain, now=0.0):
        """Publish; returns False (and marks the link down) when it fails."""
        if not self.connected:
            return False
        try:
            self.client.publish(topic, payload, retain=retain, qos=qos)
        except Exception as exc:  # noqa: BLE001 - OSError from the socket, or umqtt's asserts on garbage
            self.down(now, exc)
            return False
        return True

    def subscribe(self, topic, qos):
        """Subscribe (inside ``on_connect``; an error there fails the connection)."""
        self.client.subscribe(topic, qos)

    def poll(self, now, max_messages=5):
        """Deliver waiting messages (at most ``max_messages``) and keep the connection alive with pings."""
        if not self.connected:
            return
        try:
            for _ in range(max_messages):
                if self.client.check_msg() is None:
                    break
            if self.keepalive_s and now - self._last_ping >= self.keepalive_s / 2:
                self.client.ping()
                self._last_ping = now
        except Exception as exc:  # noqa: BLE001 - see publish
            self.down(now, exc)

    def close(self, status_topic=None, payload=None):
        """Optionally publish a last status, then disconnect cleanly (shutdown)."""
        if not self.connected:
            return
        try:
            if status_topic is not None:
                self.client.publish(status_topic, payload, retain=True, qos=1)
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass
        self.connected = False
        self.client = None
