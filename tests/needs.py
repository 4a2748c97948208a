"""What a test needs from the machine, as pytest markers (registered in pyproject.toml; docs/testing.md).

Markers come from two places, so that ``-m "not broker"`` and the like select correctly:
- fixtures: a test using a fixture in ``FIXTURE_NEEDS`` (directly or through another fixture) gets its marker at
  collection, nothing to write;
- the test itself (``pytestmark`` or ``@pytest.mark.broker``) when it starts the thing directly.

Whatever starts a broker, a browser or MicroPython calls ``require`` first: a test that does so without the
marker fails, naming the marker to add, instead of silently running in a selection that excludes it.
"""

from __future__ import annotations

import pytest

FIXTURE_NEEDS = {
    "system_broker": "broker",
    "private_broker": "broker",
    "roomy_broker": "broker",
    "simulated_history": "slow",  # a 14-day backfill through Mosquitto and ingest, once per session
    "small_disk": "root",
}
"""Fixture name -> the marker every test using it gets."""

_current: pytest.Item | None = None


def set_current(item: pytest.Item | None) -> None:
    """Called by tests/conftest.py around each test."""
    global _current
    _current = item


def require(marker: str, what: str) -> None:
    """Fail the running test unless it carries ``marker``; ``what`` names the thing it started."""
    if _current is not None and _current.get_closest_marker(marker) is None:
        pytest.fail(f"{_current.nodeid} uses {what} but is not marked {marker!r}: add @pytest.mark.{marker} "
                    f"(or pytestmark = pytest.mark.{marker}) so that -m selections stay right; see docs/testing.md",
                    pytrace=False)
