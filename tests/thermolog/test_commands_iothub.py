"""The IoT Hub command transport against a local HTTPS stand-in for IoT Hub's service API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.azure_standins.iothub_https import POLICY, HubRequest, IoTHubHttpsStandIn, check_sas, iothub_error
from tests.conftest import free_port
from thermolog import commands
from thermolog.commands import OUTCOME_OK, OUTCOME_REFUSED, OUTCOME_TIMEOUT, InvalidCommand, send_command
from thermolog.commands.iothub import send_iothub_command
from thermolog.settings import Settings

API_VERSION = "2021-04-12"  # the service API version azure-iot-hub 2.x speaks
EDGE = "edge-gw-1"


def module_answers(status: int, payload: object) -> tuple[int, object]:
    """What IoT Hub returns when the module answered: HTTP 200 carrying the module's status and payload."""
    return 200, {"status": status, "payload": payload}


def ack_for(request: HubRequest, ok: bool = True, error: str | None = None) -> dict:
    """The ack a thermostat would return for this request, as thermostat_reader relays it."""
    body = request.body["payload"]
    ack = {"request_id": body["request_id"], "ok": ok, "target_temp": body["target_temp"]}
    return ack | ({"error": error} if error else {})


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[IoTHubHttpsStandIn]:
    """The stand-in; tests set ``hub.responder``."""
    stand_in = IoTHubHttpsStandIn(tmp_path, lambda r: module_answers(200, ack_for(r))).start()
    yield stand_in
    stand_in.stop()


