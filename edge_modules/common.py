"""What every thermolog edge module shares: creating the IoTHubModuleClient, JSON messages, twin settings, retry.

Modules read their ordinary configuration from ``thermolog.settings`` (``THERMOLOG_*`` variables set in
``deployment.template.json``); module twin desired properties can change a few of them at run time, and the module
acknowledges what it applied in its reported properties.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import orjson
from azure.iot.device import IoTHubModuleClient, Message

from edge_modules.host import safe_host_name as safe_host_name  # re-exported: modules call common.safe_host_name
from thermolog import contract

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
JSON_CONTENT_ENCODING = "utf-8"
# Wire names live in the contract; these short aliases keep the modules readable.
PROP_DEVICE_ID = contract.IOTHUB_PROP_DEVICE_ID
PROP_HOST = contract.IOTHUB_PROP_HOST
PROP_KIND = contract.IOTHUB_PROP_KIND
KIND_TELEMETRY = contract.TELEMETRY
KIND_SYSTEM = contract.SYSTEM


def create_client(**kwargs: Any) -> IoTHubModuleClient:
    """A module client from the IoT Edge environment (``IOTEDGE_*`` and the workload API), or from the local
    development variables ``EdgeHubConnectionString`` and ``EdgeModuleCACertificateFile``.

    ``kwargs`` go to ``IoTHubModuleClient.create_from_edge_environment`` (e.g. ``proxy_options``).
    """
    return IoTHubModuleClient.create_from_edge_environment(**kwargs)


def json_message(payload: bytes, properties: dict[str, str]) -> Message:
    """A UTF-8 JSON message with the given application properties."""
    message = Message(payload, content_encoding=JSON_CONTENT_ENCODING, content_type=JSON_CONTENT_TYPE)
    message.custom_properties.update(properties)
    return message


class Backoff:
    """Exponential delays for retrying: ``first``, doubled each time, capped at ``cap`` seconds."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first, self.cap = first, cap
        self.delay = first

    def next(self) -> float:
        """The delay to wait now; the next one is twice as long (up to ``cap``)."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        """Start again from ``first`` (after a success)."""
        self.delay = self.first


def send_until_delivered(client: IoTHubModuleClient, message: Message, output: str, stop: threading.Event,
                         backoff: Backoff | None = None) -> bool:
    """Send ``message`` to ``output`` and retry with backoff until edgeHub acknowledges it or ``stop`` is set.

    Returns True once delivered, False only when stopped first. Every failure is logged with its cause.
    """
    backoff = backoff or Backoff()
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            client.send_message_to_output(message, output)
            return True
        except Exception as exc:  # noqa: BLE001 - any failure of the client means "try again later"
            delay = backoff.next()
            log.warning("sending to output %s failed (attempt %d: %s: %s); retrying in %.1f s",
                        output, attempt, type(exc).__name__, exc, delay)
            stop.wait(delay)
    return False


# --- module twin ------------------------------------------------------------------------------------------------

TwinField = Callable[[Any], Any]
"""Checks and converts one desired property value; raises ValueError with a reason when it is not acceptable."""


def number_field(low: float | None = None, high: float | None = None) -> TwinField:
    """A twin field that accepts a number within ``[low, high]``."""

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, got {value!r}")
        if low is not None and value < low or high is not None and value > high:
            raise ValueError(f"must be within [{low}, {high}], got {value}")
        return float(value)

    return check


def topic_prefix_field(value: Any) -> str:
    """A twin field for an MQTT topic prefix: one non-empty level without wildcards."""
    if not isinstance(value, str) or not value or any(c in value for c in "/+#") or value.startswith("$"):
        raise ValueError(f"must be one topic level without '/', '+', '#' or a leading '$', got {value!r}")
    return value


class TwinSettings:
    """Applies module twin desired properties to a module and acknowledges them in reported properties.

    ``fields`` maps desired property names to checkers; ``apply`` receives the checked values that changed (all
    at once, so related limits are applied together) and may raise ValueError to refuse them. Reported
    properties then carry the values in force, the desired ``$version`` they answer (``applied_version``) and,
    for refused values, ``errors``.
    """

    def __init__(self, client: IoTHubModuleClient, fields: dict[str, TwinField],
                 apply: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.client, self.fields, self.apply = client, fields, apply
        self._lock = threading.Lock()

    def start(self) -> None:
        """Read the full twin, apply its desired properties and listen for patches."""
        self.client.on_twin_desired_properties_patch_received = self.on_desired_patch_received
        twin = self.client.get_twin()
        self.on_desired_patch_received(twin.get("desired", {}))

    def on_desired_patch_received(self, patch: dict[str, Any]) -> None:
        """Check every known key of the patch, apply the good ones, report values and errors."""
        with self._lock:
            errors: dict[str, str] = {}
            checked: dict[str, Any] = {}
            for key, value in patch.items():
                if key.startswith("$"):
                    continue
                checker = self.fields.get(key)
                if checker is None:
                    errors[key] = "unknown property"
                    continue
                try:
                    checked[key] = checker(value)
                except ValueError as exc:
                    errors[key] = str(exc)
            in_force: dict[str, Any] = {}
            if checked:
                try:
                    in_force = self.apply(checked)
                except ValueError as exc:
                    errors.update({key: str(exc) for key in checked})
            reported: dict[str, Any] = {**in_force, "applied_version": patch.get("$version")}
            # Reported properties are merged by the hub: null removes errors that no longer hold.
            reported["errors"] = errors or None
            if errors:
                log.warning("twin desired properties refused: %s", errors)
            log.info("twin desired properties applied: %s", in_force)
            self.client.patch_twin_reported_properties(reported)


def wait_for_shutdown(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM/SIGINT (what ``docker stop`` and IoT Edge send) and block until it is set."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def run_module(build: Callable[[IoTHubModuleClient], Any]) -> int:
    """A module's ``main()``: logging, a client from the edge environment, ``build(client)`` started and run
    until SIGTERM, then stopped. ``build`` returns an object with ``start()``, ``stop()`` and ``stop_event``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = build(create_client())
    module.start()
    try:
        wait_for_shutdown(module.stop_event)
    finally:
        module.stop()
    return 0


def dumps(data: Any) -> bytes:
    """Compact JSON bytes."""
    return orjson.dumps(data)
