"""Access control of the production broker configuration, against a real Mosquitto started with it."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.broker_support import Inbox, TlsBroker, close, subscribe
from tests.conftest import SEED_SYSTEM, SEED_TELEMETRY

pytestmark = pytest.mark.broker

DEVICE_A = "dev-a"
DEVICE_B = "dev-b"
# A bare MQTT 3.1.1 CONNECT (client id "x"), as a plain-TCP client would send it.
PLAIN_CONNECT = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01x"


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[TlsBroker]:
    """One broker for this module: devices dev-a and dev-b, ingest and app users."""
    broker = TlsBroker([DEVICE_A, DEVICE_B]).start()
    yield broker
    broker.cleanup()


def _telemetry(device_id: str, temperature: float = 21.0) -> bytes:
    return SEED_TELEMETRY.replace(b"esp32c3-01", device_id.encode()).replace(b"25.8", str(temperature).encode())


def _publish(client: mqtt.Client, topic: str, payload: bytes, qos: int = 1) -> None:
    info = client.publish(topic, payload, qos=qos)
    info.wait_for_publish(5)
    assert info.is_published(), f"no PUBACK for {topic}"


def test_device_cannot_publish_as_another_device(tls_broker: TlsBroker) -> None:
    """dev-a's telemetry on dev-b's topic never reaches ingest; dev-a's own (sent after it) does."""
    ingest = tls_broker.connected("ingest", "ingest-spoof")
    inbox = Inbox(ingest)
    assert subscribe(ingest, "thermostats/#") == 1
    device_a = tls_broker.connected(DEVICE_A, "a-spoof")
    try:
        for kind in ("telemetry", "status", "state", "cmd/ack"):
            _publish(device_a, f"thermostats/{DEVICE_B}/{kind}", _telemetry(DEVICE_B))
        _publish(device_a, f"thermostats/{DEVICE_A}/telemetry", _telemetry(DEVICE_A))
        # One connection's messages arrive in order, so once the legitimate one is in, the spoofed ones are gone.
        assert inbox.wait_for(lambda m: any(t == f"thermostats/{DEVICE_A}/telemetry" for t, _ in m))
        assert not [t for t in inbox.topics() if DEVICE_B in t]
    finally:
        close(device_a, ingest)


def test_device_cannot_send_commands_or_read_other_devices(tls_broker: TlsBroker) -> None:
    """A device receives only its own commands (Mosquitto 2.0 grants the SUBACK but filters delivery) and
    cannot publish commands at all."""
    device_a = tls_broker.connected(DEVICE_A, "a-sub")
    inbox_a = Inbox(device_a)
    device_b = tls_broker.connected(DEVICE_B, "b-sub")
    inbox_b = Inbox(device_b)
    app = tls_broker.connected("app", "app-after-forge")
    try:
        for topic in (f"thermostats/{DEVICE_A}/cmd", f"thermostats/{DEVICE_B}/cmd", f"thermostats/{DEVICE_B}/#",
                      "thermostats/#"):
            subscribe(device_a, topic)
        subscribe(device_b, f"thermostats/{DEVICE_B}/cmd")
        _publish(device_a, f"thermostats/{DEVICE_B}/cmd", b'{"request_id": "forged", "target_temp": 30}')
        _publish(device_b, f"thermostats/{DEVICE_B}/telemetry", _telemetry(DEVICE_B))
        _publish(app, f"thermostats/{DEVICE_B}/cmd", b'{"request_id": "for-b", "target_temp": 21}')
        _publish(app, f"thermostats/{DEVICE_A}/cmd", b'{"request_id": "for-a", "target_temp": 22}')
        assert inbox_b.wait_for(lambda m: any(b"for-b" in p for _, p in m))
        assert inbox_a.wait_for(lambda m: any(b"for-a" in p for _, p in m))
        assert not [p for _, p in inbox_b.messages if b"forged" in p]
        assert inbox_a.topics() == [f"thermostats/{DEVICE_A}/cmd"], "dev-a saw another device's traffic"
    finally:
        close(device_a, device_b, app)


