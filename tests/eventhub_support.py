"""Events as IoT Hub's built-in endpoint delivers them, built locally, and the settings pointing at a fake hub."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from azure.eventhub import EventData

NAMESPACE = "ihsuprodthermolog.servicebus.windows.net"
EVENTHUB = "thermolog-hub"
EDGE_DEVICE = "edge-gw-1"
"""The edge device the test deployment trusts (``THERMOLOG_IOTHUB_ALLOWED_EDGE_DEVICES``)."""
CONNECTION_STRING = (f"Endpoint=sb://{NAMESPACE}/;SharedAccessKeyName=service;"
                     f"SharedAccessKey=c3RhbmQtaW4ta2V5;EntityPath={EVENTHUB}")


def reading(device_id: str, second: int, temperature: float = 21.0) -> bytes:
    """A valid telemetry payload at 2026-01-01T00:00:{second}Z."""
    return orjson.dumps({"temperature": temperature, "timestamp": f"2026-01-01T00:{second // 60:02d}:"
                         f"{second % 60:02d}Z", "humidity": 40.0, "target_temp": 21, "device_id": device_id,
                         "heating": "ON"})


def iothub_event(body: bytes, sequence_number: int, connection_device: str, module: str | None = None,
                 properties: dict[str, str] | None = None) -> EventData:
    """An event with the annotations IoT Hub adds (connection device/module id, offset, sequence number) and
    application properties keyed by bytes, as the AMQP client hands them over."""
    event = EventData(body)
    annotations = {
        b"x-opt-sequence-number": sequence_number,
        b"x-opt-offset": str(sequence_number * 616).encode(),
        b"x-opt-enqueued-time": int(time.time() * 1000),
        b"iothub-connection-device-id": connection_device.encode(),
        b"iothub-connection-auth-method": b'{"scope":"module","type":"sas","issuer":"iothub"}',
        b"iothub-enqueuedtime": int(time.time() * 1000),
        b"iothub-message-source": b"Telemetry",
    }
    if module is not None:
        annotations[b"iothub-connection-module-id"] = module.encode()
    event.raw_amqp_message.annotations = annotations
    event.properties = {k.encode(): v.encode() for k, v in (properties or {}).items()}
    return event


def eventhub_settings_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a worker with the Event Hubs source configured (trusting :data:`EDGE_DEVICE`) and no MQTT
    broker needed."""
    return {"THERMOLOG_EVENTHUB_CONNECTION_STRING": CONNECTION_STRING,
            "THERMOLOG_IOTHUB_ALLOWED_EDGE_DEVICES": EDGE_DEVICE,
            "THERMOLOG_DB_PATH": str(tmp_path / "thermolog.duckdb"),
            "THERMOLOG_JOURNAL_DIR": str(tmp_path / "journal")}
