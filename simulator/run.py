"""``thermolog simulate``: simulated thermostats on the real broker, with optional fast backfill of history.

Everything goes through MQTT (never SQL): a backfill publishes past readings at QoS 1 as fast as the broker
acknowledges them, so history reaches DuckDB through the same ingest path as live data.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from simulator.device import MqttLink, SimDevice
from simulator.model import DeviceParams
from simulator.schedule import SIM_PROGRAM, schedule_between
from thermolog import contract
from thermolog.cli_types import device_ids, parse_duration, positive, utc_time
from thermolog.reader import DatabaseNotReady
from thermolog.schedule_publish import current_programs, set_schedule
from thermolog.settings import Settings, get_settings

DESCRIPTION = (
    "Simulated thermostats: a first-order thermal model per device (parameters drawn from --seed and recorded), "
    "driven by the same control logic as the firmware. They publish telemetry, retained status/state and answer "
    "setpoint commands. --backfill 14d first publishes that much past history through the broker."
)
PARAMS_FORMAT = 1
DEFAULT_BACKFILL_RATE = 1000.0
"""Backfill messages per second by default: well below what the ingest worker sustains on a busy laptop."""
SHARED_CONNECTION_ABOVE = 50
"""With more devices than this (and no explicit choice) one connection carries them all."""

log = logging.getLogger(__name__)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``thermolog simulate``; defaults come from the settings."""
    settings = get_settings()
    parser.add_argument("--devices", type=int, default=settings.sim_devices,
                        help="number of simulated thermostats (default THERMOLOG_SIM_DEVICES=%(default)s)")
    parser.add_argument("--interval", type=positive, default=settings.sim_interval_s,
                        help="simulated seconds between readings (default THERMOLOG_SIM_INTERVAL_S=%(default)s)")
    parser.add_argument("--speed", type=positive, default=1.0,
                        help="time acceleration of the live phase: 60 runs one simulated minute per second "
                        "(timestamps then run ahead of the clock; default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of parameters, noise and schedule (default 1)")
    parser.add_argument("--id-prefix", default="sim", help="device ids are <id-prefix>-01, -02, ... (default sim)")
    parser.add_argument("--topic-prefix", default=None,
                        help=f"first topic level (default THERMOLOG_TOPIC_PREFIX={settings.topic_prefix})")
    parser.add_argument("--params-out", type=Path, default=None,
                        help="where to record the true parameters and setpoint changes as JSON "
                        "(default sim_params.json next to the database)")
    parser.add_argument("--backfill", type=parse_duration, default=0.0, metavar="DURATION",
                        help="first publish this much history ending now, e.g. 12h or 14d (default none)")
    parser.add_argument("--backfill-interval", type=positive, default=None, metavar="SECONDS",
                        help="seconds between backfilled readings (default: --interval)")
    parser.add_argument("--backfill-only", action="store_true", help="exit after the backfill")
    parser.add_argument("--backfill-end", type=utc_time, default=None, metavar="ISO",
                        help="end the backfill at this UTC time instead of now (with --backfill-only: reproducible "
                        "history, e.g. 2026-01-15T00:00:00Z)")
    parser.add_argument("--max-rate", type=float, default=DEFAULT_BACKFILL_RATE, metavar="MSG_PER_S",
                        help="cap the backfill's publish rate (default %(default)s; 0: as fast as the broker "
                        "acknowledges). A broker drops QoS 1 messages for a subscriber that falls too far behind "
                        "(Mosquitto: max_queued_messages, default 1000), so the cap keeps the ingest worker ahead")
    parser.add_argument("--schedule", action="store_true",
                        help="set the simulator's daily program as the schedule of every device that has none yet "
                        "(recorded as set by `simulator`), so live devices follow it through the server")
    parser.add_argument("--ha-discovery", action="store_true", default=None,
                        help="publish Home Assistant MQTT discovery for each device (default "
                        "THERMOLOG_SIM_HA_DISCOVERY; `thermolog demo` turns it on)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--shared-connection", dest="shared", action="store_true", default=None,
                       help="carry all devices over one MQTT connection (no per-device last will; "
                       f"the default above {SHARED_CONNECTION_ABOVE} devices)")
    group.add_argument("--per-device-connection", dest="shared", action="store_false",
                       help="one MQTT connection (and last will) per device")


