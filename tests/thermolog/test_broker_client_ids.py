"""Client ids bound to users: no device can take over ingest's or another device's session, and ingest reports a
session the broker lost. Against a real Mosquitto started from the configuration `broker init` writes."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.journal import Journal
from ingest.sources.mqtt import MqttSource
from ingest.status import collect_status, format_status
from ingest.worker import IngestWorker
from tests.broker_support import Inbox, TlsBroker, close, subscribe
from tests.ingest_support import db_value, telemetry
from tests.waiting import wait_until

pytestmark = pytest.mark.broker

DEVICE_A = "dev-a"
DEVICE_B = "dev-b"


@pytest.fixture
def broker() -> Iterator[TlsBroker]:
    """A fresh broker per test (some tests restart it or change its configuration)."""
    started = TlsBroker([DEVICE_A, DEVICE_B]).start()
    yield started
    started.cleanup()


def _without_username_as_clientid(broker: TlsBroker) -> None:
    """Restart the broker with the client-id binding removed (the configuration before it existed)."""
    broker.stop()
    conf = broker.layout.conf.read_text()
    assert "use_username_as_clientid true\n" in conf
    broker.layout.conf.write_text(conf.replace("use_username_as_clientid true\n", ""))
    broker.start()


def _ingest_source(broker: TlsBroker, tmp_path: Path) -> tuple[MqttSource, Journal]:
    settings = broker.settings("ingest", journal_dir=tmp_path / "journal", db_path=tmp_path / "db.duckdb")
    journal = Journal(settings.journal_dir, fsync_interval_s=0)
    source = MqttSource(settings, journal)
    source.start(timeout=10)
    return source, journal


def _lost_connections(source: MqttSource) -> int:
    return source.reconnects


def test_service_credentials_carry_unguessable_client_ids_and_their_own_listener(broker: TlsBroker) -> None:
    """ingest, app and edge get random client ids and the services' port; devices get the devices' port."""
    ingest_id = broker.credentials("ingest")["THERMOLOG_INGEST_CLIENT_ID"]
    app_prefix = broker.credentials("app")["THERMOLOG_MQTT_CLIENT_ID_PREFIX"]
    edge_prefix = broker.credentials("edge")["THERMOLOG_MQTT_CLIENT_ID_PREFIX"]
    for value, user in ((ingest_id, "ingest"), (app_prefix, "app"), (edge_prefix, "edge")):
        assert re.fullmatch(rf"thermolog-{user}-[0-9a-f]{{16}}", value), value
    assert broker.credentials("ingest")["THERMOLOG_MQTT_URL"].endswith(f":{broker.service_port}")
    assert broker.credentials(DEVICE_A)["THERMOLOG_MQTT_URL"].endswith(f":{broker.port}")
    assert "THERMOLOG_INGEST_CLIENT_ID" not in broker.credentials(DEVICE_A)


def test_devices_and_services_cannot_log_in_on_each_others_listener(broker: TlsBroker) -> None:
    """Each listener has its own password file: a device's password is refused on the services' port."""
    with pytest.raises(ConnectionError, match="refused"):
        broker.connected(DEVICE_A, "a-on-service-port", port=broker.service_port)
    with pytest.raises(ConnectionError, match="refused"):
        broker.connected("ingest", "ingest-on-device-port", port=broker.port)


@pytest.mark.parametrize("bound", [True, False], ids=["bound", "unbound-control"])
def test_a_device_using_the_ingest_client_id_does_not_knock_ingest_off(broker: TlsBroker, tmp_path: Path,
                                                                      bound: bool) -> None:
    """dev-a connects with ingest's client id; with client ids bound to user names ingest keeps its connection and
    receives dev-a's reading. The control run without the binding shows the takeover the test guards against."""
    if not bound:
        _without_username_as_clientid(broker)
    source, journal = _ingest_source(broker, tmp_path)
    attacker = None
    try:
        attacker = broker.connected(DEVICE_A, source.settings.ingest_client_id, clean_session=False)
        attacker.publish(f"thermostats/{DEVICE_A}/telemetry", telemetry(DEVICE_A, 1), qos=1).wait_for_publish(5)
        if bound:
            wait_until(lambda: source.received >= 1, 10)
            assert _lost_connections(source) == 0
        else:
            wait_until(lambda: _lost_connections(source) >= 1, 10)
        print(f"{'bound' if bound else 'unbound'}: ingest lost its connection {_lost_connections(source)} time(s)")
    finally:
        if attacker is not None:
            close(attacker)
        source.stop()
        journal.close()


