"""One way to build a paho-mqtt client from the settings: TLS, credentials, last will, reconnect backoff.

paho-mqtt stays below 2.0 because azure-iot-device requires it. Clients are stock paho; the ingest receive path
passes its own subclass (``ingest.sources.fast_reader``) as ``client_class``.
"""

from __future__ import annotations

import logging
import ssl
import threading
import weakref

import paho.mqtt.client as mqtt

from thermolog.settings import MqttEndpoint, Settings, get_settings

log = logging.getLogger(__name__)

_endpoints: weakref.WeakKeyDictionary[mqtt.Client, MqttEndpoint] = weakref.WeakKeyDictionary()


def make_client(
    client_id: str,
    settings: Settings | None = None,
    *,
    clean_session: bool = True,
    will: tuple[str, bytes, int, bool] | None = None,
    endpoint: MqttEndpoint | None = None,
    client_class: type[mqtt.Client] = mqtt.Client,
) -> mqtt.Client:
    """A configured, not yet connected client. ``will`` is ``(topic, payload, qos, retain)``."""
    settings = settings or get_settings()
    endpoint = endpoint or settings.mqtt_endpoint()
    client = client_class(client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311)
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set(
            ca_certs=str(endpoint.ca_file) if endpoint.ca_file else None,
            certfile=str(endpoint.cert_file) if endpoint.cert_file else None,
            keyfile=str(endpoint.key_file) if endpoint.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if will is not None:
        client.will_set(*will)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    _endpoints[client] = endpoint
    return client


def connect(client: mqtt.Client, settings: Settings | None = None, timeout: float = 10.0) -> None:
    """Connect and start the network loop; raises ConnectionError with what to check when it fails."""
    settings = settings or get_settings()
    endpoint = _endpoints[client]  # only clients made by make_client are connected here
    connected = threading.Event()
    result: dict[str, int] = {}
    previous = client.on_connect

    def on_connect(c: mqtt.Client, userdata: object, flags: dict, rc: int) -> None:
        result["rc"] = rc
        connected.set()
        if previous is not None:
            previous(c, userdata, flags, rc)

    client.on_connect = on_connect
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=settings.mqtt_keepalive_s)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionError(
            f"cannot reach the MQTT broker at {endpoint!r}: {exc}. Is it running? Check THERMOLOG_MQTT_URL."
        ) from exc
    client.loop_start()
    if not connected.wait(timeout):
        client.loop_stop()
        raise ConnectionError(f"no CONNACK from {endpoint!r} within {timeout}s")
    client.on_connect = previous
    if result["rc"] != 0:
        client.loop_stop()
        raise ConnectionError(
            f"broker {endpoint!r} refused the connection: {mqtt.connack_string(result['rc'])}. "
            "Check THERMOLOG_MQTT_USERNAME / THERMOLOG_MQTT_PASSWORD and the broker's ACL."
        )
