"""The schedule driver on synthetic times: which change point is due, once per point, after a restart only when
the device's target differs, refusals not retried, an unreachable broker retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from thermolog.commands.model import OUTCOME_OK, CommandResult, InvalidCommand
from thermolog.schedule import parse_program
from thermolog.schedule_driver import ISSUED_BY, ScheduledDevice, ScheduleDriver, due_point, in_force
from thermolog.settings import Settings

PROGRAM = {"timezone": "Europe/Berlin", "slots": [
    {"days": "daily", "at": "06:30", "preset": "comfort"},
    {"days": "daily", "at": "22:00", "preset": "eco"},
]}
# 2026-11-30 is a Monday; Berlin is UTC+1 in winter: 06:30 local = 05:30 UTC, 22:00 local = 21:00 UTC.
MORNING = datetime(2026, 11, 30, 5, 30, tzinfo=UTC)
EVENING = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)


class Sender:
    """Records what the driver sends; answers with ``outcome`` or raises ``error``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, float, dict[str, Any]]] = []
        self.error: Exception | None = None

    def __call__(self, device_id: str, target: float, **kwargs: Any) -> CommandResult:
        if self.error is not None:
            raise self.error
        self.sent.append((device_id, target, kwargs))
        return CommandResult("r", device_id, target, OUTCOME_OK)


def _driver(sender: Sender, devices: list[ScheduledDevice]) -> ScheduleDriver:
    return ScheduleDriver(Settings(display_timezone="UTC"), load=lambda _s: devices, send=sender)


def _valve(target: float | None, program: dict[str, Any] = PROGRAM, kind: str = "zigbee2mqtt") -> ScheduledDevice:
    return ScheduledDevice("z2m-valve", kind, program, target)


def test_in_force_is_the_newest_point_with_the_time_it_began() -> None:
    program = parse_program(PROGRAM, "UTC")
    current, upcoming = in_force(program, MORNING + timedelta(hours=2))
    assert (current.at, current.target) == (MORNING, 21.0)
    assert (upcoming.at, upcoming.target) == (EVENING, 18.0)
    current, _ = in_force(program, MORNING - timedelta(seconds=1))
    assert current.at == EVENING - timedelta(days=1) and current.target == 18.0


def test_due_point_rules() -> None:
    program = parse_program(PROGRAM, "UTC")
    current, _ = in_force(program, MORNING)
    assert due_point(current, None, None)  # unknown target after a start: send
    assert due_point(current, None, 18.0)
    assert not due_point(current, None, 21.0)  # the device already holds it
    assert not due_point(current, current, 18.0)  # handled: a hand-set target holds until the next point
    earlier, _ = in_force(program, MORNING - timedelta(minutes=1))
    assert due_point(current, earlier, 21.0)  # a new point is sent even when the target happens to match
    assert not due_point(None, None, None)


def test_each_point_is_sent_once_when_it_comes_due() -> None:
    sender = Sender()
    driver = _driver(sender, [_valve(18.0)])
    assert driver.tick(MORNING - timedelta(seconds=1)) == []  # eco in force and held: nothing to send
    assert driver.next_at == MORNING
    assert driver.wait_s(60, MORNING - timedelta(seconds=1)) == pytest.approx(1.05)
    assert sender.sent == []
    driver.tick(MORNING)
    driver.tick(MORNING + timedelta(minutes=1))
    driver.tick(MORNING + timedelta(hours=3))
    assert [(d, t) for d, t, _ in sender.sent] == [("z2m-valve", 21.0)]
    assert sender.sent[0][2]["issued_by"] == ISSUED_BY and sender.sent[0][2]["rate_limited"] is False
    assert driver.next_at == EVENING
    driver.tick(EVENING + timedelta(seconds=2))
    assert [t for _, t, _ in sender.sent] == [21.0, 18.0]


def test_a_restart_sends_the_point_in_force_only_when_the_device_differs() -> None:
    sender = Sender()
    _driver(sender, [_valve(21.0)]).tick(MORNING + timedelta(hours=1))
    assert sender.sent == []
    _driver(sender, [_valve(19.5)]).tick(MORNING + timedelta(hours=1))
    assert [t for _, t, _ in sender.sent] == [21.0]
    _driver(sender, [_valve(None)]).tick(MORNING + timedelta(hours=1))  # no state reported yet: send
    assert [t for _, t, _ in sender.sent] == [21.0, 21.0]


def test_a_boost_override_is_a_point_of_its_own() -> None:
    start = MORNING + timedelta(hours=1)
    program = {**PROGRAM, "overrides": [{"kind": "boost", "target": 23.0, "minutes": 30,
                                         "start": start.isoformat().replace("+00:00", "Z")}]}
    sender = Sender()
    driver = _driver(sender, [_valve(21.0, program)])
    driver.tick(start - timedelta(seconds=5))
    assert driver.next_at == start and sender.sent == []
    driver.tick(start)
    driver.tick(start + timedelta(minutes=30))
    assert [t for _, t, _ in sender.sent] == [23.0, 21.0]


def test_a_refused_point_is_not_retried_and_a_broker_failure_is() -> None:
    sender = Sender()
    driver = _driver(sender, [_valve(18.0, kind="original")])
    sender.error = InvalidCommand("whole degrees only")
    assert driver.tick(MORNING) != []  # handled: refused (the dispatch audits it), not sent again
    sender.error = None
    driver.tick(MORNING + timedelta(seconds=30))
    assert sender.sent == []

    driver = _driver(sender, [_valve(18.0)])
    sender.error = ConnectionError("broker down")
    assert driver.tick(MORNING) == []
    sender.error = None
    driver.tick(MORNING + timedelta(seconds=30))
    assert [t for _, t, _ in sender.sent] == [21.0]


def test_an_invalid_stored_program_is_skipped() -> None:
    sender = Sender()
    driver = _driver(sender, [_valve(None, {"slots": [{"at": "25:00", "target": 20}]}), _valve(None)])
    driver.tick(MORNING)
    assert [t for _, t, _ in sender.sent] == [21.0]
