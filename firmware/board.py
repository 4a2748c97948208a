"""Builds the real parts on an ESP32 from the configuration: pins, I2C, sensor, LCD, Wi-Fi, MQTT, NTP, watchdog.

The only firmware module that imports hardware modules (``machine``, ``network``, ``dht``, ``ntptime``,
``umqtt.simple``, ``ssl``); everything else gets these parts passed in.
"""

import time

import clock
import lcd
import machine
import network
import ntptime
import outputs
import sensors
import wifi


def _i2c(cfg):
    pins = cfg["pins"]
    return machine.I2C(0, scl=machine.Pin(pins["i2c_scl"]), sda=machine.Pin(pins["i2c_sda"]), freq=pins["i2c_freq"])


def make_sensor(cfg, i2c):
    """The configured sensor driver."""
    kind = cfg["sensor"]["kind"]
    if kind == "dht22":
        import dht

        return sensors.make_sensor(kind, pin=machine.Pin(cfg["pins"]["sensor"]), dht_module=dht)
    return sensors.make_sensor(kind, i2c=i2c, sleep_ms=time.sleep_ms, address=cfg["sensor"]["i2c_address"])


def make_relay(cfg):
    """The heater relay (and optional LED) pins, switched OFF before anything else happens."""
    pins = cfg["pins"]
    off = 0 if pins["relay_active_high"] else 1
    relay_pin = machine.Pin(pins["relay"], machine.Pin.OUT, value=off)
    led = machine.Pin(pins["led"], machine.Pin.OUT, value=0) if pins["led"] is not None else None
    return outputs.Relay(relay_pin, pins["relay_active_high"], led)


def make_display(cfg, i2c, log):
    """The LCD, or None when disabled or not found on the bus (the thermostat works without it)."""
    conf = cfg["lcd"]
    if not conf["enabled"]:
        return None
    try:
        return lcd.Display(lcd.HD44780(i2c, conf["i2c_address"], conf["cols"], conf["rows"], time.sleep_ms))
    except OSError as exc:
        log("lcd: not found at 0x%02x (%s); running without it" % (conf["i2c_address"], exc))
        return None


def make_wifi(cfg, log):
    """The Wi-Fi station (switched on, not yet connected)."""
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    conf = cfg["wifi"]
    return wifi.Wifi(wlan, conf["ssid"], conf["password"], conf["connect_timeout_s"], conf["retry_s"], log)


def _ssl_context(ca_file):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    # The CA is read as DER bytes, the one form every mbedtls build of MicroPython takes as cadata
    # (convert a PEM file with: openssl x509 -in ca.crt -outform DER -out ca.der).
    with open(ca_file, "rb") as handle:
        ctx.load_verify_locations(cadata=handle.read())
    return ctx


def mqtt_factory(cfg):
    """A function returning a fresh ``umqtt.simple.MQTTClient`` per connection attempt (TLS with the CA file)."""
    from umqtt.simple import MQTTClient

    conf = cfg["mqtt"]
    ctx = _ssl_context(conf["ca_file"]) if conf["tls"] else None

    def factory():
        return MQTTClient(cfg["device_id"], conf["host"], port=conf["port"], user=conf["username"],
                          password=conf["password"], keepalive=conf["keepalive_s"], ssl=ctx)

    return factory


def unix_ms():
    """The RTC as integer Unix milliseconds, whichever epoch the port counts from."""
    now = time.time_ns() // 1000000
    return now + clock.UNIX_2000 * 1000 if time.gmtime(0)[0] == 2000 else now


def make_clock(cfg):
    """Monotonic ticks plus NTP (``ntptime``) for wall time."""
    ntptime.host = cfg["ntp"]["host"]
    return clock.Clock(time.ticks_ms, time.ticks_diff, unix_ms, ntptime.settime,
                       resync_s=cfg["ntp"]["resync_s"], retry_s=cfg["ntp"]["retry_s"])


def make_watchdog(cfg):
    """The hardware watchdog (None when ``watchdog_s`` is 0); once started it cannot be stopped."""
    if not cfg["watchdog_s"]:
        return None
    return machine.WDT(timeout=int(cfg["watchdog_s"] * 1000))


def build(cfg, log):
    """Every part ``device.Device`` takes, as keyword arguments."""
    relay = make_relay(cfg)  # first: the heater is OFF from the earliest moment
    i2c = _i2c(cfg) if cfg["sensor"]["kind"] != "dht22" or cfg["lcd"]["enabled"] else None
    return {
        "sensor": make_sensor(cfg, i2c),
        "relay": relay,
        "clock": make_clock(cfg),
        "mqtt_factory": mqtt_factory(cfg),
        "wifi": make_wifi(cfg, log),
        "display": make_display(cfg, i2c, log),
        "watchdog": make_watchdog(cfg),
    }