class Simulation:
    """A fleet of simulated devices, their MQTT links and the recorded truth."""

    def __init__(self, ids: list[str], seed: int, t0: float, settings: Settings, topic_prefix: str,
                 shared: bool, params_out: Path) -> None:
        self.settings = settings
        self.seed = seed
        self.topic_prefix = topic_prefix
        self.params_out = params_out
        self.devices = [SimDevice(DeviceParams.draw(i, seed), seed, t0, settings) for i in ids]
        self.meta: dict[str, object] = {}
        self.backfilling = False
        if shared:
            link = MqttLink(self.devices, f"sim-{topic_prefix}-{ids[0]}-x{len(ids)}", settings, topic_prefix)
            self.links = [link]
            self.link_of = {d.device_id: link for d in self.devices}
        else:
            self.links = [MqttLink([d], f"sim-{topic_prefix}-{d.device_id}", settings, topic_prefix)
                          for d in self.devices]
            self.link_of = {link_devices: link for link in self.links for link_devices in link.devices}

    def start(self) -> None:
        """Connect every link (status online, state, command subscriptions)."""
        for link in self.links:
            link.start()

    def stop(self) -> None:
        """Mark devices offline, wait for acknowledgements, disconnect; record the parameters."""
        for link in self.links:
            link.stop()
        self.write_params()

    def tick(self, t: float, stop: threading.Event | None = None) -> int:
        """Advance every device to ``t`` and publish one reading each; returns how many were published."""
        sent = 0
        for device in self.devices:
            device.advance(t)
            link = self.link_of[device.device_id]
            if device.take_state_change() and not self.backfilling:
                link.publish_state(device)  # a scheduled change: the retained settings follow
            while not link.publish_reading(device, timeout=1.0):
                if stop is not None and stop.is_set():
                    return sent
                log.debug("waiting for the broker to acknowledge earlier messages")
            sent += 1
        return sent

    def backfill(self, steps: int, interval_s: float, stop: threading.Event, max_rate: float = 0.0) -> int:
        """Publish ``steps`` past readings per device from the devices' start time, following the setpoint
        schedule; the fleet must have been created at ``now - steps * interval_s``. Returns the count sent."""
        start = self.devices[0].t
        end = start + steps * interval_s
        self.backfilling = True
        for device in self.devices:
            device.schedule = schedule_between(device.device_id, self.seed, start, end, self.settings.setpoint_step_c)
        self.meta.update(backfill_start=_iso(start), backfill_end=_iso(end), backfill_interval_s=interval_s)
        total = steps * len(self.devices)
        log.info("backfill: %d readings (%d devices x %d steps of %g s) from %s", total, len(self.devices), steps,
                 interval_s, _iso(start))
        progress = _Progress(total)
        began = time.monotonic()
        sent = 0
        for k in range(steps):
            if stop.is_set():
                break
            sent += self.tick(start + k * interval_s, stop)
            progress.update(sent)
            if max_rate > 0:
                ahead = sent / max_rate - (time.monotonic() - began)
                if ahead > 0:
                    stop.wait(ahead)
        progress.close()
        elapsed = time.monotonic() - began
        log.info("backfill done: %d readings in %.1f s (%.0f msg/s)", sent, elapsed, sent / max(elapsed, 1e-9))
        self.backfilling = False
        for device in self.devices:
            device.schedule = []
            self.link_of[device.device_id].publish_state(device)
        self.write_params()
        return sent

    def live(self, interval_s: float, speed: float, stop: threading.Event) -> None:
        """Publish a reading per device every ``interval_s`` simulated seconds until ``stop`` is set."""
        # Readings on whole seconds; sim0 is the next one and wall0 the monotonic time it falls due.
        now = time.time()
        sim0 = float(math.ceil(max(now, max(d.t for d in self.devices))))
        wall0 = time.monotonic() + (sim0 - now) / speed
        period = interval_s / speed
        log.info("live: %d devices, a reading every %g s (simulated), speed x%g", len(self.devices), interval_s,
                 speed)
        k = 0
        last_warning = 0.0
        stop.wait(max(0.0, wall0 - time.monotonic()))
        recorded = self._change_count()
        while not stop.is_set():
            self.tick(sim0 + k * interval_s, stop)
            k += 1
            if k % 10 == 0 and self._change_count() != recorded:  # commands arrived: keep the record current
                recorded = self._change_count()
                self.write_params()
            delay = wall0 + k * period - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            elif time.monotonic() - last_warning > 30:
                last_warning = time.monotonic()
                log.warning("falling behind: %.1f s late; fewer devices or a longer interval would keep up", -delay)

    def _change_count(self) -> int:
        return sum(len(d.changes) for d in self.devices)

    def write_params(self) -> None:
        """Record the true parameters and every setpoint change applied so far (atomic replace)."""
        doc = params_document(self.devices, format=PARAMS_FORMAT, seed=self.seed, topic_prefix=self.topic_prefix,
                              written_at=_iso(time.time()), **self.meta)
        self.params_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.params_out.with_suffix(self.params_out.suffix + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.params_out)


