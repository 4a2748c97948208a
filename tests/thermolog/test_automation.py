"""``thermolog automation`` end to end: real Mosquitto, the real ingest worker, notices to a real HTTP server
(``json://``) and a real SMTP server (aiosmtpd, ``mailto://``), and the alert history stored by ingest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.ingest_support import db_rows, forget_session
from tests.notify_support import HttpInbox, SmtpInbox, receivers
from tests.waiting import wait_until
from thermolog import contract
from thermolog.alerting import events
from thermolog.settings import get_settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "boiler-room"


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "thermolog.cli", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class Thermostat:
    """Publishes readings for one device with the current time, as a thermostat would."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.client = mqtt.Client(client_id=f"dev-{prefix}", clean_session=True)
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()

    def reading(self, temperature: float) -> None:
        payload = (f'{{"temperature": {temperature}, "timestamp": "{contract.format_timestamp(datetime.now(UTC))}",'
                   f' "target_temp": 21, "device_id": "{DEVICE}", "heating": "OFF"}}').encode()
        self.client.publish(contract.topic(DEVICE, contract.TELEMETRY, self.prefix), payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def stack(thermolog_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[dict[str, str], Thermostat]]:
    """The ingest worker (flushing every 0.1 s) and a thermostat on the system broker."""
    env = {**os.environ, **thermolog_env, "THERMOLOG_FLUSH_INTERVAL_S": "0.1", "PYTHONPATH": str(ROOT)}
    ingest = _start(["ingest"], env, tmp_path / "ingest.log")
    device = Thermostat(thermolog_env["THERMOLOG_TOPIC_PREFIX"])
    db = thermolog_env["THERMOLOG_DB_PATH"]
    try:
        def stored() -> bool:
            device.reading(21.0)
            return bool(db_rows(db, "SELECT 1 FROM telemetry LIMIT 1"))
        wait_until(stored, 30, what="the ingest worker storing a reading", interval=0.5)
        yield env, device
    finally:
        device.close()
        _stop(ingest)
        forget_session(thermolog_env["THERMOLOG_INGEST_CLIENT_ID"])


def _events(db: str, kind: str) -> list[tuple]:
    return db_rows(db, "SELECT rule, delivered, failed, note, actor, message FROM alert_events "
                       "WHERE device_id = ? AND event = ? ORDER BY ts", [DEVICE, kind]) or []


def _urls(http: HttpInbox, smtp: SmtpInbox) -> str:
    return (f"json://127.0.0.1:{http.port}/hooks/alerts, "
            f"mailto://127.0.0.1:{smtp.port}?to=ops@example.test&from=thermolog@example.test&secure=no")


def test_alert_start_and_clear_reach_http_and_smtp_and_the_history(
        stack: tuple[dict[str, str], Thermostat], tmp_path: Path) -> None:
    """Too hot: one notice on each receiver and a ``started`` row naming both; back to normal: one ``cleared``
    notice each and row; an acknowledgement from the app is stored with who; a silence holds the next start back."""
    env, device = stack
    db = env["THERMOLOG_DB_PATH"]
    with receivers() as (http, smtp):
        auto_env = {**env, "THERMOLOG_NOTIFY_URLS": _urls(http, smtp), "THERMOLOG_ALERT_CHECK_INTERVAL_S": "1",
                    "THERMOLOG_ALERT_COOLDOWN_MIN": "0"}
        automation = _start(["automation"], auto_env, tmp_path / "automation.log")
        try:
            device.reading(34.5)
            started = wait_until(lambda: _events(db, "started"), 30, what="a started event in alert_events")
            rule, delivered, failed, note, _actor, message = started[0]
            assert rule == "temperature_high" and "34.5" in message and failed == [] and note is None
            assert delivered == [f"json://127.0.0.1:{http.port}/hooks/alerts",
                                 f"mailto://127.0.0.1:{smtp.port}/ops%40example.test"]
            assert http.titles() == [f"thermolog alert: {DEVICE} temperature high"]
            assert http.posts[0][0] == "/hooks/alerts" and "34.5" in http.posts[0][1]["message"]
            assert smtp.subjects() == [f"thermolog alert: {DEVICE} temperature high"]
            assert smtp.recipients == [["ops@example.test"]]

            device.reading(21.0)
            cleared = wait_until(lambda: _events(db, "cleared"), 30, what="a cleared event")
            assert cleared[0][0] == "temperature_high" and len(cleared[0][1]) == 2
            assert http.titles()[1:] == [f"thermolog cleared: {DEVICE} temperature high"]
            wait_until(lambda: len(smtp.messages) == 2, 20, what="the cleared e-mail")

            settings = get_settings()
            ack = events.new_event(DEVICE, "temperature_high", contract.ALERT_ACKNOWLEDGED, by="olivia@example.test")
            assert events.publish_once(*ack, settings)
            silence = events.new_event(DEVICE, "*", contract.ALERT_SILENCED, by="olivia@example.test",
                                       until=datetime.now(UTC) + timedelta(hours=1))
            assert events.publish_once(*silence, settings)
            acks = wait_until(lambda: _events(db, "acknowledged"), 20, what="the acknowledgement stored")
            assert acks[0][4] == "olivia@example.test"
            wait_until(lambda: _events(db, "silenced"), 20, what="the silence stored")

            device.reading(35.5)
            held = wait_until(lambda: _events(db, "started")[1:], 30, what="the silenced start recorded")
            assert held[0][1] == [] and held[0][3].startswith("silenced until")
            assert len(http.posts) == 2 and len(smtp.messages) == 2  # nobody was told
        finally:
            assert _stop(automation) == 0, (tmp_path / "automation.log").read_text()


def test_bad_notify_url_is_a_clear_error(thermolog_env: dict[str, str], tmp_path: Path) -> None:
    """An entry Apprise does not know: exit 2 naming the entry and its scheme, without its secret."""
    env = {**os.environ, **thermolog_env, "PYTHONPATH": str(ROOT),
           "THERMOLOG_NOTIFY_URLS": "json://127.0.0.1:9/x, nosuchthing://user:hunter2@host"}
    result = subprocess.run([sys.executable, "-m", "thermolog.cli", "automation", "--once"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "entry 2 (nosuchthing://...)" in result.stderr and "hunter2" not in result.stderr
