"""A daily setpoint schedule (wake, leave, return, night) with per-day random variation, reproducible by seed.

Backfilled history follows it, so it contains setpoint changes as well as heating cycles; every change applied is
recorded in the parameters file so analytics can be tested on held-out changes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from simulator.model import DAY_S

# (name, nominal hour of day UTC, spread in hours, nominal target °C)
DAILY_EVENTS: tuple[tuple[str, float, float, float], ...] = (
    ("wake", 6.5, 0.75, 21.0),
    ("leave", 8.75, 0.75, 19.0),
    ("return", 17.5, 1.0, 21.5),
    ("night", 22.5, 0.75, 17.5),
)


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
    changes = []
    for label, hour, spread, target in DAILY_EVENTS:
        # Some days skip leaving home (weekend, working from home): keeps the history from being too regular.
        if label == "leave" and rng.random() < 0.3:
            continue
        at = day * DAY_S + (hour + rng.uniform(-spread, spread)) * 3600.0
        changes.append(SetpointChange(round(at), _snap(target + rng.uniform(-1.0, 1.0), step), label))
    return changes


def schedule_between(device_id: str, seed: int, start: float, end: float, step: float = 0.5) -> list[SetpointChange]:
    """Scheduled changes with ``start < t <= end`` in time order."""
    first_day = math.floor(start / DAY_S)
    last_day = math.floor(end / DAY_S)
    out = []
    for day in range(first_day, last_day + 1):
        out.extend(c for c in day_events(device_id, seed, day, step) if start < c.t <= end)
    return sorted(out, key=lambda c: c.t)
