"""The MQTT command transport: publish ``cmd``, await the ``cmd/ack`` with the same ``request_id``."""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt

from thermolog import contract
from thermolog.commands.model import OUTCOME_OK, OUTCOME_REFUSED, OUTCOME_TIMEOUT, CommandResult, build_command
from thermolog.mqttclient import connect, make_client
from thermolog.settings import Settings, get_settings

log = logging.getLogger(__name__)


def send_mqtt_command(device_id: str, target: object, issued_by: str | None = None,
                      settings: Settings | None = None, timeout_s: float | None = None,
                      client: mqtt.Client | None = None, request_id: str | None = None) -> CommandResult:
    """Validate, publish ``cmd`` at QoS 1 and wait for the ``cmd/ack`` carrying the same ``request_id``.

    Pass a connected ``client`` to reuse a connection; otherwise one is opened and closed for this command.
    ``request_id`` keeps an id chosen upstream (the IoT Hub transport's), else a new one is made.
    """
    settings = settings or get_settings()
    command = build_command(device_id, target, issued_by, settings, request_id)
    return deliver_mqtt(device_id, command, settings, timeout_s, client)


def deliver_mqtt(device_id: str, command: contract.Command, settings: Settings, timeout_s: float | None = None,
                 client: mqtt.Client | None = None) -> CommandResult:
    """Publish an already validated ``command`` and wait for its ack (see ``send_mqtt_command``)."""
    issued_by = command.issued_by
    timeout = settings.command_timeout_s if timeout_s is None else timeout_s
    ack_topic = contract.topic(device_id, contract.CMD_ACK, settings.topic_prefix)
    got_ack = threading.Event()
    holder: dict[str, contract.CommandAck] = {}

    def on_ack(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            ack = contract.parse_ack(message.payload)
        except contract.ContractError as exc:
            log.warning("ignoring malformed ack on %s: %s", message.topic, exc.reason)
            return
        if ack.request_id == command.request_id:
            holder["ack"] = ack
            got_ack.set()

    own_client = client is None
    if own_client:
        client = make_client(f"{settings.mqtt_client_id_prefix}-cmd-{command.request_id[:12]}", settings)
        connect(client, settings)
    assert client is not None
    client.message_callback_add(ack_topic, on_ack)
    try:
        client.subscribe(ack_topic, qos=contract.QOS[contract.CMD_ACK])
        info = client.publish(
            contract.topic(device_id, contract.CMD, settings.topic_prefix),
            contract.dumps(command),
            qos=contract.QOS[contract.CMD],
            retain=False,
        )
        info.wait_for_publish(timeout)
        log.info("sent command %s to %s: target %s, mode %s by %s", command.request_id, device_id,
                 command.target_temp, command.mode, issued_by or "unknown")
        if not got_ack.wait(timeout):
            return CommandResult(command.request_id, device_id, command.target_temp, OUTCOME_TIMEOUT,
                                 f"no answer from {device_id} within {timeout:.0f} s: is it online?",
                                 mode=command.mode)
        ack = holder["ack"]
        if ack.ok:
            return CommandResult(command.request_id, device_id, command.target_temp, OUTCOME_OK, None, ack,
                                 mode=command.mode)
        return CommandResult(command.request_id, device_id, command.target_temp, OUTCOME_REFUSED,
                             ack.error or "refused without a reason", ack, mode=command.mode)
    finally:
        client.message_callback_remove(ack_topic)
        client.unsubscribe(ack_topic)
        if own_client:
            client.disconnect()
            client.loop_stop()
