"""Baseline for the ingest benchmark: a paho QoS 1 subscriber that does nothing per message but count.

usage: python -m bench.bare_subscriber PORT PREFIX COUNT
Prints ``ready`` once subscribed and ``done`` when COUNT messages have arrived.
"""

from __future__ import annotations

import sys
import threading

import paho.mqtt.client as mqtt


def main() -> int:
    """Subscribe like the ingest worker (persistent session, QoS 1) and count until COUNT."""
    port, prefix, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    done, ready = threading.Event(), threading.Event()
    received = 0

    def on_message(_c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received >= count:
            done.set()

    client = mqtt.Client(client_id=f"bare-{prefix}", clean_session=False)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: ready.set()
    client.on_connect = lambda c, *_a: c.subscribe(f"{prefix}/+/telemetry", qos=1)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.wait(10)
    print("ready", flush=True)
    done.wait()
    print("done", flush=True)
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
