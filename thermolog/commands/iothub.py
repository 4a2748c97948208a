"""The IoT Hub command transport: the direct method ``setTargetTemp`` on the edge module ``thermostat_reader``.

``THERMOLOG_COMMAND_TRANSPORT=iothub`` routes ``thermolog.commands.send_command`` here. The command is validated
exactly as for MQTT, then invoked through azure-iot-hub's ``IoTHubRegistryManager.invoke_device_module_method``;
the module publishes ``cmd`` on the thermostats' broker and answers with the device's ack.

Outcomes, and how IoT Hub's answers map onto them:

- module 200 with ``ok: true`` -> ``ok``; ``ok: false`` -> ``refused`` with the device's reason;
- module 400 (it applies its own limits, set through its twin) -> ``refused`` with the module's reason;
- module 504 (the thermostat did not answer), hub 504 (the module did not answer), hub 404 ``DeviceNotOnline``
  -> ``timeout`` with a message saying which hop was silent;
- credentials refused (401/403), device or module unknown (404), hub errors (5xx) or an unreachable hub raise
  ``ConnectionError`` naming the setting to check: they concern every command, not this one.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
import requests
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod
from msrest.exceptions import ClientRequestError, HttpOperationError

from thermolog import contract
from thermolog.commands.model import OUTCOME_OK, OUTCOME_REFUSED, OUTCOME_TIMEOUT, CommandResult, build_command
from thermolog.settings import Settings, get_settings

log = logging.getLogger(__name__)

METHOD_NAME = "setTargetTemp"
HUB_MARGIN_S = 5
"""Extra seconds IoT Hub waits for the module beyond the command timeout (the module itself waits that long)."""
DEVICE_NOT_ONLINE = 404103


def registry_manager(settings: Settings) -> IoTHubRegistryManager:
    """A registry manager for the configured hub, verifying TLS with ``iothub_ca_file`` when set."""
    if not settings.iothub_connection_string:
        raise ConnectionError("THERMOLOG_IOTHUB_CONNECTION_STRING is empty: set the IoT Hub service connection "
                              "string to send commands over IoT Hub")
    if not settings.iothub_edge_device_id:
        raise ConnectionError("THERMOLOG_IOTHUB_EDGE_DEVICE_ID is empty: name the IoT Edge device that runs "
                              f"{settings.iothub_module_id}")
    try:
        manager = IoTHubRegistryManager.from_connection_string(settings.iothub_connection_string)
    except (ValueError, KeyError) as exc:
        raise ConnectionError(f"THERMOLOG_IOTHUB_CONNECTION_STRING is not a valid IoT Hub connection string: "
                              f"{exc}") from None
    connection = manager.protocol.config.connection
    if settings.iothub_ca_file:
        connection.verify = str(settings.iothub_ca_file)
    # The hub answers within connect + response timeouts; leave it a little longer on the wire.
    connection.timeout = settings.command_timeout_s + 2 * HUB_MARGIN_S
    return manager


def _error_details(response: requests.Response | None) -> tuple[int | None, str]:
    """IoT Hub's error code and message. Its bodies nest a JSON string in ``Message``."""
    if response is None:
        return None, ""
    try:
        body: Any = response.json()
    except ValueError:
        return None, response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("Message"), str):
        try:
            inner = orjson.loads(body["Message"])
            if isinstance(inner, dict):
                body = inner
        except orjson.JSONDecodeError:
            return None, body["Message"][:200]
    if not isinstance(body, dict):
        return None, str(body)[:200]
    code = body.get("errorCode")
    message = body.get("message") or body.get("Message") or ""
    return (code if isinstance(code, int) else None), str(message)


def send_iothub_command(device_id: str, target: object, issued_by: str | None = None,
                        settings: Settings | None = None) -> CommandResult:
    """Validate the setpoint and invoke ``setTargetTemp`` on ``thermostat_reader`` of the configured edge device."""
    settings = settings or get_settings()
    return deliver_iothub(device_id, build_command(device_id, target, issued_by, settings), settings)


def deliver_iothub(device_id: str, command: contract.Command, settings: Settings) -> CommandResult:
    """Invoke ``setTargetTemp`` for an already validated ``command`` (see ``send_iothub_command``)."""
    issued_by = command.issued_by
    manager = registry_manager(settings)
    edge, module = settings.iothub_edge_device_id, settings.iothub_module_id
    payload = {"device_id": device_id, "target_temp": command.target_temp, "request_id": command.request_id}
    if issued_by:
        payload["issued_by"] = issued_by
    request = CloudToDeviceMethod(method_name=METHOD_NAME, payload=payload, connect_timeout_in_seconds=0,
                                  response_timeout_in_seconds=math.ceil(settings.command_timeout_s) + HUB_MARGIN_S)

    def result(outcome: str, error: str | None = None, ack: contract.CommandAck | None = None) -> CommandResult:
        if error:
            log.warning("command %s to %s via %s/%s: %s", command.request_id, device_id, edge, module, error)
        return CommandResult(command.request_id, device_id, command.target_temp, outcome, error, ack)

    log.info("invoking %s on %s/%s: %s -> %.1f °C by %s", METHOD_NAME, edge, module, device_id,
             command.target_temp, issued_by or "unknown")
    try:
        answer = manager.invoke_device_module_method(edge, module, request)
    except HttpOperationError as exc:
        status = exc.response.status_code if exc.response is not None else None
        code, message = _error_details(exc.response)
        detail = f" (IoT Hub {status}{f' {code}' if code else ''}: {message})" if message else f" (IoT Hub {status})"
        if code == DEVICE_NOT_ONLINE:
            return result(OUTCOME_TIMEOUT, f"edge device {edge} is offline: {module} cannot reach {device_id}"
                                           f"{detail}")
        if status == 504:
            return result(OUTCOME_TIMEOUT, f"{module} on {edge} did not answer in time{detail}")
        if status in (401, 403):
            raise ConnectionError(f"IoT Hub refused the credentials{detail}: check "
                                  "THERMOLOG_IOTHUB_CONNECTION_STRING (a policy with service connect)") from None
        if status == 404:
            raise ConnectionError(f"IoT Hub knows no module {module} on device {edge}{detail}: check "
                                  "THERMOLOG_IOTHUB_EDGE_DEVICE_ID and THERMOLOG_IOTHUB_MODULE_ID") from None
        if status is not None and 400 <= status < 500:
            return result(OUTCOME_REFUSED, f"IoT Hub rejected the request{detail}")
        raise ConnectionError(f"IoT Hub failed to invoke {METHOD_NAME}{detail}") from None
    except ClientRequestError as exc:
        raise ConnectionError(f"cannot reach IoT Hub: {exc}. Check THERMOLOG_IOTHUB_CONNECTION_STRING and the "
                              "network (HTTPS, port 443)") from None

    status, body = answer.status, answer.payload
    error = body.get("error") if isinstance(body, dict) else None
    if status == 200:
        try:
            ack = contract.parse_ack(orjson.dumps(body))
        except contract.ContractError as exc:
            return result(OUTCOME_REFUSED, f"{module} answered 200 without a valid ack: {exc.reason}")
        if ack.ok:
            return result(OUTCOME_OK, None, ack)
        return result(OUTCOME_REFUSED, ack.error or "refused without a reason", ack)
    if status == 504:
        return result(OUTCOME_TIMEOUT, error or f"no answer from {device_id} within the module's timeout: is it "
                                                f"online?")
    if status == 400:
        return result(OUTCOME_REFUSED, f"{module} rejected the command: {error or 'invalid request'}")
    return result(OUTCOME_REFUSED, f"{module} answered {status}: {error or body}")
