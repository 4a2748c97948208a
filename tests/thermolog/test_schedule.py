"""The schedule format: validation with named fields, overrides, and the expansion into UTC change points across
daylight-saving changes (Europe/Berlin, last Sundays of March and October 2026)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from simulator.schedule import SIM_PROGRAM, day_events
from thermolog.commands.model import validate_setpoint
from thermolog.control import SetpointSchedule
from thermolog.schedule import ScheduleError, expand, load_file, next_change, parse_program
from thermolog.settings import Settings

BERLIN = {"timezone": "Europe/Berlin", "slots": [
    {"days": "daily", "at": "02:30", "preset": "comfort"},
    {"days": "mon-fri", "at": "07:00", "target": 20.5},
    {"days": "daily", "at": "22:00", "preset": "eco"},
]}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def local_times(program_doc: dict, start: str, days: int) -> list[tuple[str, str, float]]:
    program = parse_program(program_doc, "UTC")
    return [(p.at.strftime("%Y-%m-%dT%H:%M"), p.at.astimezone(program.tz).strftime("%H:%M %Z"), p.target)
            for p in expand(program, utc(start), days)]


def test_spring_forward_slot_in_the_gap_starts_when_the_clock_jumps() -> None:
    """2026-03-29 02:30 does not exist in Berlin: that slot starts at 03:30 CEST (01:30 UTC); 22:00 moves from
    21:00 UTC to 20:00 UTC."""
    points = local_times(BERLIN, "2026-03-28T00:00:00Z", 2)
    assert points == [
        ("2026-03-27T21:00", "22:00 CET", 18.0),  # in force at the start
        ("2026-03-28T01:30", "02:30 CET", 21.0),
        ("2026-03-28T21:00", "22:00 CET", 18.0),
        ("2026-03-29T01:30", "03:30 CEST", 21.0),
        ("2026-03-29T20:00", "22:00 CEST", 18.0),
    ]


def test_fall_back_repeated_hour_uses_its_first_occurrence() -> None:
    """2026-10-25 02:30 happens twice in Berlin: the slot runs once, at the first (CEST, 00:30 UTC)."""
    points = local_times(BERLIN, "2026-10-24T12:00:00Z", 2)
    assert points == [
        ("2026-10-24T00:30", "02:30 CEST", 21.0),
        ("2026-10-24T20:00", "22:00 CEST", 18.0),
        ("2026-10-25T00:30", "02:30 CEST", 21.0),
        ("2026-10-25T21:00", "22:00 CET", 18.0),
        ("2026-10-26T01:30", "02:30 CET", 21.0),
        ("2026-10-26T06:00", "07:00 CET", 20.5),  # Monday: the weekday slot
    ]


def test_every_local_slot_time_is_kept_through_a_year_of_dst_changes() -> None:
    """Over 2026, every 22:00 point is 22:00 Berlin time, and there are exactly 365 of them."""
    program = parse_program(BERLIN, "UTC")
    points = expand(program, utc("2026-01-01T00:00:00Z"), 365)
    evening = [p for p in points if p.target == 18.0 and p.at >= utc("2026-01-01T00:00:00Z")]
    assert len(evening) == 365
    assert {p.at.astimezone(program.tz).strftime("%H:%M") for p in evening} == {"22:00"}


def test_boost_and_away_overrides_replace_the_program_then_hand_back() -> None:
    """A boost holds its target for its minutes, then the slot in force resumes; away holds the away preset until
    local midnight of its date."""
    doc = {**BERLIN, "presets": {"away": 12.0}, "overrides": [
        {"kind": "boost", "target": 24.0, "minutes": 90, "start": "2026-01-05T10:00:00Z"},
        {"kind": "away", "start": "2026-01-06T08:00:00Z", "until": "2026-01-08"},
    ]}
    program = parse_program(doc, "UTC")
    points = [(p.at.isoformat(), p.target, p.label) for p in expand(program, utc("2026-01-05T09:00:00Z"), 4)]
    assert points[:3] == [("2026-01-05T06:00:00+00:00", 20.5, "program"),
                          ("2026-01-05T10:00:00+00:00", 24.0, "boost"),
                          ("2026-01-05T11:30:00+00:00", 20.5, "program")]
    away = [p for p in points if "2026-01-06T08" <= p[0] < "2026-01-07T23:00"]
    assert away == [("2026-01-06T08:00:00+00:00", 12.0, "away")]  # no slot breaks through
    back = next(p for p in points if p[0] >= "2026-01-07T23:00")
    assert back == ("2026-01-07T23:00:00+00:00", 18.0, "eco")  # midnight Berlin: the 22:00 slot is in force


def test_next_change_and_override_start_default_to_now() -> None:
    now = utc("2026-01-05T10:00:00Z")
    program = parse_program({**BERLIN, "overrides": [{"kind": "boost", "target": 23.0, "minutes": 30}]},
                            "UTC", now=now)
    assert program.raw["overrides"][0]["start"] == "2026-01-05T10:00:00Z"
    assert program.raw["timezone"] == "Europe/Berlin"
    change = next_change(program, now)
    assert change is not None and change.at == now + timedelta(minutes=30) and change.target == 20.5


@pytest.mark.parametrize(("doc", "field"), [
    ({"slots": [{"days": "someday", "at": "06:00", "target": 20}]}, "slots[0].days"),
    ({"slots": [{"days": "daily", "at": "25:00", "target": 20}]}, "slots[0].at"),
    ({"slots": [{"days": "daily", "at": "06:00"}]}, "slots[0]: give exactly one"),
    ({"slots": [{"days": "daily", "at": "06:00", "preset": "party"}]}, "slots[0].preset"),
    ({"slots": [{"days": "daily", "at": "06:00", "target": 60}]}, "slots[0].target: target 60.0"),
    ({"slots": [{"days": "daily", "at": "06:00", "target": 20.3}]}, "multiple"),
    ({"presets": {"comfort": "warm"}}, "presets.comfort"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"overrides": [{"kind": "boost", "target": 22, "minutes": 0}]}, "overrides[0].minutes"),
    ({"overrides": [{"kind": "party"}]}, "overrides[0].kind"),
    ({"overrides": [{"kind": "away", "until": "soon"}]}, "overrides[0].until"),
    ({"slot": []}, "unknown key"),
    ({"slots": [{"days": "daily", "at": "06:00", "target": 20}] * 101}, "at most 100"),
])
def test_bad_programs_name_the_field(doc: dict, field: str) -> None:
    settings = Settings()
    with pytest.raises(ScheduleError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_program(doc, "UTC", lambda v: validate_setpoint(v, settings), now=utc("2026-01-05T10:00:00Z"))


def test_toml_and_json_files_load(tmp_path: Path) -> None:
    toml = tmp_path / "home.toml"
    toml.write_text('timezone = "Europe/Berlin"\n[presets]\ncomfort = 21.5\n'
                    '[[slots]]\ndays = "weekend"\nat = "08:00"\npreset = "comfort"\n')
    program = parse_program(load_file(toml), "UTC")
    assert program.slots[0].days == (5, 6) and program.slots[0].target == 21.5
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ScheduleError, match="bad.json"):
        load_file(bad)
    with pytest.raises(ScheduleError, match="cannot read"):
        load_file(tmp_path / "missing.toml")


def test_the_simulators_daily_schedule_is_a_program_in_this_format() -> None:
    """The simulator's program validates like any other, and each simulated day's changes stay within the slot
    spreads of the program's times and within 1 °C of its targets."""
    program = parse_program(SIM_PROGRAM, "UTC")
    day = 20_000
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)
    slot_points = [p for p in expand(program, start, 1) if p.at >= start]
    for change in day_events("sim-01", 1, day):
        near = min(slot_points, key=lambda p: abs(p.at.timestamp() - change.t))
        assert abs(near.at.timestamp() - change.t) <= 3600 and abs(near.target - change.target_c) <= 1.0


def test_setpoint_schedule_applies_each_point_once() -> None:
    """The device-side follower: the point in force applies once, a refreshed list with the same point does not
    apply it again, and malformed points are refused."""
    follower = SetpointSchedule()
    follower.load([[200, 18.0], [100, 21.0]])
    assert follower.due(50) is None
    assert follower.due(150) == 21.0 and follower.due(160) is None
    follower.load([[100, 21.0], [200, 18.0], [300, 22.0]])
    assert follower.due(170) is None and follower.next_change(170) == (200, 18.0)
    assert follower.due(250) == 18.0
    for bad in ([[1.5, 20.0]], [[1, "20"]], [[1]], ["x"]):
        with pytest.raises(ValueError):
            follower.load(bad)
