"""``thermolog broker init``: files, permissions, ACL, certificates, password hashes and the shipped config."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from tests.broker_support import Inbox, TlsBroker, close, subscribe
from tests.thermolog.test_broker_access import PLAIN_CONNECT
from thermolog import broker_init as broker_module
from thermolog.broker_init import BrokerLayout, BrokerPlan, init_broker, read_credentials

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
SHIPPED_ROOT = Path("/etc/mosquitto/thermolog")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def initialised(tmp_path: Path) -> BrokerLayout:
    """``thermolog broker init`` run as its own process, for three devices and one extra hostname."""
    done = subprocess.run(
        [sys.executable, "-m", "thermolog.cli", "broker", "init", "--out", str(tmp_path / "b"), "--devices",
         "esp32c3-01, esp32c3-02,sim_3", "--hostnames", "broker.example.net,10.1.2.3", "--port", "8884",
         "--service-port", "9884"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "mosquitto -c " in done.stdout and "mosquitto.conf" in done.stdout
    return BrokerLayout((tmp_path / "b").resolve())


def test_secrets_are_private_and_every_user_has_credentials(initialised: BrokerLayout) -> None:
    layout = initialised
    for secret in (layout.ca_key, layout.server_key, layout.password_file, layout.service_password_file):
        assert _mode(secret) == 0o600, secret
    assert _mode(layout.credentials_dir) == 0o700
    envs = sorted(p.stem for p in layout.credentials_dir.glob("*.env"))
    assert envs == ["app", "edge", "esp32c3-01", "esp32c3-02", "ingest", "sim_3"]
    for env in layout.credentials_dir.glob("*.env"):
        assert _mode(env) == 0o600
        values = read_credentials(env)
        port = 9884 if env.stem in broker_module.SERVICE_USERS else 8884
        assert values["THERMOLOG_MQTT_URL"] == f"mqtts://broker.example.net:{port}"
        assert values["THERMOLOG_MQTT_USERNAME"] == env.stem
        assert Path(values["THERMOLOG_MQTT_CA_FILE"]) == layout.ca_cert
        assert len(values["THERMOLOG_MQTT_PASSWORD"]) >= 24
    passwords = {read_credentials(p)["THERMOLOG_MQTT_PASSWORD"] for p in layout.credentials_dir.glob("*.env")}
    assert len(passwords) == 6, "every user has its own password"


def test_password_file_holds_only_hashes_of_the_credentials(initialised: BrokerLayout) -> None:
    """Devices in one password file, services in the other (each listener reads its own)."""
    layout = initialised
    devices = dict(line.split(":", 1) for line in layout.password_file.read_text().splitlines())
    services = dict(line.split(":", 1) for line in layout.service_password_file.read_text().splitlines())
    assert set(devices) == {"esp32c3-01", "esp32c3-02", "sim_3"}
    assert set(services) == {"app", "edge", "ingest"}
    hashes = {**devices, **services}
    for user, hashed in hashes.items():
        password = read_credentials(layout.credentials(user))["THERMOLOG_MQTT_PASSWORD"]
        assert password not in hashed
        assert hashed.startswith("$7$")
        assert broker_module.verify_mosquitto_hash(password, hashed)
        assert not broker_module.verify_mosquitto_hash(password + "x", hashed)


def test_acl_gives_each_device_only_its_own_topics(initialised: BrokerLayout) -> None:
    blocks: dict[str, list[str]] = {}
    current = None
    for line in initialised.acl_file.read_text().splitlines():
        if line.startswith("user "):
            current = line.split()[1]
            blocks[current] = []
        elif line.startswith(("topic", "pattern")):
            assert current is not None, f"{line!r} would apply to anonymous clients or to everybody"
            blocks[current].append(line)
    assert blocks["esp32c3-02"] == [
        "topic write thermostats/esp32c3-02/telemetry",
        "topic write thermostats/esp32c3-02/status",
        "topic write thermostats/esp32c3-02/state",
        "topic write thermostats/esp32c3-02/cmd/ack",
        "topic read thermostats/esp32c3-02/cmd",
        "topic read thermostats/esp32c3-02/schedule/points",
        "topic write homeassistant/climate/esp32c3-02/config",
    ]
    assert blocks["ingest"] == ["topic read thermostats/#", "topic read edge/#", "topic read iot/+/status",
                                "topic read zigbee2mqtt/#"]
    assert [rule for rule in blocks["app"] if " write " in rule] == [
        "topic write thermostats/+/cmd", "topic write thermostats/+/cmd/refused", "topic write thermostats/+/alert",
        "topic write thermostats/+/cmd/audit", "topic write thermostats/+/schedule",
        "topic write thermostats/+/schedule/points", "topic write iot/+/cmd", "topic write zigbee2mqtt/+/set",
        "topic write zigbee2mqtt/+/+/set", "topic write zigbee2mqtt/+/+/+/set"]
    assert [rule for rule in blocks["edge"] if " write " in rule] == ["topic write thermostats/+/cmd",
                                                                      "topic write edge/+/system"]


def _listeners(conf: list[str]) -> dict[str, list[str]]:
    """Each listener line with the lines that follow it up to the next blank line."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in conf:
        if line.startswith("listener "):
            current = line
            blocks[current] = []
        elif not line.strip():
            current = None
        elif current is not None:
            blocks[current].append(line)
    return blocks


