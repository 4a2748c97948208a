"""The simulator's daily setpoint schedule: a weekly program in the ``thermolog.schedule`` format (wake, leave,
return, night, every day, in UTC) with per-day random variation, reproducible by seed.

Backfilled history follows it, so it contains setpoint changes as well as heating cycles; every change applied is
recorded in the parameters file so analytics can be tested on held-out changes. ``SIM_PROGRAM`` is an ordinary
program: ``thermolog schedule set DEVICE --file`` accepts it, and live devices follow whatever program the server
sends them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, timedelta

from simulator.model import DAY_S
from thermolog.schedule import local_to_utc, parse_program

SIM_PROGRAM = {
    "timezone": "UTC",
    "presets": {"comfort": 21.0, "eco": 17.5, "away": 15.0},
    "slots": [
        {"days": "daily", "at": "06:30", "preset": "comfort"},
        {"days": "daily", "at": "08:45", "target": 19.0},
        {"days": "daily", "at": "17:30", "target": 21.5},
        {"days": "daily", "at": "22:30", "preset": "eco"},
    ],
}
"""The daily program every simulated home nominally follows."""
SLOT_NAMES = ("wake", "leave", "return", "night")
SPREAD_H = (0.75, 0.75, 1.0, 0.75)
"""How far (hours, either way) each slot wanders from day to day."""
PROGRAM = parse_program(SIM_PROGRAM, "UTC")


@dataclass(frozen=True)
class SetpointChange:
    """One scheduled setpoint change at epoch seconds ``t``."""

    t: float
    target_c: float
    label: str


def _snap(value: float, step: float) -> float:
    return round(round(value / step) * step, 6)


def day_events(device_id: str, seed: int, day: int, step: float = 0.5) -> list[SetpointChange]:
    """The changes of one UTC day (``day`` = days since the epoch); the same day always gives the same list."""
    rng = random.Random(f"thermolog-sim:{seed}:{device_id}:schedule:{day}")
    on = date(1970, 1, 1) + timedelta(days=day)
    changes = []
    for slot, label, spread in zip(PROGRAM.slots, SLOT_NAMES, SPREAD_H, strict=True):
        # Some days skip leaving home (weekend, working from home): keeps the history from being too regular.
        if label == "leave" and rng.random() < 0.3:
            continue
        nominal = local_to_utc(on, slot.at, PROGRAM.tz)
        at = nominal.timestamp() + rng.uniform(-spread, spread) * 3600.0
        changes.append(SetpointChange(round(at), _snap(slot.target + rng.uniform(-1.0, 1.0), step), label))
    return changes


def schedule_between(device_id: str, seed: int, start: float, end: float, step: float = 0.5) -> list[SetpointChange]:
    """Scheduled changes with ``start < t <= end`` in time order."""
    first_day = math.floor(start / DAY_S)
    last_day = math.floor(end / DAY_S)
    out = []
    for day in range(first_day, last_day + 1):
        out.extend(c for c in day_events(device_id, seed, day, step) if start < c.t <= end)
    return sorted(out, key=lambda c: c.t)

