"""Weekly heating programs: the file format, its validation, and its expansion into UTC change points.

A program (a TOML or JSON file for ``thermolog schedule set``; the same object on the wire and in storage)::

    timezone = "Europe/Berlin"          # optional; default THERMOLOG_DISPLAY_TIMEZONE

    [presets]                           # optional; these are the defaults
    comfort = 21.0
    eco = 18.0
    away = 15.0

    [[slots]]                           # from this local time on these days, hold this target
    days = "mon-fri"                    # "daily", "weekdays", "weekend", "mon-fri", "sat,sun" or a list
    at = "06:30"                        # local time HH:MM
    preset = "comfort"                  # or: target = 21.5

    [[overrides]]                       # temporary, ahead of the slots
    kind = "boost"                      # boost to `target` for `minutes` from `start`
    target = 23.0
    minutes = 60
    start = "2026-11-29T15:00:00Z"      # optional for `thermolog schedule set`: now

    [[overrides]]
    kind = "away"                       # the away preset from `start` until local midnight of `until`
    until = "2026-12-03"                # a local date (or local date and time "2026-12-03T17:00")

Each slot holds its target until the next slot of the week. Times are local wall-clock times in ``timezone``:
on the spring-forward day a slot inside the missing hour starts when the clock jumps (02:30 -> 03:30 in
Berlin), and on the fall-back day a slot in the repeated hour starts at its first occurrence. The server
(``expand``) turns the program into change points in UTC, so devices never handle time zones.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_SETS = {"daily": tuple(range(7)), "weekdays": tuple(range(5)), "weekend": (5, 6)}
DEFAULT_PRESETS = {"comfort": 21.0, "eco": 18.0, "away": 15.0}
OVERRIDE_KINDS = ("boost", "away")
MAX_SLOTS = 100
MAX_OVERRIDES = 20
HORIZON_DAYS = 7
"""How many days of change points the server sends ahead (refreshed well before they run out)."""
_KEYS = {"timezone", "presets", "slots", "overrides"}


class ScheduleError(ValueError):
    """A program that breaks the format; the message names the field."""


@dataclass(frozen=True)
class Slot:
    """From local time ``at`` on ``days`` (0 = Monday), hold ``target`` (``label``: the preset, else ``program``)."""

    days: tuple[int, ...]
    at: time
    target: float
    label: str


@dataclass(frozen=True)
class Override:
    """Hold ``target`` from ``start`` to ``end`` (UTC)."""

    kind: str
    start: datetime
    end: datetime
    target: float


@dataclass(frozen=True)
class Program:
    """A validated program; ``raw`` is the document it came from (what is stored and shown)."""

    tz: ZoneInfo
    presets: dict[str, float]
    slots: tuple[Slot, ...]
    overrides: tuple[Override, ...]
    raw: dict[str, Any]


@dataclass(frozen=True)
class ChangePoint:
    """At ``at`` (UTC) the target becomes ``target`` (``label``: preset, ``program``, ``boost`` or ``away``)."""

    at: datetime
    target: float
    label: str


def _days(value: Any, where: str) -> tuple[int, ...]:
    items = value if isinstance(value, list) else str(value).lower().replace(" ", "").split(",")
    out: set[int] = set()
    for item in items:
        item = str(item).lower()
        if item in DAY_SETS:
            out.update(DAY_SETS[item])
        elif "-" in item:
            first, _, last = item.partition("-")
            if first not in DAY_NAMES or last not in DAY_NAMES:
                raise ScheduleError(f"{where}.days: {item!r} is not a day range like mon-fri")
            a, b = DAY_NAMES.index(first), DAY_NAMES.index(last)
            out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
        elif item in DAY_NAMES:
            out.add(DAY_NAMES.index(item))
        else:
            raise ScheduleError(f"{where}.days: {item!r} is not a day ({', '.join(DAY_NAMES)}, daily, weekdays, "
                                "weekend or a range like mon-fri)")
    if not out:
        raise ScheduleError(f"{where}.days: no day given")
    return tuple(sorted(out))


def _number(value: Any, where: str, check: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScheduleError(f"{where}: must be a number")
    try:
        return float(check(value))
    except ValueError as exc:
        raise ScheduleError(f"{where}: {exc}") from None


def _target(entry: dict[str, Any], presets: dict[str, float], where: str, check: Any) -> tuple[float, str]:
    if ("preset" in entry) == ("target" in entry):
        raise ScheduleError(f"{where}: give exactly one of preset or target")
    if "preset" in entry:
        name = entry["preset"]
        if name not in presets:
            raise ScheduleError(f"{where}.preset: {name!r} is not one of {', '.join(presets)}")
        return presets[name], str(name)
    value = _number(entry["target"], f"{where}.target", check)
    return value, "program"


def _utc(value: Any, where: str) -> datetime:
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ScheduleError(f"{where}: {value!r} is not an ISO-8601 time") from None
    if dt.tzinfo is None:
        raise ScheduleError(f"{where}: needs a time zone (a trailing Z for UTC)")
    return dt.astimezone(UTC)


def local_to_utc(day: date, at: time, tz: ZoneInfo) -> datetime:
    """A local wall-clock time in UTC: a time in the spring-forward gap moves forward by the gap, a repeated time
    in the fall-back hour is its first occurrence."""
    local = datetime.combine(day, at, tzinfo=tz)  # fold=0: the offset before a transition
    return local.astimezone(UTC)


def _override(entry: Any, index: int, presets: dict[str, float], tz: ZoneInfo, check: Any,
              now: datetime | None) -> Override:
    where = f"overrides[{index}]"
    if not isinstance(entry, dict):
        raise ScheduleError(f"{where}: must be a table")
    kind = entry.get("kind")
    start = _utc(entry["start"], f"{where}.start") if "start" in entry else now
    if start is None:
        raise ScheduleError(f"{where}.start: missing")
    if kind == "boost":
        unknown = set(entry) - {"kind", "target", "minutes", "start"}
        minutes = entry.get("minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 24 * 60:
            raise ScheduleError(f"{where}.minutes: a whole number of minutes from 1 to 1440")
        target = _number(entry.get("target"), f"{where}.target", check)
        end = start + timedelta(minutes=minutes)
    elif kind == "away":
        unknown = set(entry) - {"kind", "until", "start"}
        try:
            until = datetime.fromisoformat(str(entry.get("until")))
        except ValueError:
            raise ScheduleError(f"{where}.until: a local date like 2026-12-03 (or date and time)") from None
        end = until.replace(tzinfo=tz).astimezone(UTC) if until.tzinfo is None else until.astimezone(UTC)
        target = presets["away"]
    else:
        raise ScheduleError(f"{where}.kind: {kind!r} is not boost or away")
    if unknown:
        raise ScheduleError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if end <= start:
        raise ScheduleError(f"{where}: ends before it starts")
    return Override(str(kind), start, end, target)


def parse_program(data: Any, default_tz: str, check: Any = float, now: datetime | None = None) -> Program:
    """Validate a program document; ``check`` validates a target (e.g. ``Thermostat.check_target``), ``now``
    becomes the start of overrides that have none. Raises ScheduleError naming the field."""
    if not isinstance(data, dict):
        raise ScheduleError("a program must be a table (TOML) or object (JSON)")
    unknown = set(data) - _KEYS
    if unknown:
        raise ScheduleError(f"unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_KEYS))}")
    tz_name = data.get("timezone") or default_tz
    try:
        tz = ZoneInfo(str(tz_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"timezone: {tz_name!r} is not an IANA time zone like Europe/Berlin") from None
    presets = dict(DEFAULT_PRESETS)
    given = data.get("presets", {})
    if not isinstance(given, dict):
        raise ScheduleError("presets: must be a table of name = temperature")
    for name, value in given.items():
        if name not in DEFAULT_PRESETS:
            raise ScheduleError(f"presets.{name}: not one of {', '.join(DEFAULT_PRESETS)}")
        presets[name] = _number(value, f"presets.{name}", check)
    slots_in = data.get("slots", [])
    if not isinstance(slots_in, list) or len(slots_in) > MAX_SLOTS:
        raise ScheduleError(f"slots: a list of at most {MAX_SLOTS} slots")
    slots = []
    for i, entry in enumerate(slots_in):
        where = f"slots[{i}]"
        if not isinstance(entry, dict):
            raise ScheduleError(f"{where}: must be a table")
        extra = set(entry) - {"days", "at", "preset", "target"}
        if extra:
            raise ScheduleError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        try:
            at = time.fromisoformat(str(entry.get("at")))
        except ValueError:
            raise ScheduleError(f"{where}.at: {entry.get('at')!r} is not a local time like 06:30") from None
        target, label = _target(entry, presets, where, check)
        slots.append(Slot(_days(entry.get("days", "daily"), where), at.replace(tzinfo=None), target, label))
    overrides_in = data.get("overrides", [])
    if not isinstance(overrides_in, list) or len(overrides_in) > MAX_OVERRIDES:
        raise ScheduleError(f"overrides: a list of at most {MAX_OVERRIDES}")
    overrides = tuple(_override(e, i, presets, tz, check, now) for i, e in enumerate(overrides_in))
    raw = {**data, "timezone": tz.key}  # stored with the zone it was read in: the default may change later
    if overrides_in:  # store the start each override got
        raw["overrides"] = [{**e, "start": o.start.isoformat().replace("+00:00", "Z")}
                            for e, o in zip(overrides_in, overrides, strict=True)]
    return Program(tz, presets, tuple(slots), overrides, raw)


def load_file(path: Path) -> Any:
    """Read a program file: TOML (``.toml``) or JSON (anything else). Raises ScheduleError when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScheduleError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ScheduleError(f"{path}: {exc}") from None


