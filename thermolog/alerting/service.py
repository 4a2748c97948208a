"""``thermolog automation``: evaluates the alert rules every ``THERMOLOG_ALERT_CHECK_INTERVAL_S``, sends a notice
when an alert starts and when it clears (cool-down and silences in ``tracker``) to ``THERMOLOG_NOTIFY_URLS``, and
records each start and clear with where it went as an alert event on MQTT, which the ingest worker stores.

It reads the database like the app does (read-only, between flushes) and never writes it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import duckdb
import paho.mqtt.client as mqtt

from thermolog.alerting import history
from thermolog.alerting.events import PUBLISH_TIMEOUT_S, new_event, publish
from thermolog.alerting.notify import BadNotifyUrl, Delivery, Notifier, split_urls
from thermolog.alerting.rules import current_alerts
from thermolog.alerting.tracker import Tracker, Transition
from thermolog.contract import ALERT_STARTED
from thermolog.lake_maintain import MaintenanceTimer
from thermolog.mqttclient import connect, make_client
from thermolog.reader import DatabaseNotReady
from thermolog.schedule_driver import ScheduleDriver
from thermolog.schedule_publish import refresh_schedules
from thermolog.settings import Settings, get_settings

DESCRIPTION = (
    "Evaluate the alert rules every THERMOLOG_ALERT_CHECK_INTERVAL_S, notify the Apprise URLs in "
    "THERMOLOG_NOTIFY_URLS when an alert starts and when it clears (with a cool-down of "
    "THERMOLOG_ALERT_COOLDOWN_MIN and the silences set on the Health page), and record the alert history through "
    "the broker for the ingest worker to store. Also re-sends the schedules' change points hourly and sends the "
    "setpoints at each change point to thermostats that cannot follow a schedule themselves."
)
CONNECT_RETRY_S = 5.0
SCHEDULE_REFRESH_S = 3600.0
"""How often the thermostats' schedule change points are re-sent (they cover 7 days)."""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``thermolog automation``."""
    parser.add_argument("--once", action="store_true", help="evaluate once, send and record, then exit")


def notice(transition: Transition, now: datetime) -> tuple[str, str]:
    """Title and body of the notice for a start or a clear."""
    rule = transition.rule.replace("_", " ")
    when = now.strftime("%Y-%m-%d %H:%M UTC")
    if transition.event == ALERT_STARTED:
        return (f"thermolog alert: {transition.device_id} {rule}",
                f"{transition.device_id}: {transition.message}. Started {when}.")
    return (f"thermolog cleared: {transition.device_id} {rule}",
            f"{transition.device_id}: {rule} cleared {when} (last seen: {transition.message}).")


class Automation:
    """One evaluation after another: rules, tracker, notices, history events."""

    def __init__(self, settings: Settings, notifier: Notifier, client: mqtt.Client) -> None:
        self.settings, self.notifier, self.client = settings, notifier, client
        self.tracker = Tracker(timedelta(minutes=settings.alert_cooldown_min))

    def restore(self) -> None:
        """Take over the episodes a previous run left open, so a restart does not announce them again."""
        try:
            for row in history.open_episodes(self.settings.db_path):
                self.tracker.restore((row["device_id"], row["rule"]), row["started_at"], row["message"] or "",
                                     bool(row["notified"]))
        except DatabaseNotReady:
            pass

    def tick(self, now: datetime | None = None) -> list[Transition]:
        """Evaluate once; returns what changed (empty when the database is not ready yet)."""
        now = now or datetime.now(UTC)
        try:
            alerts = current_alerts(self.settings, now, self.settings.db_path)
            silences = history.silences(now, self.settings.db_path)
        except DatabaseNotReady as exc:
            log.info("alerts not evaluated: %s", exc)
            return []
        transitions = self.tracker.update(alerts, now, silences)
        for transition in transitions:
            self._record(transition, now)
        return transitions

    def _record(self, transition: Transition, now: datetime) -> None:
        delivery, note = Delivery([], []), transition.note
        if transition.notify and self.notifier.destinations:
            delivery = self.notifier.send(*notice(transition, now))
            note = None if delivery.delivered else "every destination failed"
        elif transition.notify:
            note = "no destinations configured (THERMOLOG_NOTIFY_URLS)"
        log.info("alert %s %s for %s: %s; delivered to %s%s", transition.rule, transition.event,
                 transition.device_id, transition.message, ", ".join(delivery.delivered) or "nobody",
                 f" ({note})" if note else "")
        device, event = new_event(transition.device_id, transition.rule, transition.event,
                                  message=transition.message, delivered=delivery.delivered,
                                  failed=delivery.failed, note=note, now=now)
        info = publish(self.client, device, event, self.settings)
        try:  # paho keeps a QoS 1 message queued across reconnects; waiting only keeps the history in order
            info.wait_for_publish(PUBLISH_TIMEOUT_S)
        except (RuntimeError, ValueError) as exc:
            log.warning("alert event for %s queued, not yet published: %s", device, exc)


def _connect(settings: Settings, stop: threading.Event) -> mqtt.Client | None:
    client = make_client(f"thermolog-automation-{socket.gethostname()[:40]}", settings)
    while not stop.is_set():
        try:
            connect(client, settings)
            return client
        except ConnectionError as exc:
            log.warning("%s; retrying in %.0f s", exc, CONNECT_RETRY_S)
            stop.wait(CONNECT_RETRY_S)
    return None


def refresh_device_schedules(settings: Settings) -> None:
    """Re-send every stored schedule's change points (``thermolog.schedule_publish``); a failure waits for the
    next round (devices hold days of points)."""
    try:
        count = refresh_schedules(settings)
    except (DatabaseNotReady, duckdb.Error, OSError) as exc:
        log.warning("automation: schedules not refreshed: %s", exc)
        return
    log.info("automation: change points re-sent for %d scheduled thermostat(s)", count)


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM or Ctrl-C (or one evaluation with ``--once``)."""
    settings = get_settings()
    try:
        notifier = Notifier(split_urls(settings.notify_urls))
    except BadNotifyUrl as exc:
        log.error("%s", exc)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # finish the evaluation under way, then stop
        signal.signal(sig, lambda *_: stop.set())
    client = _connect(settings, stop)
    if client is None:
        return 0
    log.info("automation: alerts every %.0f s to %s", settings.alert_check_interval_s,
             ", ".join(notifier.destinations) or "no destinations (history only)")
    automation = Automation(settings, notifier, client)
    automation.restore()
    lake_timer = MaintenanceTimer(settings)  # does nothing without a lake
    next_refresh = 0.0
    schedules = ScheduleDriver(settings)
    driver = threading.Thread(target=schedules.run, args=(stop, settings.alert_check_interval_s),
                              name="schedule-driver", daemon=True)
    if args.once:
        schedules.tick()
    else:
        driver.start()
    try:
        while not stop.is_set():
            automation.tick()
            lake_timer.tick()
            if time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + SCHEDULE_REFRESH_S
                refresh_device_schedules(settings)
            if args.once or stop.wait(settings.alert_check_interval_s):
                break
    finally:
        stop.set()
        if driver.is_alive():
            driver.join(60)  # a setpoint under way gets its outcome (at most the command timeout)
        client.disconnect()  # paho sends the queued events first (QoS 1, in flight)
        client.loop_stop()
    return 0
