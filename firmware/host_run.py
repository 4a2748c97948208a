"""Run the firmware's main loop on a PC: simulated room and relay, real MQTT broker (``python -m firmware.host_run``).

The loop is the board's own ``device.Device``; only the parts differ. The sensor reads the simulator's thermal
model (``simulator.model``), which warms while the fake relay is ON; MQTT goes through paho behind umqtt.simple's
interface; the broker, topic prefix and setpoint limits come from the thermolog settings (``THERMOLOG_*``), so the
readings land through ``thermolog ingest`` like any other thermostat's and the app's commands reach it.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

import firmware  # noqa: F401 - puts the board's flat module names on sys.path
from simulator.model import DeviceParams, Sensor, ThermalModel
from thermolog.mqttclient import connect, make_client
from thermolog.settings import Settings, get_settings

# isort: split
# The board's flat module names, importable once ``firmware`` is imported.
import clock  # noqa: E402
import config  # noqa: E402
import simhw  # noqa: E402
from device import Device  # noqa: E402
from outputs import Relay  # noqa: E402

log = logging.getLogger("firmware.host_run")


class PahoUmqttClient:
    """``umqtt.simple.MQTTClient``'s interface over a paho client built by ``thermolog.mqttclient``.

    Like umqtt it raises OSError on any use after the connection broke; the firmware's MqttLink then drops it
    and builds a new one, exactly as on the board.
    """

    sock = None

    def __init__(self, client_id: str, settings: Settings, timeout_s: float = 10.0) -> None:
        self.client_id = client_id
        self.settings = settings
        self.timeout_s = timeout_s
        self._cb = None
        self._will: tuple[str, bytes, int, bool] | None = None
        self._client: paho.Client | None = None
        self._inbox: queue.Queue[tuple[bytes, bytes]] = queue.Queue()
        self._lost = threading.Event()
        self._subacked: set[int] = set()
        """Message ids of SUBACKs handled and not yet waited for; guarded by ``_suback``."""
        self._suback = threading.Condition()

    def set_callback(self, f) -> None:  # noqa: ANN001 - umqtt signature
        self._cb = f

    def set_last_will(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        self._will = (topic, msg, qos, retain)

    def connect(self, clean_session: bool = True) -> int:
        client = make_client(self.client_id, self.settings, clean_session=clean_session, will=self._will)
        client.on_message = lambda _c, _u, m: self._inbox.put((m.topic.encode(), m.payload))
        client.on_disconnect = lambda _c, _u, _rc: self._lost.set()
        client.on_subscribe = self._on_subscribe
        try:
            connect(client, self.settings, timeout=self.timeout_s)
        except ConnectionError as exc:
            raise OSError(str(exc)) from exc
        self._client = client
        return 0

    def _check(self) -> paho.Client:
        if self._client is None or self._lost.is_set():
            raise OSError(-1, "connection lost")
        return self._client

    def publish(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        info = self._check().publish(topic, msg, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise OSError(info.rc, paho.error_string(info.rc))
        if qos:  # umqtt.simple waits for the PUBACK too
            info.wait_for_publish(self.timeout_s)
            if not info.is_published():
                raise OSError(-1, "no PUBACK within %ss" % self.timeout_s)

    def _on_subscribe(self, _c: paho.Client, _u: object, mid: int, _granted: object) -> None:
        # Recorded, not signalled to a waiter looked up by mid: the SUBACK can be handled on the network thread
        # before subscribe() below has even learnt its mid, and it must not be lost then.
        with self._suback:
            self._subacked.add(mid)
            self._suback.notify_all()

    def subscribe(self, topic: str, qos: int = 0) -> None:
        rc, mid = self._check().subscribe(topic, qos)
        if rc != paho.MQTT_ERR_SUCCESS:
            raise OSError(rc, paho.error_string(rc))
        with self._suback:
            acked = self._suback.wait_for(lambda: mid in self._subacked or self._lost.is_set(), self.timeout_s)
            self._subacked.discard(mid)
        if not acked:
            log.debug("no SUBACK seen for %s; carrying on", topic)

    def check_msg(self) -> int | None:
        self._check()
        try:
            topic, payload = self._inbox.get_nowait()
        except queue.Empty:
            return None
        self._cb(topic, payload)
        return 0x30

    def ping(self) -> None:
        self._check()  # paho's network thread sends the keepalive pings itself

    def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()


class SimulatedRoom:
    """The simulator's thermal model as a sensor: it warms while ``relay`` is ON, at ``speed`` times real time."""

    def __init__(self, device_id: str, relay: Relay, seed: int = 1, speed: float = 60.0) -> None:
        self.params = DeviceParams.draw(device_id, seed)
        self.relay = relay
        self.speed = speed
        self._real0 = time.monotonic()
        self._sim0 = time.time()
        self.model = ThermalModel(self.params, t0=self._sim0)
        self.noise = Sensor(self.params, seed)

    def read(self) -> tuple[float, float]:
        """A noisy reading of the room now; the heater held its state since the last read."""
        sim_t = self._sim0 + (time.monotonic() - self._real0) * self.speed
        true_c = self.model.advance(sim_t, self.relay.on)
        return round(self.noise.temperature(true_c), 2), round(self.noise.humidity(true_c, sim_t), 1)


