"""Alert history events on MQTT: the one way the automation process and the app record alert history, since only
the ingest worker writes the database (it stores ``thermostats/{device_id}/alert`` in ``alert_events``)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from thermolog import contract
from thermolog.mqttclient import connect, make_client
from thermolog.settings import Settings, get_settings

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 5.0


def new_event(device_id: str, rule: str, event: str, *, message: str | None = None, delivered: list[str] | None = None,
              failed: list[str] | None = None, note: str | None = None, by: str | None = None,
              until: datetime | None = None, now: datetime | None = None) -> tuple[str, contract.AlertEvent]:
    """The topic-less event and its device id, validated against the contract (raises ContractError)."""
    contract.check_device_id(device_id)
    try:
        return device_id, contract.AlertEvent(
            event_id=uuid.uuid4().hex, event=event, rule=rule, timestamp=now or datetime.now(UTC),
            message=message[:1000] if message else None, delivered=delivered or [], failed=failed or [],
            note=note[:500] if note else None, by=by[:256] if by else None, until=until)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise contract.ContractError(f"invalid alert event: {exc}") from None


def publish(client: mqtt.Client, device_id: str, event: contract.AlertEvent,
            settings: Settings) -> mqtt.MQTTMessageInfo:
    """Queue ``event`` on ``client`` (QoS 1: paho keeps it across a reconnect)."""
    topic = contract.topic(device_id, contract.ALERT, settings.topic_prefix)
    return client.publish(topic, contract.dumps(event), qos=contract.QOS[contract.ALERT])


def publish_once(device_id: str, event: contract.AlertEvent, settings: Settings | None = None) -> bool:
    """Connect, publish one event, wait for the broker's PUBACK and disconnect (the app's acknowledge/silence).

    False, with a log line, when the broker cannot be reached in time.
    """
    settings = settings or get_settings()
    client = make_client(f"thermolog-alert-{event.event_id[:12]}", settings)
    try:
        connect(client, settings, timeout=PUBLISH_TIMEOUT_S)
        info = publish(client, device_id, event, settings)
        info.wait_for_publish(PUBLISH_TIMEOUT_S)
        client.disconnect()
        return info.is_published()
    except (ConnectionError, OSError, ValueError, RuntimeError) as exc:
        log.warning("could not publish the alert event for %s: %s", device_id, exc)
        return False
    finally:
        client.loop_stop()
