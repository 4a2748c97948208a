"""Device configuration: defaults, loading ``config.json`` over them, and checks that name the key and the rule.

Every key the firmware reads is listed in ``DEFAULTS`` with its default; an unknown key is an error, so a typo
never silently falls back to a default.
"""

import json

import contract

SENSOR_KINDS = ("dht22", "aht20", "sht31")

DEFAULTS = {
    "device_id": "esp32c3-01",
    "wifi": {"ssid": "", "password": "", "connect_timeout_s": 20, "retry_s": 10},
    "mqtt": {
        "host": "",
        "port": 8883,
        "tls": True,
        "ca_file": "ca.der",        # DER file of the CA that signs the broker's certificate (on the board's flash)
        "username": None,
        "password": None,
        "keepalive_s": 60,
        "topic_prefix": contract.DEFAULT_TOPIC_PREFIX,
        "backoff_min_s": 1,
        "backoff_max_s": 60,
    },
    "ntp": {"host": "pool.ntp.org", "resync_s": 21600, "retry_s": 60},
    "pins": {"sensor": 4, "i2c_sda": 8, "i2c_scl": 9, "i2c_freq": 100000, "relay": 5, "relay_active_high": True,
             "led": None},
    "sensor": {"kind": "dht22", "i2c_address": None, "stale_after_s": 60},
    "lcd": {"enabled": True, "i2c_address": 39, "cols": 16, "rows": 2},
    "control": {"target": 21.0, "hysteresis": 0.5, "min_on_s": 60, "min_off_s": 60, "min_target": 5.0,
                "max_target": 35.0, "step": 0.5},
    "intervals": {"loop_ms": 200, "read_s": 5, "publish_s": 30, "drain_per_loop": 10},
    "buffer": {"max_readings": 120},
    "watchdog_s": 60,
    "state_file": "state.json",
    "home_assistant": {"discovery": False, "prefix": "homeassistant", "name": "Thermostat"},
}


class ConfigError(ValueError):
    """A configuration value that breaks a rule; the message names the key."""


def merge(base, override, path=""):
    """A copy of ``base`` with ``override`` laid over it; unknown keys raise ConfigError."""
    result = {}
    for key in base:
        # Nested sections are copied, so changing a loaded config never changes DEFAULTS.
        result[key] = merge(base[key], {}, path + key + ".") if isinstance(base[key], dict) else base[key]
    for key in override:
        name = path + key
        if key not in base:
            raise ConfigError("%s: unknown key (known: %s)" % (name, ", ".join(sorted(base))))
        value = override[key]
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError("%s: must be an object" % name)
            value = merge(base[key], value, name + ".")
        result[key] = value
    return result


def _number(cfg, section, key, low=None, high=None):
    value = cfg[section][key] if section else cfg[key]
    name = (section + "." if section else "") + key
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("%s: must be a number, got %r" % (name, value))
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError("%s: must be within %s..%s, got %r" % (name, low, high, value))
    return value


def _text(cfg, section, key, allow_empty=False, allow_none=False):
    value = cfg[section][key]
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ConfigError("%s.%s: must be a non-empty string, got %r" % (section, key, value))
    return value


def _flag(cfg, section, key):
    if not isinstance(cfg[section][key], bool):
        raise ConfigError("%s.%s: must be true or false" % (section, key))


