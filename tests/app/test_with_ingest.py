"""Every page renders, again and again, while the ingest worker (its own process) keeps writing: no lock error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.app_support import app, texts, use_db
from tests.ingest_support import db_value, forget_session
from tests.waiting import wait_until
from thermolog import contract

pytestmark = pytest.mark.slow

DEVICES = ("kitchen", "hall")
PAGES = ("live", "history", "control", "export", "health")


class Publisher(threading.Thread):
    """Publishes a reading per device every 20 ms with the current time until stopped."""

    def __init__(self, prefix: str) -> None:
        super().__init__(daemon=True)
        self.prefix = prefix
        self.halt = threading.Event()
        self.sent = 0
        self.client = mqtt.Client(client_id=f"pub-{prefix}", clean_session=True)
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        for device in DEVICES:
            self.client.publish(contract.topic(device, contract.STATUS, prefix), b"online", qos=1, retain=True)

    def run(self) -> None:
        while not self.halt.wait(0.02):
            now = contract.format_timestamp(datetime.now(UTC))
            for index, device in enumerate(DEVICES):
                payload = (f'{{"temperature": {20 + index}.5, "timestamp": "{now}", "humidity": 41.0, '
                           f'"target_temp": 21, "device_id": "{device}", "heating": "ON"}}').encode()
                self.client.publish(contract.topic(device, contract.TELEMETRY, self.prefix), payload, qos=1)
                self.sent += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(5)
        for device in DEVICES:  # clear the retained status so nothing lingers on the shared broker
            self.client.publish(contract.topic(device, contract.STATUS, self.prefix), b"", qos=1, retain=True)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def ingest(thermolog_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Publisher]:
    """`thermolog ingest` as its own process flushing every 0.5 s, fed by a steady publisher."""
    # Half the default, and not shorter: with DuckDB 1.5.5 a flush every 0.1 s under a steady stream keeps readers
    # out for seconds at a time (docs/architecture.md, "Storage").
    env = {**os.environ, **thermolog_env, "THERMOLOG_FLUSH_INTERVAL_S": "0.5"}
    log = (tmp_path / "ingest.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "thermolog.cli", "ingest"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2])
    publisher = Publisher(thermolog_env["THERMOLOG_TOPIC_PREFIX"])
    db = thermolog_env["THERMOLOG_DB_PATH"]
    try:
        publisher.start()
        wait_until(lambda: (db_value(db, "SELECT count(DISTINCT device_id) FROM telemetry") or 0) == len(DEVICES),
                   30, what="readings of both devices in DuckDB")
        use_db(monkeypatch, Path(db))
        yield publisher
    finally:
        publisher.stop()
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        forget_session(thermolog_env["THERMOLOG_INGEST_CLIENT_ID"])


def test_pages_render_while_ingest_writes(ingest: Publisher, thermolog_env: dict[str, str]) -> None:
    """Three rounds over all pages during a steady stream: no exception, no error, the devices on Live."""
    db = thermolog_env["THERMOLOG_DB_PATH"]
    before = wait_until(lambda: db_value(db, "SELECT count(*) FROM telemetry"), 20,
                        what="the stored count before the pages (the database stays locked?)")
    for _round in range(3):
        at = app()
        assert not at.exception and not texts(at.error)
        assert set(DEVICES) <= set(texts(at.subheader))
        for page in PAGES:
            at.switch_page(f"views/{page}.py").run()
            assert not at.exception, page
            assert not texts(at.error), (page, texts(at.error))
    after = wait_until(lambda: (n := db_value(db, "SELECT count(*) FROM telemetry")) and n > before and n, 20,
                       what="more readings stored after the pages were read (see ingest.log in the test's tmp dir)")
    assert after > before
