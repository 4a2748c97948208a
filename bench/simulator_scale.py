"""Simulator scale: N simulated thermostats at 1 Hz on one core (one shared MQTT connection).

Runs ``thermolog simulate --devices N --interval 1`` for a fixed wall time against a private Mosquitto, counts the
readings a subscriber receives, and reads the simulator's CPU time. Target: N readings/s delivered while using
at most one core.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil

from bench.common import Result, bench_env, private_mosquitto

WALL_S = 30


def run(devices: int = 1000) -> list[Result]:
    """Run ``devices`` thermostats at 1 Hz for WALL_S seconds after they connect; report rate and CPU use."""
    prefix = f"sim{uuid.uuid4().hex[:6]}"
    received = 0
    lock = threading.Lock()

    def on_message(*_args: object) -> None:
        nonlocal received
        with lock:
            received += 1

    with private_mosquitto() as port, tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        sub = mqtt.Client(client_id=f"count-{prefix}")
        sub.on_message = on_message
        sub.connect("127.0.0.1", port)
        sub.subscribe(f"{prefix}/+/telemetry", qos=0)
        sub.loop_start()
        env = bench_env(Path(tmp), port, prefix)
        sim = subprocess.Popen(
            [sys.executable, "-m", "thermolog.cli", "simulate", "--devices", str(devices), "--interval", "1",
             "--shared-connection", "--params-out", os.path.join(tmp, "params.json")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = psutil.Process(sim.pid)
        try:
            deadline = time.monotonic() + 60
            while received < devices and time.monotonic() < deadline:  # wait for the first full round
                time.sleep(0.1)
            cpu0, got0, t0 = sum(proc.cpu_times()[:2]), received, time.monotonic()
            time.sleep(WALL_S)
            cpu1, got1, t1 = sum(proc.cpu_times()[:2]), received, time.monotonic()
        finally:
            sim.send_signal(signal.SIGINT)
            sim.wait(60)
            sub.loop_stop()
    rate = (got1 - got0) / (t1 - t0)
    cores = (cpu1 - cpu0) / (t1 - t0)
    return [
        Result("simulator", f"{devices} thermostats at 1 Hz: readings delivered", rate, "msg/s",
               f">= {0.95 * devices:.0f}", rate >= 0.95 * devices),
        Result("simulator", "CPU used by the simulator", cores, "cores", "<= 1", cores <= 1.0),
    ]
