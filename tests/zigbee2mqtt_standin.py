"""A stand-in Zigbee2MQTT bridge as a process (``python -m tests.zigbee2mqtt_standin``): the MQTT side of
Zigbee2MQTT for the devices in ``tests/zigbee2mqtt_payloads.py``.

Like Zigbee2MQTT it publishes the retained ``bridge/devices`` list, retained ``<name>/availability``, each
device's state on ``<name>`` (not retained) every ``--interval`` seconds, and applies ``<name>/set`` payloads
(``occupied_heating_setpoint`` / ``current_heating_setpoint`` / ``system_mode``) by republishing the state at once.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading

import paho.mqtt.client as mqtt

from tests import zigbee2mqtt_payloads as z2m


class Valve:
    """One radiator valve's state."""

    def __init__(self, name: str, setpoint_key: str, state: bytes) -> None:
        self.name, self.setpoint_key = name, setpoint_key
        self.state = json.loads(state)

    def apply(self, payload: bytes) -> bool:
        """Apply a ``/set`` payload; whether anything was understood."""
        try:
            data = json.loads(payload)
        except ValueError:
            return False
        changed = False
        if isinstance(data, dict) and isinstance(data.get(self.setpoint_key), int | float):
            self.state[self.setpoint_key] = data[self.setpoint_key]
            changed = True
        if isinstance(data, dict) and data.get("system_mode") in ("heat", "auto", "off"):
            self.state["system_mode"] = data["system_mode"]
            changed = True
        heating = self.state["system_mode"] != "off" and self.state["local_temperature"] < self.state[
            self.setpoint_key]
        self.state["running_state"] = "heat" if heating else "idle"
        return changed


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--base", default="zigbee2mqtt")
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args(argv)
    valves = {v.name: v for v in (Valve(z2m.VALVE_NAME, "occupied_heating_setpoint", z2m.valve_state(19.5, 20.0)),
                                  Valve(z2m.TUYA_NAME, "current_heating_setpoint", z2m.tuya_state(18.0, 21.0)))}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = mqtt.Client(client_id=f"zigbee2mqtt-standin-{args.port}", clean_session=True)
    client.will_set(f"{args.base}/bridge/state", b'{"state": "offline"}', qos=1, retain=True)
    lock = threading.Lock()

    def publish_state(valve: Valve) -> None:
        client.publish(f"{args.base}/{valve.name}", json.dumps(valve.state).encode(), qos=0)

    def on_connect(c: mqtt.Client, _u: object, _f: dict, rc: int) -> None:
        if rc != 0:
            return
        c.subscribe(f"{args.base}/#", qos=0)
        c.publish(f"{args.base}/bridge/state", b'{"state": "online"}', qos=1, retain=True)
        c.publish(f"{args.base}/bridge/devices", z2m.bridge_devices(), qos=1, retain=True)
        for name in (*valves, z2m.SENSOR_NAME):
            c.publish(f"{args.base}/{name}/availability", z2m.availability(True), qos=1, retain=True)

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        name = message.topic[len(args.base) + 1:]
        if not name.endswith("/set"):
            return
        valve = valves.get(name[:-len("/set")])
        if valve is not None:
            with lock:
                if valve.apply(message.payload):
                    publish_state(valve)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    print("started", flush=True)
    while not stop.wait(args.interval):
        with lock:
            for valve in valves.values():
                publish_state(valve)
            client.publish(f"{args.base}/{z2m.SENSOR_NAME}", z2m.sensor_state(), qos=0)
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
