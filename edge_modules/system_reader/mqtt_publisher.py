"""``thermolog host-metrics``: the ``system_reader`` sample (psutil) published on ``edge/{host}/system`` over plain
MQTT, for hosts without Azure IoT Edge; ``thermolog demo`` starts it so the Live page shows the machine it runs on.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from edge_modules.host import safe_host_name, sample
from thermolog import contract
from thermolog.mqttclient import connect, make_client
from thermolog.settings import get_settings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``thermolog host-metrics``."""
    parser.add_argument("--interval", type=float, default=None,
                        help="seconds between samples (default THERMOLOG_EDGE_SYSTEM_INTERVAL_S)")
    parser.add_argument("--host", default=None, help="name shown on the Live page (default: this host's name)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many samples (0: run until stopped)")


def publish_samples(host: str, interval_s: float, count: int, stop: threading.Event) -> int:
    """Publish a sample every ``interval_s`` until ``stop`` (or ``count`` samples); returns the number sent."""
    settings = get_settings()
    client = make_client(f"thermolog-host-{host}", settings)
    connect(client, settings)
    topic = contract.system_topic(host)
    sent = 0
    try:
        import psutil

        psutil.cpu_percent(interval=None)  # the first reading only sets the reference point
        wait_s = min(interval_s, 1.0)
        while not stop.wait(wait_s):
            info = client.publish(topic, contract.dumps(sample()), qos=contract.QOS[contract.SYSTEM])
            info.wait_for_publish(5)
            sent += 1
            wait_s = interval_s
            if count and sent >= count:
                break
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


def run(args: argparse.Namespace) -> int:
    """Publish until SIGTERM/SIGINT."""
    interval = args.interval or get_settings().edge_system_interval_s
    if interval <= 0:
        raise SystemExit("thermolog host-metrics: --interval must be above 0")
    host = safe_host_name(args.host)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("publishing host metrics of %s on %s every %.1f s", host, contract.system_topic(host), interval)
    sent = publish_samples(host, interval, args.count, stop)
    log.info("host metrics stopped after %d samples", sent)
    return 0
