"""Stand-ins for the board's hardware and network, for the host run and the tests (CPython and MicroPython).

Not copied to the board. Each fake has the interface of the real thing the firmware uses: ``machine.Pin.value``,
``machine.I2C.readfrom/writeto``, ``network.WLAN``, ``machine.WDT.feed`` and ``umqtt.simple.MQTTClient``.
"""

import sensors


class ManualTicks:
    """A millisecond tick counter the test advances by hand (``time.ticks_ms``/``ticks_diff`` stand-in)."""

    def __init__(self, start_ms=0):
        self.ms = start_ms

    def ticks_ms(self):
        return self.ms

    def ticks_diff(self, a, b):
        return a - b

    def advance(self, seconds):
        self.ms += int(seconds * 1000)


class FakePin:
    """Records every value written."""

    def __init__(self, value=0):
        self._value = value
        self.writes = []

    def value(self, v=None):
        if v is None:
            return self._value
        self._value = v
        self.writes.append(v)


class FakeSensor:
    """Returns ``(temperature, humidity)``; set ``temperature`` to None to make it fail like a dead sensor."""

    def __init__(self, temperature=20.0, humidity=45.0):
        self.temperature = temperature
        self.humidity = humidity
        self.reads = 0

    def read(self):
        self.reads += 1
        if self.temperature is None:
            raise OSError("ETIMEDOUT")
        return self.temperature, self.humidity


class FakeI2C:
    """Records writes; ``readfrom`` answers from ``responder(address, nbytes)``."""

    def __init__(self, responder=None):
        self.writes = []
        self._responder = responder

    def writeto(self, address, data):
        self.writes.append((address, bytes(data)))
        return len(data)

    def readfrom(self, address, nbytes):
        if self._responder is None:
            raise OSError(19)  # ENODEV: nothing answers on the bus
        return self._responder(address, nbytes)


def aht20_frame(temperature, humidity, status=0x18, corrupt=False):
    """The 7 bytes an AHT20 returns for these values (status, 20-bit humidity, 20-bit temperature, CRC)."""
    raw_h = int(humidity * 1048576 / 100 + 0.5)
    raw_t = int((temperature + 50) * 1048576 / 200 + 0.5)
    data = bytearray([status, (raw_h >> 12) & 0xFF, (raw_h >> 4) & 0xFF,
                      ((raw_h & 0x0F) << 4) | ((raw_t >> 16) & 0x0F), (raw_t >> 8) & 0xFF, raw_t & 0xFF])
    crc = sensors.crc8(data)
    data.append(crc ^ 0x01 if corrupt else crc)
    return bytes(data)


def sht31_frame(temperature, humidity, corrupt=False):
    """The 6 bytes an SHT31 returns for these values (each 16-bit word followed by its CRC)."""
    raw_t = int((temperature + 45) * 65535 / 175 + 0.5)
    raw_h = int(humidity * 65535 / 100 + 0.5)
    out = bytearray()
    for raw in (raw_t, raw_h):
        word = bytes([raw >> 8, raw & 0xFF])
        out.extend(word)
        out.append(sensors.crc8(word))
    if corrupt:
        out[5] ^= 0x01
    return bytes(out)


class FakeWlan:
    """``network.WLAN`` stand-in: ``up`` decides whether ``connect`` succeeds."""

    def __init__(self, up=True):
        self.up = up
        self._connected = False
        self.connects = 0

    def isconnected(self):
        return self._connected and self.up

    def connect(self, ssid, password):
        self.connects += 1
        self._connected = self.up

    def disconnect(self):
        self._connected = False


class FakeWDT:
    """Counts feeds."""

    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class FakeBroker:
    """An in-memory broker for ``FakeMQTTClient``s: keeps what was published, delivers to subscribers.

    ``drop()`` breaks every connection (and publishes their last wills); while ``up`` is False, connects fail.
    ``keep`` bounds the publish log (memory measurements run thousands of loops).
    """

    def __init__(self, keep=None):
        self.up = True
        self.keep = keep
        self.published = []  # (topic, payload, retain, qos)
        self.retained = {}
        self.clients = []
        self.total = 0

    def factory(self):
        """The ``mqtt_factory`` a Device takes: a fresh client per connection attempt."""
        return FakeMQTTClient(self)

    def _record(self, topic, payload, retain, qos):
        self.total += 1
        self.published.append((topic, payload, retain, qos))
        if self.keep is not None and len(self.published) > self.keep:
            self.published.pop(0)
        if retain:
            self.retained[topic] = payload
        for client in self.clients:
            client._offer(topic, payload)

    def deliver(self, topic, payload):
        """Publish from outside (as the app would) to every subscribed client."""
        self._record(topic, payload, False, 1)

    def drop(self):
        """The broker goes away: every connection breaks and its last will is published."""
        self.up = False
        for client in list(self.clients):
            client.alive = False
            if client.will is not None:
                self._record(*client.will)
        self.clients = []

    def restore(self):
        """The broker is back."""
        self.up = True

    def on(self, topic):
        """Payloads published on ``topic``, oldest first."""
        return [p for (t, p, _r, _q) in self.published if t == topic]


class FakeMQTTClient:
    """``umqtt.simple.MQTTClient`` stand-in talking to a FakeBroker."""

    sock = None

    def __init__(self, broker):
        self.broker = broker
        self.cb = None
        self.will = None
        self.alive = False
        self.subs = []
        self.inbox = []

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, msg, retain, qos)

    def connect(self, clean_session=True):
        if not self.broker.up:
            raise OSError(113)  # ECONNABORTED, as a refused TCP connect looks on the board
        self.alive = True
        self.broker.clients.append(self)
        return 0

    def _check(self):
        if not self.alive:
            raise OSError(-1)

    def _offer(self, topic, payload):
        if topic in self.subs:
            self.inbox.append((topic.encode(), payload if isinstance(payload, bytes) else payload.encode()))

    def publish(self, topic, msg, retain=False, qos=0):
        self._check()
        self.broker._record(topic, msg, retain, qos)

    def subscribe(self, topic, qos=0):
        self._check()
        self.subs.append(topic)

    def check_msg(self):
        self._check()
        if not self.inbox:
            return None
        topic, payload = self.inbox.pop(0)
        self.cb(topic, payload)
        return 0x30

    def ping(self):
        self._check()

    def disconnect(self):
        self.alive = False
        if self in self.broker.clients:
            self.broker.clients.remove(self)
