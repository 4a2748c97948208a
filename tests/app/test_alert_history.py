"""Health page: the alert history (when, what, delivered where, acknowledged by whom) and the operator's
acknowledge / silence, which reaches the broker as an alert event for the ingest worker to store."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import paho.mqtt.client as mqtt
import pytest

from tests.app_support import STALE_DEVICE, app, recent_db, texts, use_db
from tests.broker_support import subscribe
from tests.waiting import wait_until
from thermolog import contract


def _add_events(db: Path, now: datetime) -> None:
    """History rows as the ingest worker stores them."""
    con = duckdb.connect(str(db))
    try:
        con.executemany(
            "INSERT INTO alert_events VALUES (?, ?, 'offline', ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            [["e1", STALE_DEVICE, "started", now - timedelta(minutes=50), "offline for 12 min",
              ["json://hooks.example.test/alerts"], ["mailto://ops:****@mail.example.test"], None, None, now],
             ["e2", STALE_DEVICE, "acknowledged", now - timedelta(minutes=40), None, [], [], None,
              "olivia@example.test", now]])
    finally:
        con.close()


@pytest.fixture
def inbox(topic_prefix: str, system_broker: tuple[str, int]) -> list[tuple[str, bytes]]:
    """Alert events arriving on the system broker under this test's prefix."""
    received: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    client = mqtt.Client(client_id=f"inbox-{topic_prefix}", clean_session=True)

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with lock:
            received.append((message.topic, message.payload))

    client.on_message = on_message
    client.connect(*system_broker)
    client.loop_start()
    subscribe(client, f"{topic_prefix}/+/{contract.ALERT}")
    yield received
    client.disconnect()
    client.loop_stop()


def test_history_shows_delivery_and_acknowledgement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each event with where it was delivered, where not, and who acknowledged."""
    db = recent_db(tmp_path / "h.duckdb")
    _add_events(db, datetime.now(UTC))
    use_db(monkeypatch, db, journal_dir=str(tmp_path / "none"))
    at = app("health")
    assert not at.exception
    table = next(d.value for d in at.dataframe if "delivered to" in d.value.columns)
    assert list(table["event"]) == ["acknowledged", "started"]
    assert table["delivered to"][1] == "json://hooks.example.test/alerts"
    assert table["not delivered"][1] == "mailto://ops:****@mail.example.test"
    assert table["by"][0] == "olivia@example.test" and table["what"][1] == "offline for 12 min"


def test_empty_history_says_what_produces_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No events yet: name the process that records them and the setting that sends them."""
    use_db(monkeypatch, recent_db(tmp_path / "e.duckdb"), journal_dir=str(tmp_path / "none"))
    at = app("health")
    assert any("thermolog automation" in c and "THERMOLOG_NOTIFY_URLS" in c for c in texts(at.caption))


def test_operator_acknowledges_and_silences_through_the_broker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topic_prefix: str, system_broker: tuple[str, int],
        inbox: list[tuple[str, bytes]]) -> None:
    """The local operator acknowledges the stale device's alert, then silences the device for 4 hours: two alert
    events on ``{prefix}/attic/alert`` with who, and the silence's end."""
    use_db(monkeypatch, recent_db(tmp_path / "a.duckdb"), journal_dir=str(tmp_path / "none"),
           mqtt_url=f"mqtt://{system_broker[0]}:{system_broker[1]}", topic_prefix=topic_prefix)
    at = app("health")
    form_alert = next(s for s in at.selectbox if s.label == "Alert")
    form_alert.select(f"{STALE_DEVICE}: offline").run()
    next(b for b in at.button if b.label == "Acknowledge").click().run()
    assert any(s.startswith("Acknowledged") for s in texts(at.success)), texts(at.error)
    form_alert = next(s for s in at.selectbox if s.label == "Alert")
    form_alert.select(f"{STALE_DEVICE}: offline")
    next(s for s in at.selectbox if s.label == "Silence notices for").select("4 hours")
    next(c for c in at.checkbox if c.label.startswith("Silence every alert")).check()
    next(b for b in at.button if b.label == "Silence").click().run()
    wait_until(lambda: len(inbox) == 2, 20, what="two alert events on the broker")
    assert {topic for topic, _ in inbox} == {f"{topic_prefix}/{STALE_DEVICE}/alert"}
    ack, silence = (contract.parse_alert_event(payload) for _, payload in inbox)
    assert (ack.event, ack.rule, ack.by) == ("acknowledged", "offline", "local")
    assert (silence.event, silence.rule, silence.by) == ("silenced", "*", "local")
    assert timedelta(hours=3.9) < silence.until - datetime.now(UTC) <= timedelta(hours=4)