def test_config_is_tls_only_refuses_anonymous_and_binds_device_client_ids(initialised: BrokerLayout) -> None:
    """Two TLS listeners with their own password files; on the devices' one the client id is the user name."""
    conf = initialised.conf.read_text().splitlines()
    assert "per_listener_settings true" in conf
    listeners = _listeners(conf)
    assert list(listeners) == ["listener 8884 0.0.0.0", "listener 9884 0.0.0.0"]
    devices, services = listeners.values()
    assert "use_username_as_clientid true" in devices and "use_username_as_clientid true" not in services
    assert f"password_file {initialised.password_file}" in devices
    assert f"password_file {initialised.service_password_file}" in services
    assert "max_connections 100" in devices
    for block in (devices, services):
        assert "allow_anonymous false" in block
        for key, path in (("cafile", initialised.ca_cert), ("certfile", initialised.server_cert),
                          ("keyfile", initialised.server_key), ("acl_file", initialised.acl_file)):
            assert f"{key} {path}" in block
            assert path.exists()


def test_config_bounds_what_one_client_can_hold(initialised: BrokerLayout) -> None:
    """Per client: queued messages stop at a count and at a byte size; in-flight bytes and packet size are capped."""
    conf = initialised.conf.read_text().splitlines()
    for line in ("max_queued_messages 100000", f"max_queued_bytes {64 * 1024 * 1024}", "max_inflight_messages 100",
                 f"max_inflight_bytes {1024 * 1024}", "max_packet_size 131072"):
        assert line in conf


def test_server_certificate_names_and_chain(initialised: BrokerLayout) -> None:
    ca = x509.load_pem_x509_certificate(initialised.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(initialised.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert x509.load_der_x509_certificate(initialised.ca_der.read_bytes()) == ca  # the firmware's copy
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "broker.example.net"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.1.2.3"}
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_existing_configuration_is_kept_without_force(initialised: BrokerLayout) -> None:
    before = initialised.ca_cert.read_bytes()
    with pytest.raises(FileExistsError):
        init_broker(BrokerPlan(out=initialised.root, devices=["d1"]))
    assert initialised.ca_cert.read_bytes() == before
    init_broker(BrokerPlan(out=initialised.root, devices=["d1"]), force=True)
    assert initialised.ca_cert.read_bytes() != before


@pytest.mark.parametrize("devices, reason", [
    (["a/b"], "must match"), (["#"], "must match"), (["ingest"], "collides"), (["d1", "d1"], "unique"),
    ([], "at least one"), (["x" * 65], "must match"),
])
def test_unsafe_device_ids_are_refused(tmp_path: Path, devices: list[str], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        init_broker(BrokerPlan(out=tmp_path / "b", devices=devices))
    assert not (tmp_path / "b" / "mosquitto.conf").exists()


def test_cli_reports_a_bad_device_id_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "thermolog.cli", "broker", "init", "--out", str(tmp_path / "b"), "--devices", "a+b"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "must match" in done.stdout and "Traceback" not in done.stderr


def test_python_hashes_are_accepted_by_mosquitto() -> None:
    """Without mosquitto_passwd the hashes are computed in Python; a real Mosquitto accepts them."""
    broker = TlsBroker(["d1"], use_passwd_binary=False)
    try:
        assert broker.summary["hashed_by"] == "python"
        broker.start()
        ingest = broker.connected("ingest", "py-ingest")
        inbox = Inbox(ingest)
        subscribe(ingest, "thermostats/#")
        device = broker.connected("d1", "py-d1")
        device.publish("thermostats/d1/status", b"online", qos=1).wait_for_publish(5)
        assert inbox.wait_for(lambda m: ("thermostats/d1/status", b"online") in m)
        close(device, ingest)
    finally:
        broker.cleanup()


def test_mutual_tls_requires_a_client_certificate() -> None:
    """With --client-certs every user gets a certificate and a client without one is refused."""
    broker = TlsBroker(["d1"], client_certs=True)
    try:
        broker.start()
        close(broker.connected("d1", "mtls-d1"))  # with its certificate
        # The same client without a certificate: the handshake or (TLS 1.3) the first read fails.
        context = ssl.create_default_context(cafile=str(broker.layout.ca_cert))
        answer = b""
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as raw:
            try:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(PLAIN_CONNECT)
                    answer = tls.recv(4)
            except (ssl.SSLError, ConnectionResetError):
                pass
        assert not answer.startswith(b"\x20"), "a client without a certificate got a CONNACK"
    finally:
        broker.cleanup()


def test_shipped_config_is_the_rendering_for_etc() -> None:
    """deploy/mosquitto/mosquitto.conf is exactly what `broker init --out /etc/mosquitto/thermolog` writes."""
    assert SHIPPED_CONF.read_text() == broker_module.render_conf(BrokerLayout(SHIPPED_ROOT))
