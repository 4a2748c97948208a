"""Alert episodes: which alerts started or cleared since the last evaluation, and which of those to notify.

Pure (alerts and times in, decisions out), so the cool-down and silence rules are tested without a clock or a
broker. An episode is one (device, rule) from the evaluation where it first fires to the one where it no longer
does. Notices:

- ``started`` is sent unless the same device and rule was notified less than the cool-down ago (a flapping alert
  does not flood anyone) or it is silenced; a suppressed episode that is still active once the cool-down has
  passed is sent then, so nothing active goes unannounced.
- ``cleared`` is sent when its start was (people who were told it started learn that it ended), unless silenced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from thermolog.alerting.rules import Alert
from thermolog.contract import ALERT_CLEARED, ALERT_STARTED

Key = tuple[str, str]
"""(device_id, rule)."""
ALL_RULES = "*"
"""A silence with this rule covers every rule of its device."""


@dataclass
class Episode:
    """An active alert: since when, its latest message, whether a notice about it went out."""

    started_at: datetime
    message: str
    notified: bool = False
    recorded: bool = False


@dataclass(frozen=True)
class Transition:
    """Something to record in the history, and whether to send it (``note`` says why not)."""

    device_id: str
    rule: str
    event: str
    message: str
    notify: bool
    note: str | None = None


@dataclass
class Tracker:
    """Remembers active episodes and when each (device, rule) was last notified."""

    cooldown: timedelta
    active: dict[Key, Episode] = field(default_factory=dict)
    last_notice: dict[Key, datetime] = field(default_factory=dict)

    def update(self, alerts: list[Alert], now: datetime,
               silences: dict[Key, datetime] | None = None) -> list[Transition]:
        """Compare ``alerts`` with the active episodes; ``silences`` maps (device, rule or ``*``) to its end."""
        silences = silences or {}
        current = {(a.device_id, a.rule): a for a in alerts}
        out: list[Transition] = []
        for key, alert in current.items():
            episode = self.active.get(key)
            if episode is None:
                episode = self.active[key] = Episode(now, alert.message)
            episode.message = alert.message
            if episode.notified:
                continue
            blocked = self._blocked(key, now, silences)
            if not episode.recorded or blocked is None:
                out.append(self._decide(key, ALERT_STARTED, episode, now, blocked))
        for key in [k for k in self.active if k not in current]:
            episode = self.active.pop(key)
            silenced = self._silenced(key, now, silences)
            if episode.notified and not silenced:
                self.last_notice[key] = now
                out.append(Transition(*key, ALERT_CLEARED, episode.message, True))
            else:
                note = "silenced" if episode.notified else "its start was not notified"
                out.append(Transition(*key, ALERT_CLEARED, episode.message, False, note))
        return out

    def _decide(self, key: Key, event: str, episode: Episode, now: datetime, blocked: str | None) -> Transition:
        episode.recorded = True
        if blocked is not None:
            return Transition(*key, event, episode.message, False, blocked)
        episode.notified = True
        self.last_notice[key] = now
        return Transition(*key, event, episode.message, True)

    def _blocked(self, key: Key, now: datetime, silences: dict[Key, datetime]) -> str | None:
        silenced = self._silenced(key, now, silences)
        if silenced is not None:
            return f"silenced until {silenced.isoformat(timespec='minutes')}"
        last = self.last_notice.get(key)
        if last is not None and now - last < self.cooldown:
            return f"cool-down: last notice {int((now - last).total_seconds() // 60)} min ago"
        return None

    @staticmethod
    def _silenced(key: Key, now: datetime, silences: dict[Key, datetime]) -> datetime | None:
        ends = [end for k in (key, (key[0], ALL_RULES)) if (end := silences.get(k)) is not None and end > now]
        return max(ends) if ends else None

    def restore(self, key: Key, started_at: datetime, message: str, notified: bool) -> None:
        """Take over an episode a previous run recorded as started and not cleared (no second notice)."""
        self.active[key] = Episode(started_at, message, notified, recorded=True)
        if notified:
            self.last_notice[key] = max(self.last_notice.get(key, started_at), started_at)
