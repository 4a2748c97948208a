"""The ingest receive path's FastReadClient reads the socket in chunks: every packet arrives whole, in order, once."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest

from ingest.sources.fast_reader import FastReadClient
from tests.conftest import PrivateBroker
from tests.waiting import wait_until
from thermolog.mqttclient import connect, make_client
from thermolog.settings import Settings


def _payloads() -> list[bytes]:
    # Sizes around the 128-byte and 16 KiB remaining-length steps and past the 64 KiB read chunk, so packets
    # start, end and split at every kind of place inside a chunk.
    sizes = [0, 1, 100, 127, 128, 129, 2_000, 16_383, 16_384, 70_000, 200_000]
    return [bytes([i % 251]) * sizes[i % len(sizes)] + str(i).encode() for i in range(1_500)]


def _collect(client: mqtt.Client, topic: str, expected: int) -> tuple[list[bytes], threading.Event]:
    got: list[bytes] = []
    done = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        got.append(message.payload)
        if len(got) >= expected:
            done.set()

    client.on_message = on_message
    return got, done


def _publish_all(port: int, topic: str, payloads: list[bytes]) -> None:
    publisher = mqtt.Client(client_id=f"pub-{topic}")
    publisher.max_inflight_messages_set(1_000)
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    try:
        for payload in payloads:
            publisher.publish(topic, payload, qos=1)
        # QoS 1 is acknowledged in order: once this one is, the broker has taken every message before it.
        publisher.publish(f"{topic}/end", b"", qos=1).wait_for_publish(30)
    finally:
        publisher.loop_stop()
        publisher.disconnect()


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("qos", [0, 1])
def test_a_burst_of_mixed_sizes_arrives_whole_and_in_order(roomy_broker: tuple[str, int], topic_prefix: str,
                                                           qos: int, batched: bool) -> None:
    """1,500 messages from empty to 200 KB, published faster than they are read (so one read holds many packets
    and cuts others), arrive byte for byte, in order, each once; batched, the packets paho reads itself (cut,
    larger than a read) keep their place among the batches."""
    _host, port = roomy_broker
    settings = Settings(mqtt_url=f"mqtt://127.0.0.1:{port}")
    client = make_client(f"buffered-{topic_prefix}", settings, client_class=FastReadClient)
    assert isinstance(client, FastReadClient)
    left_behind: list[int] = []
    loop_read = client.loop_read

    def checked_loop_read(max_packets: int = 1) -> int:
        rc = loop_read(max_packets)
        if rc == mqtt.MQTT_ERR_SUCCESS and client.buffered and not batched:
            left_behind.append(client.buffered)  # select() would sleep on bytes already read
        return rc

    client.loop_read = checked_loop_read
    payloads = _payloads()
    topic = f"{topic_prefix}/burst"
    got, done = _collect(client, topic, len(payloads))
    batch_sizes: list[int] = []
    if batched:  # a packet cut by a read stays buffered until the next: only a never-handled one would hang
        def on_batch(messages: list[tuple[bytes, bytes]]) -> None:
            assert {t for t, _p in messages} == {topic.encode()}
            batch_sizes.append(len(messages))
            got.extend(p for _t, p in messages)
            if len(got) >= len(payloads):
                done.set()

        client.on_publish_batch = on_batch
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    connect(client, settings)
    try:
        client.subscribe(topic, qos)
        assert subscribed.wait(10)
        _publish_all(port, topic, payloads)
        assert done.wait(60), f"{len(got)} of {len(payloads)} arrived"
        assert got == payloads
        assert not left_behind
        assert not batched or max(batch_sizes) > 1
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the raise ends the loop
def test_a_batch_whose_callback_raises_is_not_acknowledged(roomy_broker: tuple[str, int],
                                                           topic_prefix: str) -> None:
    """PUBACKs leave only after the batch callback returns: when it raises (the journal is full), the broker keeps
    every message of that batch and delivers it again to the resumed session."""
    _host, port = roomy_broker
    settings = Settings(mqtt_url=f"mqtt://127.0.0.1:{port}")
    topic = f"{topic_prefix}/unacked"
    failed: list[bytes] = []
    first = _batched_session(settings, f"unacked-{topic_prefix}", topic, failed, fail=True)
    payloads = [str(i).encode() for i in range(200)]
    _publish_all(port, topic, payloads)
    wait_until(lambda: bool(failed), 10, what="a batch that fails")
    first.loop_stop()  # the network thread ended with the callback's exception
    first.disconnect()
    again: list[bytes] = []
    second = _batched_session(settings, f"unacked-{topic_prefix}", topic, again, fail=False)
    try:
        wait_until(lambda: set(again) >= set(payloads), 10, what="every message again, the failed batch too")
        assert set(failed) <= set(again)
    finally:
        second.disconnect()
        second.loop_stop()


def _batched_session(settings: Settings, client_id: str, topic: str, received: list[bytes],
                     fail: bool) -> FastReadClient:
    client = make_client(client_id, settings, clean_session=False, client_class=FastReadClient)
    assert isinstance(client, FastReadClient)
    subscribed = threading.Event()

    def on_batch(messages: list[tuple[bytes, bytes]]) -> None:
        received.extend(p for _t, p in messages)
        if fail:
            raise OSError(28, "No space left on device")

    client.on_publish_batch = on_batch
    client.on_message = lambda _c, _u, message: received.append(message.payload)
    client.on_connect = lambda c, _u, _f, _rc: c.subscribe(topic, 1)
    client.on_subscribe = lambda *_a: subscribed.set()
    connect(client, settings)
    assert subscribed.wait(10)
    return client


@pytest.mark.slow
def test_reconnecting_after_the_broker_restarts_drops_nothing_of_the_new_session(private_broker: PrivateBroker,
                                                                                  topic_prefix: str) -> None:
    """Bytes buffered from a dropped connection never leak into the next one: after a broker restart the
    client reconnects, resubscribes, and the next burst arrives intact."""
    port = private_broker.start().port
    settings = Settings(mqtt_url=f"mqtt://127.0.0.1:{port}")
    client = make_client(f"buffered-{topic_prefix}", settings, client_class=FastReadClient)
    client.reconnect_delay_set(min_delay=1, max_delay=1)
    topic = f"{topic_prefix}/again"
    payloads = _payloads()[:300]
    got, done = _collect(client, topic, len(payloads))
    subscribed = threading.Event()

    def on_connect(c: mqtt.Client, _u: object, _f: dict, rc: int) -> None:
        if rc == 0:
            c.subscribe(topic, 1)

    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: subscribed.set()
    connect(client, settings)
    try:
        assert subscribed.wait(10)
        _publish_all(port, topic, payloads)
        assert done.wait(60)
        got.clear()
        done.clear()
        subscribed.clear()
        private_broker.stop()
        private_broker.start()
        assert subscribed.wait(30), "no resubscription after the broker restarted"
        _publish_all(port, topic, payloads)
        assert done.wait(60), f"{len(got)} of {len(payloads)} arrived after the restart"
        assert got == payloads
    finally:
        client.disconnect()
        client.loop_stop()
