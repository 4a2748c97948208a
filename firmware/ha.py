"""Home Assistant MQTT discovery: one retained ``climate`` config so the thermostat appears by itself.

Home Assistant reads the device's own contract topics (telemetry, state, status) through templates and sends
commands on ``cmd`` in the contract's JSON, with a request id made from the time in milliseconds.
"""

import json

import contract

REQUEST_ID_TEMPLATE = "ha-%s-{{ (as_timestamp(now()) * 1000000) | int }}"
"""Request id of a command from Home Assistant, per command kind: a scene renders the temperature and the mode
template in the same instant, and equal ids would make the device drop the second one as a replay."""


def discovery_topic(device_id, prefix="homeassistant"):
    """``homeassistant/climate/<id>/config``."""
    return "%s/climate/%s/config" % (prefix, contract.check_device_id(device_id))


def discovery_payload(device_id, name, topic_prefix, min_temp, max_temp, step, firmware):
    """The retained discovery config (bytes) for a heat/off climate entity."""
    def t(kind):
        return contract.topic(device_id, kind, topic_prefix)

    config = {
        "name": None,  # the entity takes the device's name
        "unique_id": "thermolog_%s" % device_id,
        "device": {"identifiers": ["thermolog_%s" % device_id], "name": name, "manufacturer": "thermolog",
                   "model": "ESP32 MicroPython thermostat", "sw_version": firmware},
        "availability_topic": t(contract.STATUS),
        "payload_available": contract.STATUS_ONLINE,
        "payload_not_available": contract.STATUS_OFFLINE,
        "qos": contract.QOS[contract.CMD],
        "modes": list(contract.MODES),
        "mode_command_topic": t(contract.CMD),
        "mode_command_template": '{"request_id": "%s", "mode": "{{ value }}"}' % (REQUEST_ID_TEMPLATE % "mode"),
        "mode_state_topic": t(contract.STATE),
        "mode_state_template": "{{ value_json.mode }}",
        "temperature_command_topic": t(contract.CMD),
        "temperature_command_template": ('{"request_id": "%s", "target_temp": {{ value }}}'
                                         % (REQUEST_ID_TEMPLATE % "temp")),
        "temperature_state_topic": t(contract.STATE),
        "temperature_state_template": "{{ value_json.target_temp }}",
        "current_temperature_topic": t(contract.TELEMETRY),
        "current_temperature_template": "{{ value_json.temperature }}",
        "current_humidity_topic": t(contract.TELEMETRY),
        "current_humidity_template": "{{ value_json.humidity }}",
        "action_topic": t(contract.TELEMETRY),
        "action_template": "{{ 'heating' if value_json.heating == 'ON' else 'idle' }}",
        "min_temp": min_temp,
        "max_temp": max_temp,
        "temp_step": step,
        "precision": 0.1,
        "temperature_unit": "C",
    }
    return json.dumps(config).encode()
