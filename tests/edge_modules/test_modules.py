"""The edge modules against a local edgeHub stand-in (TLS Mosquitto speaking the IoT Hub MQTT topics).

Each module runs its real ``IoTHubModuleClient`` (created from the IoT Edge local-development variables) and the
thermostats talk to a separate TLS Mosquitto through the project's simulator.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from edge_modules import common
from edge_modules.cloud_publisher.main import CloudPublisher
from edge_modules.system_reader.main import SystemReader
from edge_modules.thermostat_reader.main import ThermostatReader
from simulator.device import MqttLink, SimDevice
from simulator.model import DeviceParams
from tests.azure_standins.certs import make_tls_files
from tests.azure_standins.edgehub import EdgeHubStandIn, ModuleEvent, tls_listener
from tests.azure_standins.routes import load_manifest, manifest_routes
from tests.conftest import SEED_SYSTEM, PrivateBroker
from tests.waiting import wait_until
from thermolog import contract
from thermolog.settings import Settings

pytestmark = pytest.mark.broker

MANIFEST = Path(__file__).resolve().parents[2] / "edge_modules" / "deployment.template.json"
SEED_SYSTEM_KEYS = set(orjson.loads(SEED_SYSTEM))


@pytest.fixture(scope="module")
def edgehub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeHubStandIn]:
    """One edgeHub stand-in for this file, routing with the manifest's own routes."""
    hub = EdgeHubStandIn(tmp_path_factory.mktemp("edgehub"), routes=manifest_routes(load_manifest(MANIFEST)))
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def thermostat_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrivateBroker, Path]]:
    """The thermostats' own broker, TLS only; yields the broker and its CA file."""
    workdir = tmp_path_factory.mktemp("thermostat-broker")
    tls = make_tls_files(workdir / "tls")
    broker = PrivateBroker(workdir)
    broker.start(listener=tls_listener(broker.port, tls))
    yield broker, tls.ca
    broker.stop()


