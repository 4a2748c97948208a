"""Alert rules fire for the devices that break them, and only for those."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from tests.telemetry_db import T0, build_db
from thermolog.alerting import rules as alerts
from thermolog.settings import Settings

NOW = T0 + timedelta(hours=2)
SETTINGS = Settings(alert_offline_min=10, alert_temp_low_c=10, alert_temp_high_c=30, alert_heating_no_rise_min=30,
                    alert_heating_min_rise_c=0.2)


def series(device_id: str, minutes: int, start_temp: float, slope_per_min: float, heating: bool,
           ends_ago_min: float = 0.5, noise: float = 0.05) -> pl.DataFrame:
    """Readings every 30 s for ``minutes``, ending ``ends_ago_min`` before NOW, with a linear trend and noise."""
    rng = random.Random(device_id)
    count = minutes * 2
    first = NOW - timedelta(minutes=ends_ago_min) - timedelta(seconds=30 * (count - 1))
    ts = [first + timedelta(seconds=30 * i) for i in range(count)]
    temps = [start_temp + slope_per_min * i / 2 + rng.uniform(-noise, noise) for i in range(count)]
    return pl.DataFrame({"device_id": device_id, "ts": ts, "temperature": temps, "humidity": 45.0,
                         "target_temp": 21.0, "heating": heating, "received_at": ts})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """One device per rule, plus devices that must not alert."""
    return build_db(
        tmp_path / "a.duckdb",
        [
            series("fine", 60, 21.0, 0.0, False),
            series("cold", 60, 8.0, 0.0, False),
            series("hot", 60, 32.0, 0.0, False),
            series("gone", 60, 21.0, 0.0, False, ends_ago_min=31),
            series("quiet", 60, 21.0, 0.0, False, ends_ago_min=20),
            series("stuck", 45, 18.0, 0.0, True),
            series("warming", 45, 18.0, 0.05, True),
            series("fresh", 5, 18.0, 0.0, True),
        ],
        status=[("gone", NOW - timedelta(minutes=30), "offline"), ("quiet", T0, "online"),
                ("fine", T0, "online"), ("blip", NOW - timedelta(minutes=2), "offline")],
    )


def test_each_rule_fires_for_its_device_only(db: Path) -> None:
    """offline > N min, silent > N min, below/above the band, heating ON without a rise over the window."""
    found = {(a.device_id, a.rule) for a in alerts.current_alerts(SETTINGS, NOW, db)}
    assert found == {
        ("cold", alerts.RULE_TEMP_LOW),
        ("hot", alerts.RULE_TEMP_HIGH),
        ("gone", alerts.RULE_OFFLINE),
        ("quiet", alerts.RULE_SILENT),
        ("stuck", alerts.RULE_HEATING_NO_RISE),
        ("blip", alerts.RULE_SILENT),  # never sent a reading; offline only 2 min, below the offline threshold
    }


def test_messages_use_the_given_unit(db: Path) -> None:
    """Temperatures in messages are formatted by the caller, e.g. in °F."""
    found = alerts.current_alerts(SETTINGS, NOW, db, temp=lambda c: f"{c * 9 / 5 + 32:.1f} °F")
    cold = next(a for a in found if a.rule == alerts.RULE_TEMP_LOW)
    assert "below 50.0 °F" in cold.message


def test_thresholds_come_from_settings(db: Path) -> None:
    """A wider band and a longer offline limit silence those alerts."""
    relaxed = SETTINGS.model_copy(update={"alert_temp_low_c": 5.0, "alert_temp_high_c": 35.0,
                                          "alert_offline_min": 60.0})
    rules = {(a.device_id, a.rule) for a in alerts.current_alerts(relaxed, NOW, db)}
    assert rules == {("stuck", alerts.RULE_HEATING_NO_RISE), ("blip", alerts.RULE_SILENT)}