def test_anonymous_client_is_refused(tls_broker: TlsBroker) -> None:
    client = tls_broker.client(None, "anonymous")
    with pytest.raises(ConnectionError, match="not authorised"):
        from thermolog.mqttclient import connect

        connect(client, tls_broker.settings("ingest"), timeout=5)
    client.loop_stop()


def test_wrong_password_and_swapped_credentials_are_refused(tls_broker: TlsBroker) -> None:
    for user, password in ((DEVICE_A, "not-the-password"), (DEVICE_A, tls_broker.password(DEVICE_B)),
                           ("ingest", tls_broker.password("app"))):
        with pytest.raises(ConnectionError, match="not authorised"):
            tls_broker.connected(user, f"bad-{user}", password=password)


@pytest.mark.slow
def test_plain_tcp_client_is_refused(tls_broker: TlsBroker) -> None:
    """A client speaking plain MQTT gets no CONNACK: the connection is closed by the TLS listener."""
    with socket.create_connection(("127.0.0.1", tls_broker.port), timeout=5) as sock:
        sock.sendall(PLAIN_CONNECT)
        try:
            answer = sock.recv(4)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"\x20"), "the TLS listener answered a plain CONNECT with a CONNACK"
    with pytest.raises(ConnectionError):
        tls_broker.connected(DEVICE_A, "plain-paho", tls=False)


def test_tls_with_an_unknown_ca_is_refused(tls_broker: TlsBroker, tmp_path: Path) -> None:
    """A client that does not trust our CA (e.g. system CAs only) cannot complete the handshake."""
    context = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", tls_broker.port), timeout=5) as sock, pytest.raises(ssl.SSLError):
        context.wrap_socket(sock, server_hostname="localhost")


def test_ingest_user_cannot_publish_commands(tls_broker: TlsBroker) -> None:
    """ingest's command is dropped by the broker; the app's command published after it is delivered."""
    device = tls_broker.connected(DEVICE_A, "a-cmd")
    inbox = Inbox(device)
    assert subscribe(device, f"thermostats/{DEVICE_A}/cmd") == 1
    ingest = tls_broker.connected("ingest", "ingest-cmd")
    app = tls_broker.connected("app", "app-cmd")
    try:
        _publish(ingest, f"thermostats/{DEVICE_A}/cmd", b'{"request_id": "from-ingest", "target_temp": 30}')
        _publish(ingest, f"thermostats/{DEVICE_A}/telemetry", _telemetry(DEVICE_A))
        _publish(app, f"thermostats/{DEVICE_A}/cmd", b'{"request_id": "from-app", "target_temp": 21}')
        assert inbox.wait_for(lambda m: any(b"from-app" in p for _, p in m))
        assert not [p for _, p in inbox.messages if b"from-ingest" in p]
    finally:
        close(device, ingest, app)


