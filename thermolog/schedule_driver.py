"""Following schedules for devices that cannot: the original firmware, Zigbee2MQTT valves and user profiles do not
read ``schedule/points``, so ``thermolog automation`` sends each change point's target to them when it comes due,
through the command dispatch (``issued_by`` ``schedule``: the device's own rules, refusal audit and outcome).

Once per point: the driver remembers, per device, the last point it handled. After a (re)start it knows none, so
it sends the point in force only when the device's last reported target differs from it; points that fell due
while the process was down are not replayed.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from thermolog.commands.dispatch import send_command
from thermolog.commands.model import OUTCOME_OK, CommandResult, InvalidCommand
from thermolog.profiles import NATIVE
from thermolog.reader import DatabaseNotReady, query
from thermolog.schedule import ChangePoint, Program, ScheduleError, expand, parse_program
from thermolog.schedule_publish import current_programs
from thermolog.settings import Settings

log = logging.getLogger(__name__)

ISSUED_BY = "schedule"
WAKE_MARGIN_S = 0.05
"""Wake this much after a point is due, so the wall clock has surely passed it."""


@dataclass(frozen=True)
class ScheduledDevice:
    """A device that cannot follow ``schedule/points``, its stored program and its last reported target."""

    device_id: str
    kind: str
    program: dict[str, Any]
    target: float | None


def in_force(program: Program, now: datetime) -> tuple[ChangePoint | None, ChangePoint | None]:
    """The point in force at ``now`` (with the time it began; None before a program's first point) and the next."""
    points = expand(program, now, days=1)
    current = points[0] if points and points[0].at <= now else None
    upcoming = [p for p in points if p.at > now]
    return current, upcoming[0] if upcoming else None


def due_point(current: ChangePoint | None, handled: ChangePoint | None, device_target: float | None) -> bool:
    """Whether ``current`` is to be sent: it is not the point handled last, or, with none handled since the start,
    the device's target (None: unknown) differs from it."""
    if current is None:
        return False
    if handled is not None:
        return (handled.at, handled.target) != (current.at, current.target)
    return device_target is None or not math.isclose(device_target, current.target, abs_tol=1e-6)


def load_scheduled(settings: Settings) -> list[ScheduledDevice]:
    """Devices with a stored program whose kind is not native, with their last reported target."""
    programs = current_programs(settings.db_path)
    if not programs:
        return []
    rows = query("""SELECT d.device_id, d.kind, s.target_temp FROM devices d
                    LEFT JOIN device_state s USING (device_id) WHERE d.kind <> ?""", [NATIVE], settings.db_path)
    return [ScheduledDevice(device_id, kind, programs[device_id]["program"], target)
            for device_id, kind, target in rows.iter_rows() if device_id in programs]


class ScheduleDriver:
    """Sends the due change points of non-native devices; ``tick`` once, ``run`` until stopped."""

    def __init__(self, settings: Settings,
                 load: Callable[[Settings], list[ScheduledDevice]] = load_scheduled,
                 send: Callable[..., CommandResult] = send_command) -> None:
        self.settings, self.load, self.send = settings, load, send
        self.handled: dict[str, ChangePoint] = {}
        self.next_at: datetime | None = None

    def tick(self, now: datetime | None = None) -> list[tuple[str, ChangePoint]]:
        """Send every due point; returns (device, point) for each one handled. ``next_at``: the next point."""
        now = now or datetime.now(UTC)
        try:
            devices = self.load(self.settings)
        except (DatabaseNotReady, duckdb.Error) as exc:
            log.info("schedules not followed yet: %s", exc)
            return []
        self.next_at, handled = None, []
        for device in devices:
            try:
                program = parse_program(device.program, self.settings.display_timezone, float, now)
            except ScheduleError as exc:
                log.warning("schedule of %s not followed: %s", device.device_id, exc)
                continue
            current, upcoming = in_force(program, now)
            if upcoming is not None and (self.next_at is None or upcoming.at < self.next_at):
                self.next_at = upcoming.at
            if due_point(current, self.handled.get(device.device_id), device.target) and current is not None:
                if self._send(device, current):
                    self.handled[device.device_id] = current
                    handled.append((device.device_id, current))
        return handled

    def _send(self, device: ScheduledDevice, point: ChangePoint) -> bool:
        """Send one point; False only when it could not go out (the broker unreachable: tried again next tick)."""
        try:
            result = self.send(device.device_id, point.target, issued_by=ISSUED_BY, settings=self.settings,
                               rate_limited=False)
        except InvalidCommand as exc:  # logged and audited by the dispatch; the next point may be valid
            log.warning("schedule point %s (%g °C, %s) for %s (%s) refused: %s", point.at.isoformat(), point.target,
                        point.label, device.device_id, device.kind, exc,
                        extra={"event": "schedule_point_refused", "device_id": device.device_id})
            return True
        except (ConnectionError, OSError) as exc:
            log.warning("schedule point for %s not sent, retrying: %s", device.device_id, exc)
            return False
        level = logging.INFO if result.outcome == OUTCOME_OK else logging.WARNING
        log.log(level, "schedule point %s (%g °C, %s) for %s: %s%s", point.at.isoformat(), point.target,
                point.label, device.device_id, result.outcome, f" ({result.error})" if result.error else "",
                extra={"event": "schedule_point_sent", "device_id": device.device_id, "outcome": result.outcome})
        return True

    def wait_s(self, poll_s: float, now: datetime | None = None) -> float:
        """Seconds to sleep: until the next point (plus a margin), at most ``poll_s`` (new programs are read then)."""
        if self.next_at is None:
            return poll_s
        until = (self.next_at - (now or datetime.now(UTC))) + timedelta(seconds=WAKE_MARGIN_S)
        return max(0.0, min(poll_s, until.total_seconds()))

    def run(self, stop: threading.Event, poll_s: float) -> None:
        """Tick until ``stop`` is set, reading the programs at least every ``poll_s`` seconds."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - one bad round must not end the schedules until a restart
                log.exception("schedules: round failed; trying again in %.0f s", poll_s)
                self.next_at = None
            stop.wait(self.wait_s(poll_s))