def host_config(args: argparse.Namespace, settings: Settings) -> dict:
    """The firmware configuration for a PC run: broker, prefix and setpoint limits from the thermolog settings."""
    endpoint = settings.mqtt_endpoint()
    overrides = {
        "device_id": args.device_id,
        "mqtt": {"host": endpoint.host, "port": endpoint.port, "tls": endpoint.tls,
                 "ca_file": str(endpoint.ca_file) if endpoint.ca_file else None,
                 "username": endpoint.username, "password": endpoint.password if endpoint.username else None,
                 "topic_prefix": settings.topic_prefix, "keepalive_s": settings.mqtt_keepalive_s},
        "control": {"target": args.target, "min_on_s": args.min_on, "min_off_s": args.min_off,
                    "min_target": settings.setpoint_min_c, "max_target": settings.setpoint_max_c,
                    "step": settings.setpoint_step_c},
        "intervals": {"loop_ms": args.loop_ms, "read_s": args.read_interval, "publish_s": args.publish_interval},
        "lcd": {"enabled": False},
        "watchdog_s": 0,
        "state_file": str(args.state_file or Path("data") / f"host_run-{args.device_id}.json"),
        "home_assistant": {"discovery": args.ha_discovery, "name": f"thermolog {args.device_id}"},
    }
    return config.validate(config.merge(config.DEFAULTS, overrides), on_board=False)


def build_device(args: argparse.Namespace, settings: Settings) -> tuple[Device, SimulatedRoom]:
    """The board's Device with simulated hardware and a paho-backed MQTT client."""
    cfg = host_config(args, settings)
    Path(cfg["state_file"]).parent.mkdir(parents=True, exist_ok=True)
    relay = Relay(simhw.FakePin())
    room = SimulatedRoom(args.device_id, relay, seed=args.seed, speed=args.speed)
    wall = clock.Clock(lambda: time.monotonic_ns() // 1_000_000, lambda a, b: a - b,
                       unix_ms=lambda: time.time_ns() // 1_000_000)
    device = Device(cfg, sensor=room, relay=relay, clock=wall,
                    mqtt_factory=lambda: PahoUmqttClient(f"thermolog-fw-{args.device_id}", settings),
                    log=log.info)
    return device, room


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the host run."""
    parser.add_argument("--device-id", default="host-01", help="device id (default host-01)")
    parser.add_argument("--target", type=float, default=21.0, help="initial target °C unless one was saved")
    parser.add_argument("--read-interval", type=float, default=2.0, help="seconds between sensor reads (>= 2)")
    parser.add_argument("--publish-interval", type=float, default=5.0, help="seconds between readings sent")
    parser.add_argument("--speed", type=float, default=60.0, help="simulated room time per real second")
    parser.add_argument("--min-on", type=float, default=10.0, help="minimum heater on time (s)")
    parser.add_argument("--min-off", type=float, default=10.0, help="minimum heater off time (s)")
    parser.add_argument("--loop-ms", type=int, default=200, help="loop period in milliseconds")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated room")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until ^C)")
    parser.add_argument("--state-file", type=Path, help="where the target is saved (default data/host_run-ID.json)")
    parser.add_argument("--ha-discovery", action="store_true", help="publish Home Assistant discovery")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m firmware.host_run``."""
    parser = argparse.ArgumentParser(prog="python -m firmware.host_run", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run until Ctrl-C, SIGTERM or ``--duration``; the heater goes off and ``offline`` is sent at the end."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    try:
        device, _room = build_device(args, settings)
    except config.ConfigError as exc:
        parser.error(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"firmware host run: {device.device_id} on {settings.mqtt_endpoint()!r}, "
          f"telemetry on {device.topics['telemetry']}; try:\n"
          f"  mosquitto_pub -t {device.topics['cmd']} -m '{{\"request_id\": \"r1\", \"target_temp\": 23.5}}'",
          flush=True)
    deadline = time.monotonic() + args.duration if args.duration else None
    period = args.loop_ms / 1000
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            device.step()
            stop.wait(period)
    finally:
        device.shutdown()
        log.info("stopped after %d loops; %d readings sent, %d buffered, %d dropped",
                 device.loops, device.published, len(device.buffer), device.buffer.dropped)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