def test_app_sends_commands_reads_acks_but_cannot_pose_as_a_device(tls_broker: TlsBroker) -> None:
    ingest = tls_broker.connected("ingest", "ingest-app")
    ingest_inbox = Inbox(ingest)
    assert subscribe(ingest, "thermostats/#") == 1
    app = tls_broker.connected("app", "app-rights")
    app_inbox = Inbox(app)
    device = tls_broker.connected(DEVICE_A, "a-ack")
    try:
        assert subscribe(app, "thermostats/+/cmd/ack") == 1
        subscribe(app, "thermostats/+/telemetry")  # granted by Mosquitto 2.0 but never delivered (read denied)
        _publish(app, f"thermostats/{DEVICE_A}/telemetry", _telemetry(DEVICE_A, 99.0))
        _publish(app, f"thermostats/{DEVICE_A}/cmd/ack", b'{"request_id": "fake-ack", "ok": true}')
        _publish(app, f"thermostats/{DEVICE_A}/cmd/refused", b'{"request_id": "r0", "error": "rate limit"}')
        _publish(app, f"thermostats/{DEVICE_A}/alert", b'{"event_id": "a0"}')
        _publish(app, f"thermostats/{DEVICE_A}/cmd", b'{"request_id": "r1", "target_temp": 21}')
        assert ingest_inbox.wait_for(lambda m: any(b"r1" in p for _, p in m))
        assert (f"thermostats/{DEVICE_A}/alert", b'{"event_id": "a0"}') in ingest_inbox.messages, \
            "the app's (and the automation's) alert event did not reach ingest"
        assert (f"thermostats/{DEVICE_A}/cmd/refused", b'{"request_id": "r0", "error": "rate limit"}') in \
            ingest_inbox.messages, "the app's refusal audit record did not reach ingest"
        assert not [p for _, p in ingest_inbox.messages if b"99.0" in p or b"fake-ack" in p]
        _publish(device, f"thermostats/{DEVICE_A}/cmd/ack", b'{"request_id": "r1", "ok": true}')
        assert app_inbox.wait_for(lambda m: any(b"r1" in p for _, p in m))
        assert app_inbox.topics() == [f"thermostats/{DEVICE_A}/cmd/ack"], "app received telemetry"
    finally:
        close(ingest, app, device)


def test_ingest_reads_every_device_and_edge_topic(tls_broker: TlsBroker) -> None:
    """Positive control: what devices and edge hosts may publish, ingest receives."""
    ingest = tls_broker.connected("ingest", "ingest-all")
    inbox = Inbox(ingest)
    assert subscribe(ingest, "thermostats/#") == 1
    assert subscribe(ingest, "edge/#") == 1
    device_b = tls_broker.connected(DEVICE_B, "b-all")
    try:
        for kind, payload in (("telemetry", _telemetry(DEVICE_B)), ("status", b"online"),
                              ("state", b'{"target_temp": 21.0}'), ("cmd/ack", b'{"request_id": "x", "ok": true}')):
            _publish(device_b, f"thermostats/{DEVICE_B}/{kind}", payload)
        wanted = {f"thermostats/{DEVICE_B}/{k}" for k in ("telemetry", "status", "state", "cmd/ack")}
        assert inbox.wait_for(lambda m: wanted <= {t for t, _ in m})
        _publish(device_b, "edge/host1/system", SEED_SYSTEM)
        _publish(device_b, f"thermostats/{DEVICE_B}/status", b"offline")
        assert inbox.wait_for(lambda m: (f"thermostats/{DEVICE_B}/status", b"offline") in m)
        assert "edge/host1/system" not in inbox.topics(), "a device may not publish edge metrics"
    finally:
        close(ingest, device_b)


def test_edge_user_bridges_telemetry_and_commands_but_cannot_pose_as_a_device(tls_broker: TlsBroker) -> None:
    """The IoT Edge modules' user reads telemetry, sends commands and host metrics; its fake telemetry is dropped."""
    edge = tls_broker.connected("edge", "edge-rights")
    edge_inbox = Inbox(edge)
    ingest = tls_broker.connected("ingest", "ingest-edge")
    ingest_inbox = Inbox(ingest)
    device = tls_broker.connected(DEVICE_A, "a-edge")
    device_inbox = Inbox(device)
    try:
        assert subscribe(edge, "thermostats/+/telemetry") == 1
        assert subscribe(ingest, "thermostats/#") == 1
        assert subscribe(ingest, "edge/#") == 1
        assert subscribe(device, f"thermostats/{DEVICE_A}/cmd") == 1
        _publish(device, f"thermostats/{DEVICE_A}/telemetry", _telemetry(DEVICE_A))
        assert edge_inbox.wait_for(lambda m: (f"thermostats/{DEVICE_A}/telemetry", _telemetry(DEVICE_A)) in m)
        _publish(edge, f"thermostats/{DEVICE_B}/telemetry", _telemetry(DEVICE_B, 55.0))
        _publish(edge, "edge/gw1/system", SEED_SYSTEM)
        _publish(edge, f"thermostats/{DEVICE_A}/cmd", b'{"request_id": "from-edge", "target_temp": 21}')
        assert device_inbox.wait_for(lambda m: any(b"from-edge" in p for _, p in m))
        assert ingest_inbox.wait_for(lambda m: "edge/gw1/system" in {t for t, _ in m}
                                     and any(b"from-edge" in p for _, p in m))
        assert not [p for _, p in ingest_inbox.messages if b"55.0" in p]
    finally:
        close(edge, ingest, device)


