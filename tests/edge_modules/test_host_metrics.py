"""`thermolog host-metrics`: the system_reader sample over plain MQTT, as the ingest worker and Live page expect."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import paho.mqtt.client as mqtt

from tests.broker_support import Inbox, close, subscribe
from thermolog import contract


def test_host_metrics_publishes_valid_samples_on_the_edge_topic(thermolog_env: dict[str, str]) -> None:
    """Two samples on `edge/<host>/system`, each a valid SystemMetrics with plausible percentages."""
    host = f"host-{uuid.uuid4().hex[:8]}"
    client = mqtt.Client(client_id=f"listen-{host}", clean_session=True)
    inbox = Inbox(client)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    try:
        subscribe(client, contract.system_topic(host), qos=0)
        done = subprocess.run([sys.executable, "-m", "thermolog.cli", "host-metrics", "--host", host, "--interval",
                               "0.2", "--count", "2"], env={**os.environ, **thermolog_env}, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert inbox.wait_for(lambda ms: len(ms) >= 2, 10)
    finally:
        close(client)
    samples = [contract.parse_system(payload) for _topic, payload in inbox.messages]
    assert all(0 <= s.cpu_usage <= 100 and 0 < s.memory_usage <= 100 and 0 < s.disk_usage <= 100 for s in samples)
    assert samples[1].timestamp > samples[0].timestamp
