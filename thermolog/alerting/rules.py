"""Alert rules (thresholds in settings): offline or silent too long, temperature outside a band, heating without
the temperature rising. Shown on the Live and Health pages and delivered by ``thermolog automation``.

:func:`evaluate` is pure (frames in, alerts out) so the rules are tested without a database;
:func:`current_alerts` feeds it from the query functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from thermolog import queries
from thermolog.contract import STATUS_OFFLINE
from thermolog.settings import Settings, get_settings

RULE_OFFLINE = "offline"
RULE_SILENT = "silent"
RULE_TEMP_LOW = "temperature_low"
RULE_TEMP_HIGH = "temperature_high"
RULE_HEATING_NO_RISE = "heating_no_rise"

COVERAGE = 0.9
"""The heating rule needs readings spanning at least this share of its window, so a fresh start never fires it."""


@dataclass(frozen=True)
class Alert:
    """One rule that fires for one device; ``message`` says what is wrong in words."""

    device_id: str
    rule: str
    message: str


def _celsius(value: float) -> str:
    return f"{value:.1f} °C"


def _minutes(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    if minutes >= 2 * 24 * 60:
        return f"{minutes / (24 * 60):.0f} d"
    if minutes >= 120:
        return f"{minutes / 60:.0f} h"
    return f"{minutes:.0f} min"


def evaluate(latest: pl.DataFrame, heating: pl.DataFrame, now: datetime, settings: Settings | None = None,
             temp: Callable[[float], str] = _celsius) -> list[Alert]:
    """Alerts from ``queries.latest_state`` and ``queries.heating_window`` frames at time ``now`` (UTC).

    ``temp`` formats temperatures (°C) for the messages, so the app can speak °F.
    """
    settings = settings or get_settings()
    offline_after = timedelta(minutes=settings.alert_offline_min)
    alerts: list[Alert] = []
    for row in latest.iter_rows(named=True):
        device = row["device_id"]
        last_seen = row["last_seen"]
        if row["status"] == STATUS_OFFLINE and row["status_ts"] is not None \
                and now - row["status_ts"] > offline_after:
            alerts.append(Alert(device, RULE_OFFLINE, f"offline for {_minutes(now - row['status_ts'])}"))
        elif last_seen is None:
            alerts.append(Alert(device, RULE_SILENT, "no readings received yet"))
        elif now - last_seen > offline_after:
            alerts.append(Alert(device, RULE_SILENT, f"no reading for {_minutes(now - last_seen)}"))
        value = row["temperature"]
        if value is not None and value < settings.alert_temp_low_c:
            alerts.append(Alert(device, RULE_TEMP_LOW,
                                f"temperature {temp(value)} is below {temp(settings.alert_temp_low_c)}"))
        if value is not None and value > settings.alert_temp_high_c:
            alerts.append(Alert(device, RULE_TEMP_HIGH,
                                f"temperature {temp(value)} is above {temp(settings.alert_temp_high_c)}"))
    window = timedelta(minutes=settings.alert_heating_no_rise_min)
    for row in heating.iter_rows(named=True):
        if not row["all_on"] or row["slope_c_per_min"] is None:
            continue
        if row["last_ts"] - row["first_ts"] < window * COVERAGE:
            continue
        rise = row["slope_c_per_min"] * settings.alert_heating_no_rise_min
        if rise < settings.alert_heating_min_rise_c:
            alerts.append(Alert(row["device_id"], RULE_HEATING_NO_RISE,
                                f"heating ON for {_minutes(window)} but the temperature changed by {rise:+.2f} °C: "
                                "check the heater, the relay and open windows"))
    return alerts


def current_alerts(settings: Settings | None = None, now: datetime | None = None,
                   db_path: Path | str | None = None,
                   temp: Callable[[float], str] = _celsius) -> list[Alert]:
    """Evaluate every rule against the database now."""
    settings = settings or get_settings()
    latest = queries.latest_state(db_path)
    heating = queries.heating_window(settings.alert_heating_no_rise_min, db_path)
    return evaluate(latest, heating, now or datetime.now(UTC), settings, temp)