@pytest.fixture
def settings(hub: IoTHubHttpsStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """iothub transport settings pointing at the stand-in and trusting its CA."""
    monkeypatch.chdir(tmp_path)
    return Settings(command_transport="iothub", iothub_connection_string=hub.connection_string(),
                    iothub_edge_device_id=EDGE, iothub_ca_file=hub.tls.ca, command_timeout_s=3)


def test_command_invokes_set_target_temp_on_thermostat_reader(hub: IoTHubHttpsStandIn, settings: Settings) -> None:
    """Path, api-version, SAS header and JSON body are what IoT Hub expects; the ack comes back as ``ok``."""
    result = send_command("esp32c3-01", "21,5", issued_by="operator@example.com", settings=settings)
    assert result.outcome == OUTCOME_OK and result.error is None
    assert result.ack is not None and result.ack.request_id == result.request_id
    (request,) = hub.requests
    assert request.path == f"/twins/{EDGE}/modules/thermostat_reader/methods"
    assert request.query["api-version"] == [API_VERSION]
    sas = check_sas(request.headers["Authorization"])
    assert sas["sr"] == hub.expected_sr and sas["skn"] == POLICY and int(sas["se"]) > time.time()
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.body == {
        "methodName": "setTargetTemp",
        "payload": {"device_id": "esp32c3-01", "target_temp": 21.5, "request_id": result.request_id,
                    "issued_by": "operator@example.com"},
        "responseTimeoutInSeconds": 8,
        "connectTimeoutInSeconds": 0,
    }


def test_device_refusal_is_refused_with_its_reason(hub: IoTHubHttpsStandIn, settings: Settings) -> None:
    """``ok: false`` from the thermostat becomes ``refused`` with the device's own reason."""
    hub.responder = lambda r: module_answers(200, ack_for(r, ok=False, error="window open"))
    result = send_iothub_command("esp32c3-01", 22, settings=settings)
    assert result.outcome == OUTCOME_REFUSED and result.error == "window open"


def test_module_400_is_refused_with_the_module_reason(hub: IoTHubHttpsStandIn, settings: Settings) -> None:
    """thermostat_reader applies its own (twin) limits: its 400 names the rule."""
    hub.responder = lambda r: module_answers(400, {"error": "30.0 °C is above the maximum 25.0 °C"})
    result = send_iothub_command("esp32c3-01", 30, settings=settings)
    assert result.outcome == OUTCOME_REFUSED
    assert result.error == "thermostat_reader rejected the command: 30.0 °C is above the maximum 25.0 °C"


def test_module_504_is_a_timeout_naming_the_device(hub: IoTHubHttpsStandIn, settings: Settings) -> None:
    """The thermostat behind the module stayed silent."""
    hub.responder = lambda r: module_answers(504, {"request_id": "x", "error": "no answer from esp32c3-01 within 10 s"})
    result = send_iothub_command("esp32c3-01", 20, settings=settings)
    assert result.outcome == OUTCOME_TIMEOUT and "esp32c3-01" in result.error


def test_offline_edge_device_is_a_clear_timeout(hub: IoTHubHttpsStandIn, settings: Settings) -> None:
    """IoT Hub's 404103 DeviceNotOnline says the edge device is offline, not that the command was bad."""
    hub.responder = lambda r: (404, iothub_error(404103, "Timed out waiting for device to connect."))
    result = send_iothub_command("esp32c3-01", 20, settings=settings)
    assert result.outcome == OUTCOME_TIMEOUT
    assert result.error.startswith(f"edge device {EDGE} is offline")
    assert "404103" in result.error and "Timed out waiting for device to connect." in result.error


def test_hub_gateway_timeout_is_a_clear_timeout(hub: IoTHubHttpsStandIn, settings: Settings) -> None:
    """IoT Hub's 504 means the module did not answer within responseTimeoutInSeconds."""
    hub.responder = lambda r: (504, iothub_error(504101, "Timed out waiting for the response from device."))
    result = send_iothub_command("esp32c3-01", 20, settings=settings)
    assert result.outcome == OUTCOME_TIMEOUT
    assert result.error.startswith(f"thermostat_reader on {EDGE} did not answer in time")


def test_hub_400_is_refused_with_the_hub_message(hub: IoTHubHttpsStandIn, settings: Settings) -> None:
    """Other 4xx answers reach the user with IoT Hub's own message."""
    hub.responder = lambda r: (400, iothub_error(400027, "Method name is invalid"))
    result = send_iothub_command("esp32c3-01", 20, settings=settings)
    assert result.outcome == OUTCOME_REFUSED and "Method name is invalid" in result.error


@pytest.mark.parametrize(("status", "code", "setting"), [
    (401, 401002, "THERMOLOG_IOTHUB_CONNECTION_STRING"),
    (404, 404001, "THERMOLOG_IOTHUB_EDGE_DEVICE_ID"),
    (500, 500001, "setTargetTemp"),
])
def test_configuration_and_hub_errors_raise_connection_error(hub: IoTHubHttpsStandIn, settings: Settings,
                                                             status: int, code: int, setting: str) -> None:
    """Errors that concern every command (credentials, unknown device/module, hub failure) raise, naming the fix."""
    hub.responder = lambda r: (status, iothub_error(code, "stand-in error"))
    with pytest.raises(ConnectionError, match=setting) as info:
        send_iothub_command("esp32c3-01", 20, settings=settings)
    assert f"IoT Hub {status} {code}: stand-in error" in str(info.value)


def test_invalid_setpoint_never_reaches_the_hub(hub: IoTHubHttpsStandIn, settings: Settings) -> None:
    """Validation happens before any request, with the same rules as the MQTT transport."""
    with pytest.raises(InvalidCommand):
        send_iothub_command("esp32c3-01", 36, settings=settings)
    with pytest.raises(InvalidCommand):
        send_iothub_command("bad id", 20, settings=settings)
    assert hub.requests == []


@pytest.mark.slow
def test_untrusted_certificate_is_refused(hub: IoTHubHttpsStandIn, settings: Settings) -> None:
    """Without the stand-in's CA the TLS check fails: the CA setting is what made the other tests pass."""
    untrusting = settings.model_copy(update={"iothub_ca_file": None})
    with pytest.raises(ConnectionError, match="cannot reach IoT Hub"):
        send_iothub_command("esp32c3-01", 20, settings=untrusting)
    assert hub.requests == []


@pytest.mark.slow
def test_unreachable_hub_and_missing_settings_are_clear(settings: Settings) -> None:
    """A closed port and empty settings each raise ConnectionError naming what to check."""
    closed = settings.model_copy(update={"iothub_connection_string":
                                         f"HostName=localhost:{free_port()};SharedAccessKeyName=s;SharedAccessKey=a2V5"})
    with pytest.raises(ConnectionError, match="cannot reach IoT Hub"):
        send_iothub_command("esp32c3-01", 20, settings=closed)
    with pytest.raises(ConnectionError, match="THERMOLOG_IOTHUB_CONNECTION_STRING"):
        send_iothub_command("esp32c3-01", 20, settings=settings.model_copy(update={"iothub_connection_string": ""}))
    with pytest.raises(ConnectionError, match="THERMOLOG_IOTHUB_EDGE_DEVICE_ID"):
        send_iothub_command("esp32c3-01", 20, settings=settings.model_copy(update={"iothub_edge_device_id": ""}))


def test_mqtt_stays_the_default_transport() -> None:
    """The dispatch only takes the IoT Hub path when asked to."""
    assert Settings.model_fields["command_transport"].default == "mqtt"
    assert commands.send_command.__module__ == "thermolog.commands.dispatch"