def test_a_device_using_another_devices_client_id_does_not_fire_its_will(broker: TlsBroker) -> None:
    """dev-b connects with client id "dev-a": dev-a stays connected and its retained `offline` will is not sent."""
    watcher = broker.connected("ingest", "watcher")
    inbox = Inbox(watcher)
    subscribe(watcher, "thermostats/#")
    device_a = broker.client(DEVICE_A, DEVICE_A)
    device_a.will_set(f"thermostats/{DEVICE_A}/status", b"offline", qos=1, retain=True)
    drops: list[int] = []
    device_a.on_disconnect = lambda _c, _u, rc: drops.append(rc)
    from thermolog.mqttclient import connect

    connect(device_a, broker.settings(DEVICE_A), timeout=5)
    device_b = broker.connected(DEVICE_B, DEVICE_A)
    try:
        device_a.publish(f"thermostats/{DEVICE_A}/telemetry", telemetry(DEVICE_A, 2), qos=1).wait_for_publish(5)
        assert inbox.wait_for(lambda m: any(t == f"thermostats/{DEVICE_A}/telemetry" for t, _ in m))
        assert drops == []
        assert (f"thermostats/{DEVICE_A}/status", b"offline") not in inbox.messages
    finally:
        close(device_b, device_a, watcher)


def test_ingest_reports_a_session_the_broker_lost(broker: TlsBroker, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The broker restarts without persistence: on reconnecting, the CONNACK says no session is present, and
    ingest says so in its log, in `ingest_state` (so `thermolog status` and the Health page show it)."""
    settings = broker.settings("ingest", journal_dir=tmp_path / "journal", db_path=tmp_path / "db.duckdb",
                               flush_interval_s=0.1)
    worker = IngestWorker(settings)
    worker.start()
    try:
        db = settings.db_path
        wait_until(lambda: db_value(db, "SELECT value FROM ingest_state WHERE key = 'mqtt_connected'") == "true", 20)
        assert db_value(db, "SELECT value FROM ingest_state WHERE key = 'mqtt_sessions_lost'") == "0"
        with caplog.at_level(logging.ERROR, logger="ingest.sources.mqtt"):
            broker.stop()
            broker.start()  # persistence is off in this broker: every session is gone
            wait_until(lambda: db_value(db, "SELECT value FROM ingest_state WHERE key = 'mqtt_sessions_lost'") == "1",
                       30)
        assert any("has no session for client id" in r.getMessage() for r in caplog.records)
        status = collect_status(settings)
        assert status.mqtt_sessions_lost == 1 and status.mqtt_session_lost_at is not None
        assert "SESSION LOST 1 time(s)" in format_status(status)
        assert worker.mqtt is not None and worker.mqtt.sessions_lost == 1
    finally:
        worker.stop()


def test_a_fresh_start_is_not_reported_as_a_lost_session(broker: TlsBroker, tmp_path: Path) -> None:
    """The first connection of a new worker has no session yet: that is not a loss."""
    source, journal = _ingest_source(broker, tmp_path)
    try:
        assert source.sessions_lost == 0
        assert source.state()["mqtt_sessions_lost"] == "0"
    finally:
        source.stop()
        journal.close()



def test_a_session_lost_while_ingest_was_stopped_is_reported_on_its_next_start(broker: TlsBroker,
                                                                                tmp_path: Path) -> None:
    """Ingest subscribed, stopped; the broker restarts without persistence; the next ingest run expects its
    session (recorded in `ingest_state`), finds none, and reports it. A restart that finds it reports nothing."""
    settings = broker.settings("ingest", journal_dir=tmp_path / "journal", db_path=tmp_path / "db.duckdb",
                               flush_interval_s=0.1)

    def run_once() -> int:
        worker = IngestWorker(settings)
        worker.start()
        try:
            assert worker.mqtt is not None
            return worker.mqtt.sessions_lost
        finally:
            worker.stop()

    assert run_once() == 0  # a new installation: no session expected yet
    assert run_once() == 0  # the broker kept the session
    broker.stop()
    broker.start()
    assert run_once() == 1
    assert db_value(settings.db_path, "SELECT value FROM ingest_state WHERE key = 'mqtt_sessions_lost'") == "1"