def test_no_secret_appears_in_logs(tls_broker: TlsBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """broker init's output and log, client connects (good and bad) and the broker's log never show a password."""
    out = tmp_path / "init"
    init = subprocess.run(
        [sys.executable, "-m", "thermolog.cli", "-v", "broker", "init", "--out", str(out), "--devices", "x1,x2",
         "--broker-user", "root"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    from thermolog.broker_init import read_credentials

    init_secrets = [read_credentials(p)["THERMOLOG_MQTT_PASSWORD"] for p in (out / "credentials").glob("*.env")]
    assert len(init_secrets) == 5
    texts = [init.stdout, init.stderr, (out / "passwd").read_text()]

    caplog.set_level(logging.DEBUG)
    client = tls_broker.client(DEVICE_A, "a-logs")
    client.enable_logger(logging.getLogger("paho"))
    from thermolog.mqttclient import connect

    connect(client, tls_broker.settings(DEVICE_A), timeout=5)
    logging.getLogger("test").info("settings: %r endpoint: %r", tls_broker.settings(DEVICE_A),
                                   tls_broker.settings(DEVICE_A).mqtt_endpoint())
    close(client)
    with pytest.raises(ConnectionError) as refused:
        tls_broker.connected(DEVICE_B, "b-logs", password=tls_broker.password(DEVICE_A))
    texts += [caplog.text, str(refused.value), tls_broker.log_path.read_text()]
    assert "a-logs" in caplog.text  # the capture really saw the connect

    broker_secrets = [tls_broker.password(u) for u in ("ingest", "app", "edge", DEVICE_A, DEVICE_B)]
    for secret in init_secrets + broker_secrets:
        for text in texts:
            assert secret not in text


def test_schedules_reach_ingest_and_only_their_own_device(tls_broker: TlsBroker) -> None:
    """The app publishes a program (ingest receives it) and a device's change points: that device reads them,
    the other device does not, and a device cannot write change points."""
    ingest = tls_broker.connected("ingest", "ingest-schedule")
    ingest_inbox = Inbox(ingest)
    app = tls_broker.connected("app", "app-schedule")
    device_a = tls_broker.connected(DEVICE_A, "a-schedule")
    device_b = tls_broker.connected(DEVICE_B, "b-schedule")
    inbox_a, inbox_b = Inbox(device_a), Inbox(device_b)
    try:
        assert subscribe(ingest, "thermostats/#") == 1
        assert subscribe(device_a, f"thermostats/{DEVICE_A}/schedule/points") == 1
        subscribe(device_b, f"thermostats/{DEVICE_A}/schedule/points")  # granted, never delivered
        _publish(device_b, f"thermostats/{DEVICE_A}/schedule/points", b'{"points": "forged"}')
        _publish(app, f"thermostats/{DEVICE_A}/schedule", b'{"request_id": "s1", "program": {}}')
        _publish(app, f"thermostats/{DEVICE_A}/schedule/points", b'{"points": "real"}')
        assert ingest_inbox.wait_for(lambda m: any(b"s1" in p for _, p in m))
        assert inbox_a.wait_for(lambda m: any(b"real" in p for _, p in m))
        assert not [p for _, p in inbox_a.messages if b"forged" in p]
        assert inbox_b.messages == []
    finally:
        close(ingest, app, device_a, device_b)