def program_points(program: Program, start: datetime, end: datetime) -> list[ChangePoint]:
    """The weekly slots' change points from a week before ``start`` up to ``end`` (UTC), in time order."""
    first = start.astimezone(program.tz).date() - timedelta(days=8)
    last = end.astimezone(program.tz).date() + timedelta(days=1)
    points = []
    day = first
    while day <= last:
        for slot in program.slots:
            if day.weekday() in slot.days:
                at = local_to_utc(day, slot.at, program.tz)
                if at <= end:
                    points.append(ChangePoint(at, slot.target, slot.label))
        day += timedelta(days=1)
    points.sort(key=lambda p: p.at)
    return points


def _in_force(points: list[ChangePoint], overrides: tuple[Override, ...], at: datetime) -> ChangePoint | None:
    for override in reversed(overrides):  # a later override wins where two overlap
        if override.start <= at < override.end:
            return ChangePoint(at, override.target, override.kind)
    found = None
    for point in points:
        if point.at > at:
            break
        found = point
    return None if found is None else ChangePoint(at, found.target, found.label)


def expand(program: Program, start: datetime, days: int = HORIZON_DAYS) -> list[ChangePoint]:
    """The change points from ``start`` for ``days`` days: first the point in force at ``start`` (with the time
    it began), then every slot start and override boundary after it. A slot repeating the target in force is
    kept: like a wall thermostat, a setpoint changed by hand holds until the program's next point."""
    end = start + timedelta(days=days)
    base = program_points(program, start, end)
    instants = {p.at for p in base}
    for override in program.overrides:
        instants.update((override.start, override.end))
    out: list[ChangePoint] = []
    for at in sorted(instants):
        if at > end:
            break
        point = _in_force(base, program.overrides, at)
        if point is None:
            continue
        if out and point.label in OVERRIDE_KINDS and (out[-1].label, out[-1].target) == (point.label, point.target):
            continue  # a slot inside an override changes nothing
        if at <= start:
            out = [point]  # only the newest point before start stays: the one in force
        else:
            out.append(point)
    return out


def next_change(program: Program, now: datetime) -> ChangePoint | None:
    """The first change after ``now``, or None (an empty program, or no change within the horizon)."""
    points = [p for p in expand(program, now) if p.at > now]
    return points[0] if points else None
