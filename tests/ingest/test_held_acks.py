"""HeldAckClient: a QoS 1 message is acknowledged only when its tag is accepted, so messages received but not
stored come again to whoever resumes the session."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from ingest.sources.fast_reader import HeldAckClient
from tests.conftest import PrivateBroker
from tests.waiting import wait_until
from thermolog.mqttclient import connect, make_client
from thermolog.settings import Settings


def _session(settings: Settings, client_id: str, received: list[bytes], tag: bool) -> HeldAckClient:
    client = make_client(client_id, settings, clean_session=False, client_class=HeldAckClient)
    subscribed = threading.Event()

    def on_message(c: HeldAckClient, _u: object, message: mqtt.MQTTMessage) -> None:
        received.append(message.payload)
        c.ack_tag = int(message.payload) if tag else None

    client.on_message = on_message
    client.on_connect = lambda c, _u, _f, _rc: c.subscribe("held/#", qos=1)
    client.on_subscribe = lambda *_args: subscribed.set()
    connect(client, settings)
    assert subscribed.wait(10)
    return client


def test_only_accepted_messages_are_acknowledged_the_rest_come_again(private_broker: PrivateBroker) -> None:
    private_broker.start()
    settings = Settings(mqtt_url=f"mqtt://127.0.0.1:{private_broker.port}")
    first: list[bytes] = []
    client = _session(settings, "held-acks", first, tag=True)
    publisher = mqtt.Client(client_id="held-pub")
    publisher.connect("127.0.0.1", private_broker.port)
    publisher.loop_start()
    for number in range(10):
        publisher.publish("held/x", str(number).encode(), qos=1).wait_for_publish(10)
    wait_until(lambda: len(first) == 10, 10, what="ten messages")
    assert client.held == 10
    assert client.acknowledge(lambda number: number < 6) == 6  # "stored": 0..5
    assert client.held == 4
    assert client.wait_sent(10)  # the PUBACKs are on the wire before the connection ends
    # The broker answers this only after reading what came before it on the connection, the PUBACKs included;
    # a session taken over before the broker read them would rightly send 3, 4 and 5 again.
    probe = client.publish("held-probe/x", b"", qos=1)
    probe.wait_for_publish(10)
    assert probe.is_published()
    client.disconnect()
    client.loop_stop()

    again: list[bytes] = []
    resumed = _session(settings, "held-acks", again, tag=False)  # the slot's next holder, same session
    wait_until(lambda: len(again) >= 4, 10, what="the unacknowledged messages again")
    assert sorted(int(p) for p in again) == [6, 7, 8, 9]
    assert resumed.held == 0  # untagged messages are never acknowledged
    resumed.disconnect()
    resumed.loop_stop()
    publisher.disconnect()
    publisher.loop_stop()