@pytest.fixture
def edge_device(edgehub: EdgeHubStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh edge device id; the environment lets each module client find the stand-in."""
    monkeypatch.chdir(tmp_path)  # no developer .env / thermolog.toml
    for name in ("IOTEDGE_WORKLOADURI", "IOTEDGE_DEVICEID", "IOTEDGE_MODULEID"):
        monkeypatch.delenv(name, raising=False)
    edgehub.desired.clear()
    return f"edge-{uuid.uuid4().hex[:8]}"


def module_client(edgehub: EdgeHubStandIn, monkeypatch: pytest.MonkeyPatch, device_id: str, module_id: str):
    """The module's client, created exactly as main() does, from the IoT Edge development variables."""
    for key, value in edgehub.module_env(device_id, module_id).items():
        monkeypatch.setenv(key, value)
    return common.create_client(**edgehub.client_kwargs())


@pytest.fixture
def reader_settings(thermostat_broker: tuple[PrivateBroker, Path], topic_prefix: str) -> Settings:
    """Settings of thermostat_reader: the TLS thermostat broker, a unique prefix, a short command timeout."""
    broker, ca = thermostat_broker
    return Settings(mqtt_url=f"mqtts://localhost:{broker.port}", mqtt_ca_file=ca, topic_prefix=topic_prefix,
                    command_timeout_s=1.5)


@pytest.fixture
def thermostat(reader_settings: Settings) -> Iterator[tuple[SimDevice, MqttLink]]:
    """A simulated thermostat (the project's simulator) on the TLS broker."""
    device = SimDevice(DeviceParams.draw(f"th-{uuid.uuid4().hex[:6]}", 7), seed=7, t0=time.time(),
                       settings=reader_settings)
    link = MqttLink([device], f"sim-{device.device_id}", reader_settings)
    link.start()
    yield device, link
    link.stop(timeout=5)


@pytest.fixture
def reader(edgehub: EdgeHubStandIn, edge_device: str, reader_settings: Settings,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[ThermostatReader]:
    """A running thermostat_reader."""
    module = ThermostatReader(module_client(edgehub, monkeypatch, edge_device, "thermostat_reader"),
                              reader_settings, mqtt_client_id=f"reader-{edge_device}")
    module.start()
    yield module
    module.stop()


def events_of(recorded, device_id: str, module_id: str, output: str | None = None) -> list[ModuleEvent]:
    """Module events of one device/module (and output)."""
    return [e for e in recorded.events if e.device_id == device_id and e.module_id == module_id
            and (output is None or e.output == output)]


def test_thermostat_reader_sends_readings_with_iothub_topic_and_properties(
        edgehub: EdgeHubStandIn, edge_device: str, reader: ThermostatReader,
        thermostat: tuple[SimDevice, MqttLink]) -> None:
    """A valid reading reaches output telemetry on IoT Hub's topic with content type, encoding and device id."""
    device, link = thermostat
    bad = link.client.publish(f"{reader.settings.topic_prefix}/{device.device_id}/telemetry", b'{"temperature": 1}',
                              qos=1)
    bad.wait_for_publish(5)
    link.publish_reading(device, timeout=5)
    event = edgehub.wait_for(lambda r: events_of(r, edge_device, "thermostat_reader", "telemetry"))[0]
    assert event.topic.startswith(f"devices/{edge_device}/modules/thermostat_reader/messages/events/")
    assert event.properties["$.ct"] == "application/json"
    assert event.properties["$.ce"] == "utf-8"
    assert event.properties["device_id"] == device.device_id
    assert event.properties["message_kind"] == "telemetry"
    reading = contract.parse_telemetry(event.body, device.device_id)
    assert reading.device_id == device.device_id
    assert reader.rejected == 1  # the broken payload was refused, not forwarded
    assert len(events_of(edgehub.recorded, edge_device, "thermostat_reader")) == 1


def test_set_target_temp_returns_the_device_ack(edgehub: EdgeHubStandIn, reader: ThermostatReader,
                                                 thermostat: tuple[SimDevice, MqttLink]) -> None:
    """setTargetTemp goes over MQTT to the thermostat; its ack comes back as the 200 method response."""
    device, _link = thermostat
    status, body = edgehub.invoke_method("setTargetTemp", {"device_id": device.device_id, "target_temp": 21.5,
                                                            "issued_by": "operator@example.com"})
    assert status == 200
    assert body["ok"] is True
    assert body["target_temp"] == 21.5
    assert len(body["request_id"]) == 32
    # the IoT Hub transport passes its own request id: the ack carries it back
    status, body = edgehub.invoke_method("setTargetTemp", {"device_id": device.device_id, "target_temp": 22,
                                                            "request_id": "app-0001"})
    assert (status, body["request_id"], body["target_temp"]) == (200, "app-0001", 22.0)
    assert device.state().target_temp == 22.0


@pytest.mark.parametrize("payload", [
    {"device_id": "esp32c3-01", "target_temp": 50},      # above the 35 °C limit
    {"device_id": "esp32c3-01", "target_temp": 21.3},    # not a 0.5 step
    {"device_id": "bad/id", "target_temp": 21.5},        # breaks the device id pattern
    {"target_temp": 21.5},                               # no device
    [1, 2],                                              # not an object
    {"device_id": "esp32c3-01", "target_temp": 20, "request_id": "r" * 65},  # request id too long
])
def test_set_target_temp_invalid_request_gets_400(edgehub: EdgeHubStandIn, reader: ThermostatReader,
                                                  payload: object) -> None:
    """A request that breaks the command rules is answered 400 with the reason, and nothing is published."""
    status, body = edgehub.invoke_method("setTargetTemp", payload)
    assert status == 400
    assert body["error"]


def test_set_target_temp_silent_device_gets_504(edgehub: EdgeHubStandIn, reader: ThermostatReader) -> None:
    """No ack within the command timeout: 504 with a message naming the device."""
    status, body = edgehub.invoke_method("setTargetTemp", {"device_id": "nobody-home", "target_temp": 20})
    assert status == 504
    assert "nobody-home" in body["error"]


def test_original_method_names_set_increase_decrease(edgehub: EdgeHubStandIn, reader: ThermostatReader,
                                                     thermostat: tuple[SimDevice, MqttLink]) -> None:
    """The original edge module's `set` ({"target_temp": 22}, the one thermostat implied), `increase` and
    `decrease` (±1 °C from the latest reading's target) work next to setTargetTemp."""
    device, link = thermostat
    status, body = edgehub.invoke_method("increase", {})
    assert status == 400 and "device_id" in body["error"]  # no reading yet: which thermostat is unknown
    link.publish_reading(device, timeout=5)
    wait_until(lambda: reader.targets.get(device.device_id), 10, "the reader to learn the target", interval=0.02)
    status, body = edgehub.invoke_method("set", {"target_temp": 22})
    assert (status, body["ok"], body["target_temp"]) == (200, True, 22.0)
    link.publish_reading(device, timeout=5)
    wait_until(lambda: reader.targets.get(device.device_id) == 22.0, 10, "target 22.0", interval=0.02)
    status, body = edgehub.invoke_method("increase", {"device_id": device.device_id})
    assert (status, body["target_temp"]) == (200, 23.0)
    link.publish_reading(device, timeout=5)
    wait_until(lambda: reader.targets.get(device.device_id) == 23.0, 10, "target 23.0", interval=0.02)
    status, body = edgehub.invoke_method("decrease", None)
    assert (status, body["target_temp"]) == (200, 22.0)
    assert device.state().target_temp == 22.0


def test_unknown_method_gets_404(edgehub: EdgeHubStandIn, reader: ThermostatReader) -> None:
    """Only setTargetTemp and the original set/increase/decrease exist."""
    status, body = edgehub.invoke_method("reboot", {})
    assert status == 404
    assert "setTargetTemp" in body["error"]


def test_twin_desired_properties_are_applied_and_reported(
        edgehub: EdgeHubStandIn, edge_device: str, reader_settings: Settings,
        thermostat: tuple[SimDevice, MqttLink], monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits from the twin apply at start and on patches; the values in force come back as reported properties."""
    device, link = thermostat
    edgehub.desired.update({"setpoint_max_c": 25.0})
    module = ThermostatReader(module_client(edgehub, monkeypatch, edge_device, "thermostat_reader"),
                              reader_settings, mqtt_client_id=f"reader-{edge_device}")
    module.start()
    try:
        first = edgehub.wait_for(lambda r: [p for p in r.reported if p.get("setpoint_max_c") == 25.0])[0]
        assert first["applied_version"] == edgehub.desired_version
        status, body = edgehub.invoke_method("setTargetTemp", {"device_id": device.device_id, "target_temp": 30})
        assert status == 400 and "25" in body["error"]

        new_prefix = f"{reader_settings.topic_prefix}x"
        version = edgehub.patch_desired({"setpoint_max_c": 32.0, "topic_prefix": new_prefix, "interval_s": 0})
        reported = edgehub.wait_for(lambda r: [p for p in r.reported if p.get("applied_version") == version])[0]
        assert reported["setpoint_max_c"] == 32.0 and reported["topic_prefix"] == new_prefix
        assert reported["errors"] is None

        # the module now listens on the new prefix
        moved = MqttLink([device], f"sim2-{device.device_id}", reader_settings, topic_prefix=new_prefix)
        moved.start()
        try:
            moved.publish_reading(device, timeout=5)
            edgehub.wait_for(lambda r: events_of(r, edge_device, "thermostat_reader", "telemetry"))
        finally:
            moved.stop(timeout=5)

        refused = edgehub.patch_desired({"setpoint_min_c": 40.0, "colour": "red"})
        answer = edgehub.wait_for(lambda r: [p for p in r.reported if p.get("applied_version") == refused])[0]
        assert set(answer["errors"]) == {"setpoint_min_c", "colour"}
        assert module.settings.setpoint_min_c == 5.0  # the refused limit did not apply
    finally:
        module.stop()


def test_system_reader_sends_seed_shaped_samples(edgehub: EdgeHubStandIn, edge_device: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Samples go to output system with the seed's keys, a UTC timestamp and the network counters."""
    settings = Settings(edge_system_interval_s=1)
    module = SystemReader(module_client(edgehub, monkeypatch, edge_device, "system_reader"), settings,
                          host=edge_device)
    before = datetime.now(UTC)
    module.start()
    try:
        events = edgehub.wait_for(lambda r: (e := events_of(r, edge_device, "system_reader", "system"))
                                  and len(e) >= 2 and e)
    finally:
        module.stop()
    event = events[0]
    assert event.topic.startswith(f"devices/{edge_device}/modules/system_reader/messages/events/")
    assert event.properties["$.ct"] == "application/json" and event.properties["$.ce"] == "utf-8"
    assert event.properties["host"] == edge_device
    body = orjson.loads(event.body)
    assert SEED_SYSTEM_KEYS <= set(body)
    assert body["timestamp"].endswith("Z")
    metrics = contract.parse_system(event.body)
    assert before - timedelta(seconds=1) <= metrics.timestamp <= datetime.now(UTC)
    assert metrics.net_bytes_sent is not None and metrics.net_bytes_recv is not None


def test_routes_carry_readings_and_samples_upstream_through_cloud_publisher(
        edgehub: EdgeHubStandIn, edge_device: str, reader_settings: Settings,
        thermostat: tuple[SimDevice, MqttLink], monkeypatch: pytest.MonkeyPatch) -> None:
    """With the manifest's routes, readings and host samples reach $upstream from cloud_publisher, unchanged."""
    device, link = thermostat
    publisher = CloudPublisher(module_client(edgehub, monkeypatch, edge_device, "cloud_publisher"))
    publisher.start()
    reader = ThermostatReader(module_client(edgehub, monkeypatch, edge_device, "thermostat_reader"),
                              reader_settings, mqtt_client_id=f"reader-{edge_device}")
    reader.start()
    system = SystemReader(module_client(edgehub, monkeypatch, edge_device, "system_reader"),
                          Settings(edge_system_interval_s=1), host=edge_device)
    system.start()
    try:
        for _ in range(3):
            device.advance(device.t + 60)
            link.publish_reading(device, timeout=5)

        def upstream(kind: str) -> list[ModuleEvent]:
            return [e for e in edgehub.recorded.upstream if e.device_id == edge_device
                    and e.module_id == "cloud_publisher" and e.output == kind]

        readings = edgehub.wait_for(lambda r: len(upstream("telemetry")) >= 3 and upstream("telemetry"))
        samples = edgehub.wait_for(lambda r: upstream("system"))
    finally:
        system.stop()
        reader.stop()
        publisher.stop()
    sent = [e.body for e in events_of(edgehub.recorded, edge_device, "thermostat_reader", "telemetry")]
    assert [e.body for e in readings] == sent  # same bodies, same order, none lost or repeated
    assert all(e.properties["device_id"] == device.device_id for e in readings)
    assert all(e.properties["$.ct"] == "application/json" for e in readings + samples)
    assert samples[0].properties["message_kind"] == "system"
    contract.parse_system(samples[0].body)


class FlakyClient:
    """A module client whose sends fail ``failures`` times before succeeding, recording what got through."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, bytes]] = []
        self.attempts = 0
        self.tried = threading.Condition()

    def send_message_to_output(self, message, output: str) -> None:
        with self.tried:
            self.attempts += 1
            self.tried.notify_all()
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("edgeHub unreachable")
        self.sent.append((output, message.data))


def test_cloud_publisher_retries_until_delivered_and_keeps_order() -> None:
    """Send failures are retried with backoff; every input arrives once, in order."""
    client = FlakyClient(failures=3)
    publisher = CloudPublisher(client, backoff=common.Backoff(first=0.01, cap=0.02))  # type: ignore[arg-type]
    inputs = []
    for i in range(5):
        message = common.json_message(orjson.dumps({"n": i}), {})
        message.input_name = "telemetry"
        inputs.append(message)
    for message in inputs:
        publisher.on_input_received(message)
    assert client.sent == [("telemetry", orjson.dumps({"n": i})) for i in range(5)]
    assert client.attempts == 8
    assert publisher.forwarded == 5


def test_cloud_publisher_stops_retrying_on_shutdown() -> None:
    """A message still undelivered at shutdown is not reported as forwarded."""
    client = FlakyClient(failures=10**6)
    publisher = CloudPublisher(client, backoff=common.Backoff(first=0.01, cap=0.02))  # type: ignore[arg-type]
    message = common.json_message(b"{}", {})
    message.input_name = "system"
    worker = threading.Thread(target=publisher.on_input_received, args=(message,))
    worker.start()
    wait_until(lambda: client.attempts >= 3, 5, "three failed sends", changed=client.tried)
    publisher.stop_event.set()
    worker.join(5)
    assert not worker.is_alive()
    assert client.attempts >= 3 and publisher.forwarded == 0


def test_module_client_reaches_a_stand_in_off_port_8883_through_socks5(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback used when 8883 is taken: the client's proxy option carries the same TLS session elsewhere."""
    monkeypatch.chdir(tmp_path)
    hub = EdgeHubStandIn(tmp_path, routes=manifest_routes(load_manifest(MANIFEST)), force_proxy=True).start()
    try:
        assert hub.port != 8883 and hub.client_kwargs()
        module = SystemReader(module_client(hub, monkeypatch, "edge-proxied", "system_reader"),
                              Settings(edge_system_interval_s=1), host="edge-proxied")
        module.start()
        try:
            event = hub.wait_for(lambda r: events_of(r, "edge-proxied", "system_reader", "system"))[0]
        finally:
            module.stop()
        contract.parse_system(event.body)
    finally:
        hub.stop()
