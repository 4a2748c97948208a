"""A stand-in for IoT Edge's edgeHub: a TLS Mosquitto that module clients connect to, plus a control client that
plays the hub's part on the IoT Hub MQTT topics.

azure-iot-device connects to port 8883 of ``GatewayHostName`` (the port is fixed in its transport). The stand-in
listens there when 8883 is free. When it is not, Mosquitto listens on a free port and a small SOCKS5 forwarder
(the client's own ``proxy_options`` mechanism) carries the client's connection to it; either way the client's
TLS session, topics and payloads are the same.

The control client (plain MQTT on a second local listener):
- records module events ``devices/{d}/modules/{m}/messages/events/{properties}`` and routes them like edgeHub,
  using the deployment manifest's routes: to ``devices/{d}/modules/{n}/inputs/{i}/{properties}`` or upstream;
- answers twin ``GET`` and reported ``PATCH`` requests and can send desired patches;
- sends direct method requests ``$iothub/methods/POST/{name}/?$rid=N`` and collects their responses.
"""

from __future__ import annotations

import base64
import fcntl
import itertools
import os
import select
import socket
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, quote

import orjson
import paho.mqtt.client as mqtt
from azure.iot.device import ProxyOptions

from tests import needs
from tests.azure_standins.certs import TlsFiles, make_tls_files
from tests.azure_standins.routes import UPSTREAM, Route
from tests.conftest import free_port
from tests.waiting import wait_for_port, wait_until

IOTHUB_PORT = 8883
HUB_HOSTNAME = "hub.thermolog.test"
SHARED_ACCESS_KEY = base64.b64encode(b"edge-stand-in-key-0123456789abcd").decode()


@dataclass
class ModuleEvent:
    """A message a module sent to one of its outputs, as published on the wire."""

    topic: str
    device_id: str
    module_id: str
    properties: dict[str, str]
    body: bytes

    @property
    def output(self) -> str | None:
        """The output name (``$.on``)."""
        return self.properties.get("$.on")


@dataclass
class Recorded:
    """Everything the stand-in saw, guarded by one condition variable."""

    events: list[ModuleEvent] = field(default_factory=list)
    upstream: list[ModuleEvent] = field(default_factory=list)
    reported: list[dict[str, Any]] = field(default_factory=list)
    method_responses: dict[str, tuple[int, Any]] = field(default_factory=dict)
    twin_gets: int = 0


