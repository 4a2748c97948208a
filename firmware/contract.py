"""The MQTT contract as the firmware speaks it: a mirror of ``thermolog/contract.py`` for MicroPython.

Only constants and small payload builders live here; ``tests/firmware/test_contract.py`` checks every constant
against the core contract and parses the payloads built here with it, so the two cannot drift apart.
"""

import json

DEFAULT_TOPIC_PREFIX = "thermostats"

DEVICE_ID_MAX = 64
DEVICE_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

# Sub-topics below thermostats/{device_id}/ and their QoS / retain flags.
TELEMETRY = "telemetry"
STATUS = "status"
STATE = "state"
CMD = "cmd"
CMD_ACK = "cmd/ack"
SCHEDULE_POINTS = "schedule/points"

QOS = {TELEMETRY: 1, STATUS: 1, STATE: 1, CMD: 1, CMD_ACK: 1, SCHEDULE_POINTS: 1}
RETAIN = {TELEMETRY: False, STATUS: True, STATE: True, CMD: False, CMD_ACK: False, SCHEDULE_POINTS: True}

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
HEATING_ON = "ON"
HEATING_OFF = "OFF"

MODE_HEAT = "heat"
MODE_OFF = "off"
MODES = (MODE_HEAT, MODE_OFF)

# Payload keys, in the order the seed device sends them.
TELEMETRY_KEYS = ("temperature", "timestamp", "humidity", "target_temp", "device_id", "heating")
COMMAND_KEYS = ("request_id", "target_temp", "issued_by", "mode")
ACK_KEYS = ("request_id", "ok", "target_temp", "error", "mode")
STATE_KEYS = ("target_temp", "mode", "hysteresis", "firmware")
REQUEST_ID_MAX = 64

REQUEST_ID_UNKNOWN = "unknown"
"""Request id of the error ack for a command whose own request id could not be read."""


def check_device_id(device_id):
    """Return ``device_id`` if it matches ``[A-Za-z0-9_-]{1,64}``, else raise ValueError."""
    if not isinstance(device_id, str) or not 1 <= len(device_id) <= DEVICE_ID_MAX:
        raise ValueError("device_id must be 1-64 characters of A-Z a-z 0-9 _ -")
    for char in device_id:
        if char not in DEVICE_ID_CHARS:
            raise ValueError("device_id %r has a character outside A-Z a-z 0-9 _ -" % device_id)
    return device_id


def topic(device_id, kind, prefix=DEFAULT_TOPIC_PREFIX):
    """Topic for one device, e.g. ``thermostats/esp32c3-01/cmd/ack``."""
    return "%s/%s/%s" % (prefix, check_device_id(device_id), kind)


def _object(pairs):
    # Built by hand so the key order is the seed's on every port (MicroPython dicts keep no insertion order).
    return "{" + ", ".join(json.dumps(key) + ": " + json.dumps(value) for key, value in pairs) + "}"


def _round(value, digits):
    value = round(float(value), digits)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value


def telemetry(device_id, temperature, humidity, target_temp, heating, timestamp):
    """The telemetry payload (bytes) exactly as the contract wants it; ``humidity`` may be None."""
    pairs = [("temperature", _round(temperature, 2)), ("timestamp", timestamp)]
    if humidity is not None:
        pairs.append(("humidity", _round(humidity, 1)))
    pairs.append(("target_temp", _round(target_temp, 2)))
    pairs.append(("device_id", device_id))
    pairs.append(("heating", HEATING_ON if heating else HEATING_OFF))
    return _object(pairs).encode()


def ack(request_id, ok, target_temp=None, error=None, mode=None):
    """A ``cmd/ack`` payload (bytes): ``ok`` true with the target and mode in force, or false with ``error``."""
    pairs = [("request_id", request_id), ("ok", bool(ok))]
    if target_temp is not None:
        pairs.append(("target_temp", _round(target_temp, 2)))
    if error is not None:
        pairs.append(("error", error))
    if mode is not None:
        pairs.append(("mode", mode))
    return _object(pairs).encode()


def state(target_temp, mode, hysteresis, firmware, extra=None):
    """The retained ``state`` payload (bytes); ``extra`` is a list of further (key, value) pairs."""
    pairs = [("target_temp", _round(target_temp, 2)), ("mode", mode), ("hysteresis", _round(hysteresis, 2)),
             ("firmware", firmware)]
    if extra:
        pairs.extend(extra)
    return _object(pairs).encode()
