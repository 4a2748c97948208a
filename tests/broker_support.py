"""A real Mosquitto started with the configuration ``thermolog broker init`` writes (TLS, passwords, ACL)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from tests import needs
from tests.conftest import free_port
from tests.waiting import wait_for_port, wait_until
from thermolog import broker_init as broker_module
from thermolog.mqttclient import connect, make_client
from thermolog.settings import MqttEndpoint, Settings


class TlsBroker:
    """``broker init`` into a fresh directory, then ``mosquitto -c <that>/mosquitto.conf`` on a free port.

    The directory lives outside pytest's 0700 tmp tree because Mosquitto, started as root, drops to the
    ``mosquitto`` account before it reads its files, exactly as in production.
    """

    def __init__(self, devices: list[str], topic_prefix: str = "thermostats", persistence: bool = False,
                 client_certs: bool = False, use_passwd_binary: bool = True) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="thermolog-broker-"))
        os.chmod(self.root, 0o755)
        self.port = free_port()
        """The devices' listener."""
        self.service_port = free_port()
        """The services' listener (ingest, app, edge)."""
        self.devices = devices
        self.topic_prefix = topic_prefix
        self.plan = broker_module.BrokerPlan(
            out=self.root / "mosquitto", devices=devices, port=self.port, bind="127.0.0.1",
            service_port=self.service_port,
            topic_prefix=topic_prefix, persistence=persistence, client_certs=client_certs,
        )
        self.summary = broker_module.init_broker(self.plan, use_passwd_binary=use_passwd_binary)
        self.layout: broker_module.BrokerLayout = self.summary["layout"]  # type: ignore[assignment]
        self.log_path = self.root / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TlsBroker:
        """Start Mosquitto and wait until its TLS port accepts connections."""
        needs.require("broker", "Mosquitto with the `broker init` configuration")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.layout.conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_for_port("127.0.0.1", self.port)
            wait_for_port("127.0.0.1", self.service_port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start:\n{self.log_path.read_text()}") from None
        return self

    def stop(self) -> None:
        """Stop Mosquitto (SIGTERM: it saves its persistence file) and wait for it."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        """Stop and delete everything."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def credentials(self, user: str) -> dict[str, str]:
        """The ``THERMOLOG_*`` variables ``broker init`` wrote for ``user``."""
        return broker_module.read_credentials(self.layout.credentials(user))

    def password(self, user: str) -> str:
        return self.credentials(user)["THERMOLOG_MQTT_PASSWORD"]

    def settings(self, user: str, **overrides: object) -> Settings:
        """Settings as a service started with ``credentials/<user>.env`` would have them."""
        values = {key.removeprefix("THERMOLOG_").lower(): value for key, value in self.credentials(user).items()}
        values.update(overrides)
        return Settings(**values)

    def port_of(self, user: str | None) -> int:
        """The listener ``user`` logs in on: the services' one for ingest, app and edge, else the devices'."""
        return self.service_port if user in broker_module.SERVICE_USERS else self.port

    def client(self, user: str | None, client_id: str, password: str | None = None, tls: bool = True,
               clean_session: bool = True, port: int | None = None) -> mqtt.Client:
        """A not yet connected client for ``user`` (None: anonymous) built by thermolog.mqttclient, on ``port``
        (default: the listener of ``user``)."""
        settings = self.settings(user or "ingest")
        if password is None and user:
            password = self.password(user)
        endpoint = MqttEndpoint(
            "127.0.0.1", port or self.port_of(user), tls, user, password,
            ca_file=self.layout.ca_cert,
            cert_file=self.layout.client_cert(user) if (self.plan.client_certs and user) else None,
            key_file=self.layout.client_key(user) if (self.plan.client_certs and user) else None,
        )
        return make_client(client_id, settings, endpoint=endpoint, clean_session=clean_session)

    def connected(self, user: str | None, client_id: str, **kwargs: object) -> mqtt.Client:
        """A connected client (raises ConnectionError when the broker refuses it)."""
        client = self.client(user, client_id, **kwargs)  # type: ignore[arg-type]
        connect(client, self.settings(user or "ingest"), timeout=5)
        return client


class Inbox:
    """Collects messages a client receives; ``wait_for`` blocks until a predicate over them holds."""

    def __init__(self, client: mqtt.Client) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._changed = threading.Condition()
        client.on_message = self._on_message

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append((message.topic, bytes(message.payload)))
            self._changed.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "the messages") -> object:  # noqa: ANN001
        """The truthy value of ``predicate(messages)`` once it holds; WaitTimeout after ``timeout`` seconds."""
        return wait_until(lambda: predicate(self.messages), timeout, what, changed=self._changed,
                          detail=lambda: f"received: {self.topics()}")

    def topics(self) -> list[str]:
        with self._changed:
            return [topic for topic, _ in self.messages]


def subscribe(client: mqtt.Client, topic: str, qos: int = 1, timeout: float = 5.0) -> int:
    """Subscribe and return the granted QoS from the SUBACK (128 means the broker refused)."""
    acks: dict[int, int] = {}
    arrived = threading.Condition()

    def on_subscribe(_c: mqtt.Client, _u: object, mid: int, qos_list: tuple[int, ...]) -> None:
        with arrived:  # the SUBACK may arrive before subscribe() below has returned its mid
            acks[mid] = qos_list[0]
            arrived.notify_all()

    client.on_subscribe = on_subscribe
    result, mid = client.subscribe(topic, qos)
    with arrived:
        if result != mqtt.MQTT_ERR_SUCCESS or not arrived.wait_for(lambda: mid in acks, timeout):
            raise TimeoutError(f"no SUBACK for {topic}")
        return acks[mid]


def close(*clients: mqtt.Client) -> None:
    """Disconnect and stop the network loops."""
    for client in clients:
        client.disconnect()
        client.loop_stop()