def validate(cfg, on_board=True):
    """Check every rule; returns ``cfg`` or raises ConfigError naming the key.

    ``on_board`` adds the rules only a board needs (Wi-Fi, a CA file for TLS); the host run has neither.
    """
    try:
        contract.check_device_id(cfg["device_id"])
    except ValueError as exc:
        raise ConfigError("device_id: %s" % exc)
    _validate_network(cfg, on_board)
    _text(cfg, "ntp", "host")
    _number(cfg, "ntp", "resync_s", 60)
    _number(cfg, "ntp", "retry_s", 1)
    _validate_hardware(cfg)
    ctl = cfg["control"]
    _number(cfg, "control", "hysteresis", 0, 10)
    _number(cfg, "control", "min_on_s", 0, 3600)
    _number(cfg, "control", "min_off_s", 0, 3600)
    _number(cfg, "control", "min_target", -20, 60)
    _number(cfg, "control", "max_target", ctl["min_target"], 60)
    _number(cfg, "control", "step", 0.01, 5)
    _number(cfg, "control", "target", ctl["min_target"], ctl["max_target"])
    _number(cfg, "intervals", "loop_ms", 20, 5000)
    # The DHT22 needs two seconds between measurements.
    _number(cfg, "intervals", "read_s", 2 if cfg["sensor"]["kind"] == "dht22" else 1, 3600)
    _number(cfg, "intervals", "publish_s", cfg["intervals"]["read_s"], 86400)
    _number(cfg, "intervals", "drain_per_loop", 1, 100)
    _number(cfg, "buffer", "max_readings", 1, 2000)
    _number(cfg, None, "watchdog_s", 0, 3600)
    if 0 < cfg["watchdog_s"] < 10:
        raise ConfigError("watchdog_s: 0 (off) or at least 10, got %r" % cfg["watchdog_s"])
    if not isinstance(cfg["state_file"], str) or not cfg["state_file"]:
        raise ConfigError("state_file: must be a file name")
    _flag(cfg, "home_assistant", "discovery")
    _text(cfg, "home_assistant", "prefix")
    _text(cfg, "home_assistant", "name")
    return cfg


def _validate_network(cfg, on_board):
    """Wi-Fi and MQTT keys."""
    if on_board:
        _text(cfg, "wifi", "ssid")
    _text(cfg, "wifi", "password", allow_empty=True)
    _number(cfg, "wifi", "connect_timeout_s", 1, 300)
    _number(cfg, "wifi", "retry_s", 0, 3600)
    _text(cfg, "mqtt", "host")
    _number(cfg, "mqtt", "port", 1, 65535)
    _flag(cfg, "mqtt", "tls")
    _text(cfg, "mqtt", "ca_file", allow_none=True)
    _text(cfg, "mqtt", "username", allow_none=True)
    _text(cfg, "mqtt", "password", allow_empty=True, allow_none=True)
    if on_board and cfg["mqtt"]["tls"] and not cfg["mqtt"]["ca_file"]:
        raise ConfigError("mqtt.ca_file: TLS needs the broker's CA certificate (DER) on the board")
    if (cfg["mqtt"]["username"] is None) != (cfg["mqtt"]["password"] is None):
        raise ConfigError("mqtt.username and mqtt.password: give both or neither")
    _number(cfg, "mqtt", "keepalive_s", 0, 65535)
    _text(cfg, "mqtt", "topic_prefix")
    _number(cfg, "mqtt", "backoff_min_s", 0.1, 3600)
    _number(cfg, "mqtt", "backoff_max_s", cfg["mqtt"]["backoff_min_s"], 3600)


def _validate_hardware(cfg):
    """Pins, sensor and display keys."""
    for key in ("sensor", "i2c_sda", "i2c_scl", "relay"):
        _number(cfg, "pins", key, 0, 48)
    if cfg["pins"]["led"] is not None:
        _number(cfg, "pins", "led", 0, 48)
    _number(cfg, "pins", "i2c_freq", 10000, 1000000)
    _flag(cfg, "pins", "relay_active_high")
    if cfg["sensor"]["kind"] not in SENSOR_KINDS:
        raise ConfigError("sensor.kind: must be one of %s, got %r" % (", ".join(SENSOR_KINDS), cfg["sensor"]["kind"]))
    if cfg["sensor"]["i2c_address"] is not None:
        _number(cfg, "sensor", "i2c_address", 8, 119)
    _number(cfg, "sensor", "stale_after_s", 1)
    _flag(cfg, "lcd", "enabled")
    _number(cfg, "lcd", "i2c_address", 8, 119)
    _number(cfg, "lcd", "cols", 8, 40)
    _number(cfg, "lcd", "rows", 1, 4)


def load(path="config.json", on_board=True):
    """Read ``path`` (JSON) over the defaults and validate it."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ConfigError("%s: cannot read (%s); copy config.json onto the board" % (path, exc))
    except ValueError as exc:
        raise ConfigError("%s: not valid JSON (%s)" % (path, exc))
    if not isinstance(data, dict):
        raise ConfigError("%s: must hold a JSON object" % path)
    return validate(merge(DEFAULTS, data), on_board)
