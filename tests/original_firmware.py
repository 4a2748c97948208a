"""A thermostat running the original system's firmware as a process: ``python -m tests.original_firmware``.

The MicroPython program (``tests/original_firmware_mp.py``) runs unchanged; ``firmware.host_run``'s umqtt
stand-in (paho underneath) is its ``umqtt.robust.MQTTClient``, connected to ``THERMOLOG_MQTT_URL``.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import threading
import time

from firmware.host_run import PahoUmqttClient
from tests import original_firmware_mp
from thermolog.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    """Publish readings and obey commands until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--device-id", default="esp32c3-01")
    parser.add_argument("--prefix", default="iot")
    parser.add_argument("--interval", type=float, default=5.0, help="read_interval (s)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = PahoUmqttClient(args.device_id, get_settings())
    print("started", flush=True)
    clock = original_firmware_mp.iso_now
    if args.interval < 1:  # faster than the board's 1 s clock resolution: one second per reading, never a repeat
        seconds = itertools.count(int(time.time()))
        clock = lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(next(seconds)))  # noqa: E731
    original_firmware_mp.run(client, args.device_id, args.prefix, args.interval, stop.is_set, clock)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