def encode_properties(properties: dict[str, str]) -> str:
    """Properties as the IoT Hub MQTT topic suffix (``key=value&...``, percent-encoded)."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in properties.items())


def _socks5_forward(listener: socket.socket, target_port: int, stop: threading.Event) -> None:
    """Accept SOCKS5 CONNECTs and forward each one to 127.0.0.1:target_port whatever address it names."""

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while not stop.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.5)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def handshake(conn: socket.socket) -> None:
        _ver, n_methods = conn.recv(2)
        conn.recv(n_methods)
        conn.sendall(b"\x05\x00")  # no authentication
        _ver, _cmd, _rsv, atyp = conn.recv(4)
        if atyp == 1:
            conn.recv(4)
        elif atyp == 3:
            conn.recv(conn.recv(1)[0])
        else:
            conn.recv(16)
        conn.recv(2)  # port: the client asked for 8883; the broker listens elsewhere
        upstream = socket.create_connection(("127.0.0.1", target_port))
        conn.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", target_port))
        pipe(conn, upstream)

    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        threading.Thread(target=handshake, args=(conn,), daemon=True).start()


class EdgeHubStandIn:
    """TLS Mosquitto standing in for edgeHub, with routing, twin and direct-method helpers."""

    def __init__(self, workdir: Path, routes: list[Route] | None = None, force_proxy: bool = False) -> None:
        self.workdir = workdir
        self.routes = routes or []
        self.tls: TlsFiles = make_tls_files(workdir / "edgehub-tls")
        self._port_claim = None if force_proxy else _claim_iothub_port()
        self.port = IOTHUB_PORT if self._port_claim is not None else free_port()
        self.control_port = free_port()
        self.proxy_port: int | None = None
        self.desired: dict[str, Any] = {}
        self.desired_version = 1
        self.recorded = Recorded()
        self.changed = threading.Condition()
        self._rids = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._proxy_socket: socket.socket | None = None
        self.control = mqtt.Client(client_id="edgehub-stand-in", protocol=mqtt.MQTTv311)
        self.control.on_message = self._on_message

    # --- life cycle ---------------------------------------------------------------------------------------

    def start(self) -> EdgeHubStandIn:
        """Start Mosquitto (and the SOCKS5 forwarder when not on 8883) and the control client."""
        needs.require("broker", "the edgeHub stand-in (a Mosquitto)")
        conf = self.workdir / "edgehub-mosquitto.conf"
        conf.write_text(f"persistence false\n{tls_listener(self.port, self.tls)}"
                        f"listener {self.control_port} 127.0.0.1\n")
        log = open(self.workdir / "edgehub-mosquitto.log", "wb")  # noqa: SIM115 - lives as long as the process
        self._proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.control_port)
        wait_for_port("127.0.0.1", self.port)
        if self.port != IOTHUB_PORT:
            self._proxy_socket = socket.socket()
            self._proxy_socket.bind(("127.0.0.1", 0))
            self._proxy_socket.listen(16)
            self.proxy_port = self._proxy_socket.getsockname()[1]
            threading.Thread(target=_socks5_forward, args=(self._proxy_socket, self.port, self._stop),
                             daemon=True).start()
        subscribed = threading.Event()
        self.control.on_subscribe = lambda *_: subscribed.set()
        self.control.connect("127.0.0.1", self.control_port)
        self.control.loop_start()
        self.control.subscribe([("devices/#", 1), ("$iothub/#", 1)])
        if not subscribed.wait(10):
            raise TimeoutError("edgeHub stand-in control client did not subscribe")
        return self

    def stop(self) -> None:
        """Stop everything the stand-in started."""
        self._stop.set()
        self.control.disconnect()
        self.control.loop_stop()
        if self._proxy_socket:
            self._proxy_socket.close()
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._port_claim is not None:
            self._port_claim.close()  # after Mosquitto has let go of the port
            self._port_claim = None

    # --- what a module needs to connect -------------------------------------------------------------------

    def connection_string(self, device_id: str, module_id: str) -> str:
        """A module connection string whose gateway is this stand-in."""
        return (f"HostName={HUB_HOSTNAME};DeviceId={device_id};ModuleId={module_id};"
                f"SharedAccessKey={SHARED_ACCESS_KEY};GatewayHostName=localhost")

    def module_env(self, device_id: str, module_id: str) -> dict[str, str]:
        """The IoT Edge local-development variables ``create_from_edge_environment`` falls back to."""
        return {"EdgeHubConnectionString": self.connection_string(device_id, module_id),
                "EdgeModuleCACertificateFile": str(self.tls.ca)}

    def client_kwargs(self) -> dict[str, Any]:
        """Extra client options: the SOCKS5 forwarder when the broker is not on 8883."""
        if self.proxy_port is None:
            return {}
        return {"proxy_options": ProxyOptions("SOCKS5", "127.0.0.1", self.proxy_port)}

    # --- hub side -----------------------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[Recorded], Any], timeout: float = 10.0,
                 what: str = "the hub to record it") -> Any:
        """Block until ``predicate(recorded)`` is truthy and return its value; WaitTimeout otherwise."""
        return wait_until(lambda: predicate(self.recorded), timeout, what, changed=self.changed,
                          detail=lambda: f"seen: {self.recorded}")

    def invoke_method(self, name: str, payload: Any, timeout: float = 15.0,
                      raw: bytes | None = None) -> tuple[int, Any]:
        """Send a direct method request the way IoT Hub does and wait for the module's response."""
        rid = str(next(self._rids))
        body = raw if raw is not None else orjson.dumps(payload)
        self.control.publish(f"$iothub/methods/POST/{name}/?$rid={rid}", body, qos=1)
        return self.wait_for(lambda r: r.method_responses.get(rid), timeout, f"the response to method {name}")

    def patch_desired(self, patch: dict[str, Any]) -> int:
        """Change desired properties and send the patch; returns the new ``$version``."""
        with self.changed:
            self.desired_version += 1
            self.desired.update(patch)
            version = self.desired_version
        self.control.publish(f"$iothub/twin/PATCH/properties/desired/?$version={version}",
                             orjson.dumps({**patch, "$version": version}), qos=1)
        return version

    def _route(self, event: ModuleEvent) -> None:
        for route in self.routes:
            if not route.matches(event.module_id, event.output):
                continue
            if route.sink_module == UPSTREAM:
                self.recorded.upstream.append(event)
                continue
            props = {k: v for k, v in event.properties.items() if k != "$.on"}
            self.control.publish(
                f"devices/{event.device_id}/modules/{route.sink_module}/inputs/{route.sink_input}/"
                f"{encode_properties(props)}", event.body, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        with self.changed:
            if len(parts) >= 6 and parts[0] == "devices" and parts[2] == "modules" and parts[4:6] == [
                    "messages", "events"]:
                props = dict(parse_qsl("/".join(parts[6:]), keep_blank_values=True))
                event = ModuleEvent(message.topic, parts[1], parts[3], props, message.payload)
                self.recorded.events.append(event)
                self._route(event)
            elif message.topic.startswith("$iothub/methods/res/"):
                status = int(parts[3])
                rid = dict(parse_qsl(parts[4].lstrip("?")))["$rid"]
                self.recorded.method_responses[rid] = (status, orjson.loads(message.payload))
            elif message.topic.startswith("$iothub/twin/GET/"):
                rid = dict(parse_qsl(message.topic.split("?", 1)[1]))["$rid"]
                self.recorded.twin_gets += 1
                twin = {"desired": {**self.desired, "$version": self.desired_version}, "reported": {"$version": 1}}
                self.control.publish(f"$iothub/twin/res/200/?$rid={rid}", orjson.dumps(twin), qos=1)
            elif message.topic.startswith("$iothub/twin/PATCH/properties/reported/"):
                rid = dict(parse_qsl(message.topic.split("?", 1)[1]))["$rid"]
                self.recorded.reported.append(orjson.loads(message.payload))
                version = len(self.recorded.reported) + 1
                self.control.publish(f"$iothub/twin/res/204/?$rid={rid}&$version={version}", b"", qos=1)
            self.changed.notify_all()


def tls_listener(port: int, tls: TlsFiles) -> str:
    """Mosquitto configuration for an anonymous TLS listener on 127.0.0.1:port."""
    # Started as root, Mosquitto drops to user `mosquitto`, which cannot read a key in pytest's tmp_path.
    run_as = "user root\n" if os.geteuid() == 0 else ""
    return (f"{run_as}allow_anonymous true\nlistener {port} 127.0.0.1\n"
            f"cafile {tls.ca}\ncertfile {tls.cert}\nkeyfile {tls.key}\n")


def _claim_iothub_port() -> IO[str] | None:
    """Port 8883 for this stand-in, or None when it is taken or another test process (a parallel worker, another
    checkout's run) is about to take it: an exclusive lock on a file in the temp directory, held until ``stop``,
    closes the window between checking the port and Mosquitto binding it."""
    handle = open(Path(tempfile.gettempdir()) / f"thermolog-edgehub-{IOTHUB_PORT}.lock", "a")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    if not _port_free(IOTHUB_PORT):
        handle.close()
        return None
    return handle


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Mosquitto does: TIME_WAIT is no obstacle
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
