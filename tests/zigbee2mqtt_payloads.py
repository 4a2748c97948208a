"""Zigbee2MQTT payloads shaped as Zigbee2MQTT 1.x/2.x publishes them (its docs: "MQTT Topics and Messages",
"Exposes", and the device pages' climate section), for the tests and the stand-in bridge.

- ``<base>/bridge/devices`` (retained): a list of every device; the coordinator has ``definition: null``; a
  thermostat's ``definition.exposes`` holds a ``{"type": "climate", "features": [...]}`` entry whose numeric and
  enum features name the state properties and their limits.
- ``<base>/<friendly_name>``: the device's state as one JSON object (no timestamp unless configured).
- ``<base>/<friendly_name>/availability``: ``{"state": "online"}`` / ``{"state": "offline"}``.
"""

from __future__ import annotations

import json

VALVE_NAME = "Living room/Radiator valve"
"""A friendly name with a space, capitals and a ``/``, as users structure theirs."""
TUYA_NAME = "bedroom_trv"
SENSOR_NAME = "Kitchen sensor"
VALVE_IEEE = "0x847127fffe2c7b2a"


def _numeric(name: str, access: int, unit: str, description: str, **limits: float) -> dict:
    return {"type": "numeric", "name": name, "label": name.replace("_", " ").capitalize(), "property": name,
            "access": access, "unit": unit, "description": description, **limits}


def _enum(name: str, access: int, values: list[str], description: str) -> dict:
    return {"type": "enum", "name": name, "label": name.replace("_", " ").capitalize(), "property": name,
            "access": access, "values": values, "description": description}


VALVE_DEFINITION = {
    "model": "014G2461", "vendor": "Danfoss", "description": "Ally thermostat",
    "supports_ota": True, "options": [],
    "exposes": [
        {"type": "numeric", "name": "battery", "label": "Battery", "property": "battery", "access": 5,
         "unit": "%", "value_min": 0, "value_max": 100, "description": "Remaining battery in %"},
        {"type": "climate", "features": [
            _numeric("occupied_heating_setpoint", 7, "°C", "Temperature setpoint", value_min=5, value_max=35,
                     value_step=0.5),
            _numeric("local_temperature", 5, "°C", "Current temperature measured on the device"),
            _enum("system_mode", 7, ["heat"], "Mode of this device"),
            _enum("running_state", 5, ["idle", "heat"], "The current running state"),
            _numeric("pi_heating_demand", 5, "%", "Position of the valve (= demanded heat)", value_min=0,
                     value_max=100),
        ]},
        _numeric("linkquality", 1, "lqi", "Link quality (signal strength)", value_min=0, value_max=255),
    ],
}
TUYA_DEFINITION = {
    "model": "TS0601_thermostat", "vendor": "Tuya", "description": "Radiator valve with thermostat",
    "supports_ota": False, "options": [],
    "exposes": [
        {"type": "climate", "features": [
            _numeric("current_heating_setpoint", 7, "°C", "Temperature setpoint", value_min=5, value_max=30,
                     value_step=0.5),
            _numeric("local_temperature", 1, "°C", "Current temperature measured on the device"),
            _enum("system_mode", 7, ["heat", "auto", "off"], "Mode of this device"),
            _enum("running_state", 1, ["idle", "heat"], "The current running state"),
        ]},
    ],
}
SENSOR_DEFINITION = {
    "model": "WSDCGQ11LM", "vendor": "Aqara", "description": "Temperature and humidity sensor",
    "supports_ota": False, "options": [],
    "exposes": [
        _numeric("temperature", 1, "°C", "Measured temperature value"),
        _numeric("humidity", 1, "%", "Measured relative humidity"),
        _numeric("battery", 1, "%", "Remaining battery in %", value_min=0, value_max=100),
    ],
}


def _device(ieee: str, name: str, kind: str, definition: dict | None, power: str | None) -> dict:
    return {"ieee_address": ieee, "type": kind, "network_address": int(ieee[-4:], 16), "supported": True,
            "disabled": False, "friendly_name": name, "description": None, "definition": definition,
            "power_source": power, "model_id": definition["model"] if definition else None,
            "interview_completed": True, "interviewing": False, "endpoints": {}}


def bridge_devices() -> bytes:
    """The retained ``bridge/devices`` list: coordinator, two valves, one plain sensor."""
    return json.dumps([
        _device("0x00124b0024c2bd4e", "Coordinator", "Coordinator", None, None),
        _device(VALVE_IEEE, VALVE_NAME, "EndDevice", VALVE_DEFINITION, "Battery"),
        _device("0xa4c1380f2d5e9b11", TUYA_NAME, "EndDevice", TUYA_DEFINITION, "Battery"),
        _device("0x00158d0007e4a1c3", SENSOR_NAME, "EndDevice", SENSOR_DEFINITION, "Battery"),
    ]).encode()


def valve_state(local_temperature: float, setpoint: float, running: str = "idle", mode: str = "heat") -> bytes:
    """A Danfoss Ally's state message."""
    return json.dumps({"battery": 87, "linkquality": 120, "local_temperature": local_temperature,
                       "occupied_heating_setpoint": setpoint, "pi_heating_demand": 40 if running == "heat" else 0,
                       "running_state": running, "system_mode": mode}).encode()


def tuya_state(local_temperature: float, setpoint: float, running: str = "heat", mode: str = "heat") -> bytes:
    """A Tuya TS0601 valve's state message (``current_heating_setpoint``)."""
    return json.dumps({"battery": 64, "child_lock": "UNLOCK", "current_heating_setpoint": setpoint,
                       "linkquality": 72, "local_temperature": local_temperature, "running_state": running,
                       "system_mode": mode}).encode()


def sensor_state() -> bytes:
    """A temperature sensor's state: no setpoint, so no thermostat."""
    return json.dumps({"battery": 91, "humidity": 47.3, "linkquality": 96, "temperature": 21.4,
                       "voltage": 2985}).encode()


def availability(online: bool) -> bytes:
    """``<friendly_name>/availability`` as Zigbee2MQTT 1.22+ publishes it."""
    return json.dumps({"state": "online" if online else "offline"}).encode()