def adopt_schedule(ids: Sequence[str], settings: Settings) -> list[str]:
    """Set ``SIM_PROGRAM`` as the schedule of each device the database knows no schedule for; returns those."""
    try:
        known = current_programs(settings.db_path)
    except (duckdb.Error, OSError, DatabaseNotReady) as exc:
        log.warning("cannot read stored schedules (%s): setting the simulator's program for every device", exc)
        known = {}
    adopted = [device_id for device_id in ids if device_id not in known]
    for device_id in adopted:
        set_schedule(device_id, SIM_PROGRAM, "simulator", settings)
        log.info("%s: schedule set to the simulator's daily program", device_id)
    return adopted


def params_document(devices: Sequence[SimDevice], **header: Any) -> dict[str, Any]:
    """The parameters file's content: ``header``, each device's true parameters and every setpoint change applied
    so far, in time order."""
    changes = sorted((c for d in devices for c in d.changes), key=lambda c: (c.t, c.device_id))
    return {**header, "devices": [d.params.to_dict() for d in devices],
            "setpoint_changes": [c.to_dict() for c in changes]}


def _iso(t: float) -> str:
    return contract.format_timestamp(datetime.fromtimestamp(t, UTC))


class _Progress:
    """tqdm on an interactive terminal, otherwise a log line every 10 %."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.bar = None
        self.next_pct = 10
        self.last = 0
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="msg", desc="backfill", file=sys.stderr)

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.last)
        else:
            while done * 100 >= self.next_pct * self.total and self.next_pct <= 100:
                log.info("backfill %d%% (%d/%d)", self.next_pct, done, self.total)
                self.next_pct += 10
        self.last = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _install_stop_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def run(args: argparse.Namespace) -> int:
    """Start the devices, backfill if asked, then publish live until Ctrl-C / SIGTERM."""
    settings = get_settings()
    if args.ha_discovery:
        settings = settings.model_copy(update={"sim_ha_discovery": True})
    if args.devices < 1:
        print("thermolog simulate: --devices must be at least 1", file=sys.stderr)
        return 2
    ids = device_ids(args.devices, args.id_prefix)
    topic_prefix = args.topic_prefix or settings.topic_prefix
    shared = args.shared if args.shared is not None else args.devices > SHARED_CONNECTION_ABOVE
    params_out = args.params_out or settings.db_path.parent / "sim_params.json"
    stop = threading.Event()
    _install_stop_signals(stop)
    backfill_interval = args.backfill_interval or args.interval
    steps = int(args.backfill // backfill_interval)
    if args.backfill_end is not None and not args.backfill_only:
        print("thermolog simulate: --backfill-end needs --backfill-only (live readings follow the clock)",
              file=sys.stderr)
        return 2
    end = args.backfill_end.timestamp() if args.backfill_end is not None else time.time()
    t0 = math.floor(end) - steps * backfill_interval
    sim = Simulation(ids, args.seed, t0, settings, topic_prefix, shared, params_out)
    sim.meta.update(interval_s=args.interval, speed=args.speed)
    log.info("%d simulated thermostats (%s ... %s) on %r, %s, parameters in %s", len(ids), ids[0], ids[-1],
             settings.mqtt_endpoint(), "one shared connection" if shared else "one connection each", params_out)
    try:
        sim.start()
    except ConnectionError as exc:
        print(f"thermolog simulate: {exc}", file=sys.stderr)
        return 1
    try:
        sim.write_params()
        if steps > 0:
            sim.backfill(steps, backfill_interval, stop, args.max_rate)
        if args.schedule and not args.backfill_only:
            adopt_schedule(ids, settings)
        if not args.backfill_only:
            sim.live(args.interval, args.speed, stop)
    finally:
        sim.stop()
        log.info("simulated thermostats stopped")
    return 0
