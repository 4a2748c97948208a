"""Delivering alert notices through Apprise (e-mail, Teams, Slack, ntfy, webhooks, ...): the only module that
talks to the library.

Each destination is its own Apprise object, so the outcome is known per destination and recorded in the alert's
history with its secrets masked (``Apprise``'s privacy URL).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import apprise

log = logging.getLogger(__name__)


class BadNotifyUrl(ValueError):
    """A ``THERMOLOG_NOTIFY_URLS`` entry Apprise cannot use."""


@dataclass(frozen=True)
class Delivery:
    """Where a notice went (``delivered``) and where it could not (``failed``), as masked URLs."""

    delivered: list[str]
    failed: list[str]


def split_urls(text: str) -> list[str]:
    """The comma-separated entries of ``THERMOLOG_NOTIFY_URLS``, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _masked(url: str) -> str:
    # Scheme, host and path are enough to tell destinations apart in the history; query options are noise.
    return url.split("?", 1)[0][:256]


class Notifier:
    """Sends one title + body to every configured destination."""

    def __init__(self, urls: list[str]) -> None:
        self._targets: list[tuple[str, apprise.Apprise]] = []
        for index, url in enumerate(urls, 1):
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
            if plugin is None:
                scheme = url.split("://", 1)[0] if "://" in url else "(no scheme)"
                raise BadNotifyUrl(f"THERMOLOG_NOTIFY_URLS entry {index} ({scheme}://...) is not an Apprise URL "
                                   "Apprise can use: see https://github.com/caronc/apprise/wiki")
            target = apprise.Apprise()
            target.add(plugin)
            self._targets.append((_masked(plugin.url(privacy=True)), target))

    @property
    def destinations(self) -> list[str]:
        """The masked URLs, in configuration order."""
        return [name for name, _target in self._targets]

    def send(self, title: str, body: str) -> Delivery:
        """Notify every destination; never raises for a destination that fails (it is listed in ``failed``)."""
        delivered: list[str] = []
        failed: list[str] = []
        for name, target in self._targets:
            try:
                ok = bool(target.notify(title=title, body=body))
            except Exception:  # noqa: BLE001 - one broken destination must not stop the others
                log.exception("notifying %s failed", name)
                ok = False
            (delivered if ok else failed).append(name)
            if not ok:
                log.warning("alert notice not delivered to %s", name)
        return Delivery(delivered, failed)
