"""`thermolog ingest` loads only what receiving and storing need: no dashboard, chart or analytics library, no
Azure SDK unless IoT Hub ingest is configured; the receiving process no DuckDB (the flusher process reads and
writes the database), and neither process Polars (the flusher builds its Arrow streams with nanoarrow) nor pandas,
pyarrow or NumPy, which DuckDB would import on its first query with parameters (ingest.flush_process.NOT_NEEDED).
It starts one process, the flusher, and no helper such as multiprocessing's resource tracker. Checked by watching
the imports of every process it starts while it stores real messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.ingest_support import db_value
from tests.waiting import wait_until
from thermolog import contract

pytestmark = pytest.mark.slow  # seconds per test: outside the fast loop (docs/testing.md)
ROOT = Path(__file__).resolve().parents[2]
# pandas, pyarrow and NumPy are installed (the lake's dependencies bring them): DuckDB 1.5.5's Python binding
# imports them on the first query with parameters unless the process blocks them.
NEVER = ("streamlit", "plotly", "scipy", "azure", "sklearn", "matplotlib", "pandas", "pyarrow", "numpy", "polars")
NOT_IN_THE_RECEIVER = ("duckdb",)
CONTROL = ("duckdb",)  # the flusher must be seen importing it, or the watch itself is broken

# Runs at start-up of every Python process of the run (it is found first on PYTHONPATH): records that the process
# started and each watched top-level package it imports (not an attempt the process blocks), in a file named after
# the process id.
SITECUSTOMIZE = """
import os, sys
_watched = set(os.environ["IMPORT_WATCH"].split(","))
_out = os.environ["IMPORT_WATCH_DIR"]
with open(os.path.join(_out, f"{os.getpid()}.txt"), "a") as f:
    f.write("(started)\\n")
def _hook(event, args):
    if event == "import":
        top = str(args[0]).partition(".")[0]
        if top in _watched and not (top in sys.modules and sys.modules[top] is None):  # None: blocked, fails
            _watched.discard(top)
            with open(os.path.join(_out, f"{os.getpid()}.txt"), "a") as f:
                f.write(top + "\\n")
sys.addaudithook(_hook)
"""


def test_ingest_processes_do_not_import_what_they_never_use(thermolog_env: dict[str, str], tmp_path: Path) -> None:
    hook, seen = tmp_path / "hook", tmp_path / "imports"
    hook.mkdir()
    seen.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, **thermolog_env, "THERMOLOG_FLUSH_INTERVAL_S": "0.1",
           "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)]),
           "IMPORT_WATCH": ",".join(NEVER + NOT_IN_THE_RECEIVER + CONTROL), "IMPORT_WATCH_DIR": str(seen)}
    env.pop("THERMOLOG_EVENTHUB_CONNECTION_STRING", None)
    worker = subprocess.Popen([sys.executable, "-m", "thermolog.cli", "ingest"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = mqtt.Client(client_id=f"pub-{thermolog_env['THERMOLOG_TOPIC_PREFIX']}")
    db = thermolog_env["THERMOLOG_DB_PATH"]
    try:
        host, port = thermolog_env["THERMOLOG_MQTT_URL"].removeprefix("mqtt://").split(":")
        client.connect(host, int(port))
        client.loop_start()
        wait_until(lambda: db_value(db, "SELECT value FROM ingest_state WHERE key = 'mqtt_connected'") == "true",
                   30, "the worker subscribed")
        payload = ('{"temperature": 20.5, "timestamp": "%s", "humidity": 41.0, "target_temp": 21, '
                   '"device_id": "imp-1", "heating": "ON"}')
        for second in range(5):
            stamp = f"2026-01-01T00:00:0{second}Z"
            client.publish(contract.topic("imp-1", contract.TELEMETRY, thermolog_env["THERMOLOG_TOPIC_PREFIX"]),
                           (payload % stamp).encode(), qos=1).wait_for_publish(5)
        wait_until(lambda: db_value(db, "SELECT count(*) FROM telemetry") == 5, 30, "5 readings stored")
    finally:
        client.loop_stop()
        client.disconnect()
        worker.send_signal(signal.SIGINT)
        worker.wait(30)
    by_process = {int(f.stem): set(f.read_text().split()) for f in seen.glob("*.txt")}
    everything = set().union(*by_process.values())
    assert "duckdb" in everything, "the import watch saw nothing: is sitecustomize.py still found first?"
    assert worker.pid in by_process, by_process
    assert len(by_process) == 2, f"the worker and its flusher, no other process: {by_process}"
    assert not everything & set(NEVER), by_process
    assert not by_process[worker.pid] & set(NOT_IN_THE_RECEIVER), by_process
