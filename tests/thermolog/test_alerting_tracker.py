"""Alert episodes: a notice when an alert starts and when it clears, a cool-down against flapping, silences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from thermolog.alerting.rules import Alert
from thermolog.alerting.tracker import ALL_RULES, Tracker

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
OFF = Alert("dev-1", "offline", "offline for 12 min")
HOT = Alert("dev-2", "temperature_high", "temperature 31.0 °C is above 30.0 °C")


def _summary(transitions) -> list[tuple[str, str, bool]]:
    return [(t.device_id, t.event, t.notify) for t in transitions]


def test_start_and_clear_are_notified_once_each() -> None:
    """New alert: started, sent; still active: nothing; gone: cleared, sent."""
    tracker = Tracker(timedelta(minutes=30))
    assert _summary(tracker.update([OFF, HOT], T0)) == [("dev-1", "started", True), ("dev-2", "started", True)]
    assert tracker.update([OFF, HOT], T0 + timedelta(minutes=1)) == []
    assert _summary(tracker.update([HOT], T0 + timedelta(minutes=2))) == [("dev-1", "cleared", True)]


def test_flapping_alert_waits_for_the_cooldown_then_is_sent_if_still_active() -> None:
    """Start, clear, start again within the cool-down: the second start is recorded, not sent, until it has
    passed; its clear is sent only if its start was."""
    tracker = Tracker(timedelta(minutes=30))
    tracker.update([OFF], T0)
    tracker.update([], T0 + timedelta(minutes=1))
    again = tracker.update([OFF], T0 + timedelta(minutes=2))
    assert _summary(again) == [("dev-1", "started", False)] and again[0].note.startswith("cool-down")
    assert tracker.update([OFF], T0 + timedelta(minutes=20)) == []  # recorded once, not repeated
    late = tracker.update([OFF], T0 + timedelta(minutes=32))
    assert _summary(late) == [("dev-1", "started", True)]
    assert _summary(tracker.update([], T0 + timedelta(minutes=33))) == [("dev-1", "cleared", True)]
    tracker.update([OFF], T0 + timedelta(minutes=34))
    cleared = tracker.update([], T0 + timedelta(minutes=35))
    assert _summary(cleared) == [("dev-1", "cleared", False)]


def test_silence_suppresses_notices_until_it_ends() -> None:
    """A silence for one rule or for the whole device (``*``) holds notices back until its end."""
    tracker = Tracker(timedelta(0))
    silences = {("dev-1", "offline"): T0 + timedelta(hours=1), ("dev-2", ALL_RULES): T0 + timedelta(hours=1)}
    first = tracker.update([OFF, HOT], T0, silences)
    assert _summary(first) == [("dev-1", "started", False), ("dev-2", "started", False)]
    assert all(t.note.startswith("silenced until") for t in first)
    assert _summary(tracker.update([OFF, HOT], T0 + timedelta(minutes=61), silences)) == [
        ("dev-1", "started", True), ("dev-2", "started", True)]


def test_restored_episode_is_not_announced_again() -> None:
    """After a restart, an episode already notified and not cleared is taken over silently; its clear is sent."""
    tracker = Tracker(timedelta(minutes=30))
    tracker.restore(("dev-1", "offline"), T0, OFF.message, notified=True)
    assert tracker.update([OFF], T0 + timedelta(minutes=5)) == []
    assert _summary(tracker.update([], T0 + timedelta(minutes=6))) == [("dev-1", "cleared", True)]
