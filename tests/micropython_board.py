# Runs inside real MicroPython (tools/micropython/run.mjs), started by tests/firmware/test_micropython.py.
#
# The board's own entry point, main.py, and its hardware wiring, board.py, with stand-ins for the modules only a
# board has (machine, network, dht, ntptime, umqtt.simple) and for time (so sleeping advances a fake clock).
# Prints one JSON line prefixed RESULT with what the fake broker and pins saw.
import json
import sys

import simhw

T0_MS = 1751588016000  # 2025-07-04T00:13:36Z
real_time = __import__("time")


class Namespace:
    def __init__(self, **attrs):
        for key in attrs:
            setattr(self, key, attrs[key])


class Fake:
    ms = 0
    broker = simhw.FakeBroker()
    pins = {}
    i2c = simhw.FakeI2C()
    wdt = None
    wlan = simhw.FakeWlan(up=True)
    mqtt_args = None
    ntp_calls = 0


class Pin:
    OUT = 1
    IN = 0

    def __init__(self, pin_id, mode=None, value=None):
        if pin_id not in Fake.pins:
            Fake.pins[pin_id] = simhw.FakePin()
        self._fake = Fake.pins[pin_id]
        if value is not None:
            self._fake.value(value)

    def value(self, v=None):
        return self._fake.value(v)


def make_wdt(timeout):
    Fake.wdt = simhw.FakeWDT()
    Fake.wdt.timeout = timeout
    return Fake.wdt


class DHT22:
    def __init__(self, pin):
        self.pin = pin

    def measure(self):
        pass

    def temperature(self):
        return 18.5

    def humidity(self):
        return 41.0


def mqtt_client(client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
    Fake.mqtt_args = [client_id, server, port, user, password, keepalive, ssl]
    return simhw.FakeMQTTClient(Fake.broker)


def settime():
    Fake.ntp_calls += 1


def sleep_ms(ms):
    Fake.ms += ms


def wlan(interface):
    return Namespace(active=lambda *a: True, isconnected=Fake.wlan.isconnected, connect=Fake.wlan.connect,
                     disconnect=Fake.wlan.disconnect)


simple = Namespace(MQTTClient=mqtt_client)
sys.modules["machine"] = Namespace(Pin=Pin, I2C=lambda *a, **k: Fake.i2c, WDT=make_wdt, reset=lambda: None)
sys.modules["network"] = Namespace(STA_IF=0, WLAN=wlan)
sys.modules["dht"] = Namespace(DHT22=DHT22)
sys.modules["ntptime"] = Namespace(host=None, settime=settime)
sys.modules["umqtt"] = Namespace(simple=simple)
sys.modules["umqtt.simple"] = simple
sys.modules["time"] = Namespace(
    ticks_ms=lambda: Fake.ms, ticks_diff=lambda a, b: a - b, sleep_ms=sleep_ms, sleep=lambda s: sleep_ms(int(s * 1000)),
    time_ns=lambda: (T0_MS + Fake.ms) * 1000000, gmtime=real_time.gmtime, time=lambda: (T0_MS + Fake.ms) // 1000)

with open("/tmp/config.json", "w") as handle:
    json.dump({"device_id": "mp-board", "wifi": {"ssid": "lab", "password": "pw"},
               "mqtt": {"host": "broker.lan", "port": 1883, "tls": False},
               "control": {"target": 21.0, "min_on_s": 0, "min_off_s": 0},
               "intervals": {"loop_ms": 200, "read_s": 2, "publish_s": 2}, "watchdog_s": 30,
               "state_file": "/tmp/state.json", "home_assistant": {"discovery": True}}, handle)

import main  # noqa: E402 - after the stand-ins, as on a board after boot.py

device = main.main("/tmp/config.json", max_loops=60)
published = [[t, p.decode(), r] for (t, p, r, _q) in Fake.broker.published]
print("RESULT " + json.dumps({
    "implementation": sys.implementation.name,
    "mqtt_args": Fake.mqtt_args,
    "published": published,
    "relay_writes": Fake.pins[5].writes,
    "wdt_timeout": Fake.wdt.timeout,
    "wdt_feeds": Fake.wdt.feeds,
    "lcd_writes": len(Fake.i2c.writes),
    "ntp_calls": Fake.ntp_calls,
    "loops": device.loops,
}))
