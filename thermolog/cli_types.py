"""Argument types the subcommands share: durations, positive numbers, times with a zone, numbered device ids."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime

from thermolog import contract

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def utc_time(text: str) -> datetime:
    """An ISO-8601 time with a zone (``Z`` or an offset), as UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time like 2026-01-15T00:00:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. a trailing Z for UTC")
    return moment.astimezone(UTC)


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``12h``, ``14d``, ``2w`` or a bare number of seconds; ``0`` means none."""
    match = _DURATION_RE.match(text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 12h or 14d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def positive(text: str) -> float:
    """A number above zero."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def device_ids(count: int, id_prefix: str) -> list[str]:
    """``sim-01`` ... (zero-padded to at least two digits), each checked against the contract."""
    width = max(2, len(str(count)))
    return [contract.check_device_id(f"{id_prefix}-{n:0{width}d}") for n in range(1, count + 1)]
