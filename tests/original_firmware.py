"""A stand-in for a thermostat running the original system's firmware, as a process (``python -m
tests.original_firmware``).

The seed ships the original README only, not the firmware's code, so this reproduces the behaviour issue 14 and
the README describe: QoS 0, no last will, no acknowledgement; every ``--interval`` seconds a reading on
``<prefix>/<id>/status`` (``{"device_id", "timestamp" (whole seconds, Z), "temperature", "humidity", "heating":
"ON"/"OFF", "target_temp"}``); on ``<prefix>/<id>/cmd`` exactly ``{"cmd": "set", "value": v}`` (applies
``int(v)`` within its min/max, default 10-35), ``{"cmd": "increase"}`` and ``{"cmd": "decrease"}`` (±1 °C). The
only confirmation is ``target_temp`` in its next reading.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from datetime import UTC, datetime

import paho.mqtt.client as mqtt


class OriginalThermostat:
    """The original firmware's command handling and reading, without the network."""

    def __init__(self, device_id: str, target: int = 25, min_temp: int = 10, max_temp: int = 35,
                 temperature: float = 20.0) -> None:
        self.device_id, self.target, self.min_temp, self.max_temp = device_id, target, min_temp, max_temp
        self.temperature = temperature

    def on_command(self, payload: bytes) -> None:
        """Apply a command the way the original does; anything else is ignored (it answers nothing)."""
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if data.get("cmd") == "set":
            try:
                value = int(data.get("value"))
            except (TypeError, ValueError):
                return
            self.target = max(self.min_temp, min(self.max_temp, value))
        elif data.get("cmd") == "increase":
            self.target = min(self.max_temp, self.target + 1)
        elif data.get("cmd") == "decrease":
            self.target = max(self.min_temp, self.target - 1)

    def reading(self) -> bytes:
        """The status payload, keys in the original's order."""
        heating = self.temperature < self.target
        self.temperature += 0.1 if heating else -0.1
        return json.dumps({
            "device_id": self.device_id,
            "timestamp": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            "temperature": round(self.temperature, 1), "humidity": 44.9, "heating": "ON" if heating else "OFF",
            "target_temp": self.target,
        }).encode()


def main(argv: list[str] | None = None) -> int:
    """Publish readings and obey commands until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--device-id", default="esp32c3-01")
    parser.add_argument("--prefix", default="iot")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--target", type=int, default=25)
    args = parser.parse_args(argv)
    device = OriginalThermostat(args.device_id, args.target)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = mqtt.Client(client_id=args.device_id, clean_session=True)

    def on_connect(c: mqtt.Client, _u: object, _f: dict, rc: int) -> None:
        if rc == 0:
            c.subscribe(f"{args.prefix}/{args.device_id}/cmd", qos=0)

    client.on_connect = on_connect
    client.on_message = lambda _c, _u, message: device.on_command(message.payload)
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    print("started", flush=True)
    while not stop.wait(args.interval):
        client.publish(f"{args.prefix}/{args.device_id}/status", device.reading(), qos=0)
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
