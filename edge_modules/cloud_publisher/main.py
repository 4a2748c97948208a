"""Edge module ``cloud_publisher``: forwards inputs ``telemetry`` and ``system`` upstream, retrying until delivered.

Each input message goes out unchanged (body, content type and encoding, application properties, message id) on
the output of the same name; the deployment routes ``cloud_publisher/outputs/*`` to ``$upstream``, where edgeHub
keeps it (store and forward, ``storeAndForwardConfiguration.timeToLiveSecs``) while IoT Hub is unreachable.

No loss: the input handler returns only after edgeHub has acknowledged the forwarded message; a failure is
retried with exponential backoff for as long as the module runs. The client delivers inputs to this handler one at
a time, so a retry holds back the messages behind it and order is kept.
"""

from __future__ import annotations

import logging
import threading
import uuid

from azure.iot.device import IoTHubModuleClient, Message

from edge_modules import common

log = logging.getLogger("edge_modules.cloud_publisher")

INPUTS = (common.KIND_TELEMETRY, common.KIND_SYSTEM)


def upstream_copy(message: Message) -> Message:
    """The message to send upstream: same body, content type/encoding and properties; ``message_kind`` set."""
    out = Message(message.data, message_id=message.message_id or uuid.uuid4().hex,
                  content_encoding=message.content_encoding, content_type=message.content_type)
    out.custom_properties.update(message.custom_properties)
    if message.input_name in INPUTS:
        out.custom_properties.setdefault(common.PROP_KIND, message.input_name)
    return out


class CloudPublisher:
    """Receives module inputs and forwards each one upstream."""

    def __init__(self, client: IoTHubModuleClient, backoff: common.Backoff | None = None) -> None:
        self.client = client
        self.stop_event = threading.Event()
        self.backoff = backoff or common.Backoff()
        self.forwarded = 0

    def on_input_received(self, message: Message) -> None:
        """Forward one input message upstream; blocks (retrying) until edgeHub has it or the module stops."""
        output = message.input_name or "unknown"
        if message.input_name not in INPUTS:
            log.warning("message on unexpected input %r forwarded as is", message.input_name)
        if common.send_until_delivered(self.client, upstream_copy(message), output, self.stop_event, self.backoff):
            self.backoff.reset()
            self.forwarded += 1
        else:
            log.error("stopped before message %s on input %s was forwarded", message.message_id, output)

    def start(self) -> None:
        """Connect and start receiving inputs."""
        self.client.on_message_received = self.on_input_received
        self.client.connect()
        log.info("cloud_publisher started: inputs %s -> $upstream", ", ".join(INPUTS))

    def stop(self) -> None:
        """Stop retrying and close the client."""
        self.stop_event.set()
        self.client.shutdown()


def main() -> int:
    """Run until SIGTERM."""
    return common.run_module(CloudPublisher)


if __name__ == "__main__":
    raise SystemExit(main())
