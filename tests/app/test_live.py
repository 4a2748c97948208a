"""Live page: a card per thermostat with its readings, stale and offline marks, edge hosts and alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from app import ui
from tests.app_support import DEVICES, STALE_DEVICE, YEAR_DEVICE, app, recent_db, texts, use_db, visible
from tests.telemetry_db import build_db, readings


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A database of recent readings, used by the app."""
    path = recent_db(tmp_path / "live.duckdb")
    use_db(monkeypatch, path, journal_dir=str(tmp_path / "journal"))
    return path


def last_reading(db: Path, device: str) -> tuple[float, float]:
    """Temperature and humidity of the device's newest row, read directly."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT temperature, humidity FROM telemetry WHERE device_id = ? ORDER BY ts DESC "
                           "LIMIT 1", [device]).fetchone()
    finally:
        con.close()


@pytest.mark.slow
def test_cards_show_every_thermostat_with_its_last_reading(db: Path) -> None:
    """One card per device with temperature, humidity and target as stored; no exception."""
    at = app()
    assert not at.exception
    assert set(texts(at.subheader)) >= {*DEVICES, STALE_DEVICE, YEAR_DEVICE, "Edge hosts"}
    metrics = [(m.label, m.value) for m in at.metric]
    temperature, humidity = last_reading(db, DEVICES[0])
    assert ("Temperature", f"{temperature:.1f} °C") in metrics
    assert ("Humidity", f"{humidity:.0f} %") in metrics
    assert ("Target", "21.0 °C") in metrics and ("Target", "19.0 °C") in metrics
    assert ("CPU", "12.5 %") in metrics and ("Memory", "40.0 %") in metrics and ("Disk", "7.5 %") in metrics


def test_units_switch_to_fahrenheit(db: Path) -> None:
    """Choosing °F converts every temperature shown."""
    at = app(session={ui.UNITS_KEY: ui.FAHRENHEIT})
    temperature, _ = last_reading(db, DEVICES[0])
    metrics = [(m.label, m.value) for m in at.metric]
    assert ("Temperature", f"{temperature * 9 / 5 + 32:.1f} °F") in metrics
    assert ("Target", "69.8 °F") in metrics


def test_stale_offline_device_is_marked_and_alerted(db: Path) -> None:
    """The silent device gets the stale warning, its offline badge and an offline alert."""
    at = app()
    warnings = texts(at.warning)
    assert any("values may be out of date" in w for w in warnings)
    assert any(w.startswith(f"**{STALE_DEVICE}**: offline for") for w in warnings)
    assert any(":red-badge[offline]" in m for m in texts(at.markdown))
    assert sum(":green-badge[online]" in m for m in texts(at.markdown)) == 2


def test_device_without_status_is_online_or_offline_by_its_readings(db: Path) -> None:
    """A device that sends no status (the original firmware, no last will) shows offline once stale, saying the
    readings decided; devices with a status keep theirs."""
    at = app("live")
    assert not at.exception
    markdown = texts(at.markdown)
    assert any(":red-badge[offline (from readings)]" in m for m in markdown)  # the year-long device, now silent
    assert not any("status unknown" in m for m in markdown)


def test_friendly_name_is_shown_with_the_device(db: Path) -> None:
    """A Zigbee2MQTT device's friendly name (kept in `devices.name`) is shown under its derived id, as text."""
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO devices VALUES (?, 'zigbee2mqtt', 'Living room/*Radiator*', 'x', NULL, now(), now())",
                [DEVICES[0]])
    con.close()
    at = app("live")
    assert not at.exception
    names = [c for c in texts(at.caption) if "Radiator" in c]
    assert [visible(c) for c in names] == ["Living room/*Radiator*"]  # escaped: shown literally, not in italics


def test_last_seen_in_the_chosen_time_zone(db: Path) -> None:
    """Times are shown in the display zone picked in the sidebar."""
    at = app(session={ui.TZ_KEY: "Asia/Tokyo"})
    assert any("last seen" in c and "JST" in c for c in texts(at.caption))


def test_missing_database_says_to_start_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a database the page says what to start instead of failing."""
    use_db(monkeypatch, tmp_path / "absent.duckdb")
    at = app()
    assert not at.exception
    assert any("thermolog ingest" in e for e in texts(at.error))


def test_a_fleet_shows_a_filter_and_at_most_24_cards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forty thermostats: 24 cards and a filter; filtering narrows the cards to the matching ids."""
    now = datetime.now(UTC)
    fleet = [readings(f"flat-{i:02d}", now - timedelta(minutes=10), 20, 30) for i in range(40)]
    use_db(monkeypatch, build_db(tmp_path / "fleet.duckdb", fleet))
    at = app()
    assert not at.exception
    cards = [s for s in texts(at.subheader) if s.startswith("flat-")]
    assert len(cards) == 24 and any("40 of 40 thermostats match; showing the first 24" in c for c in texts(at.caption))
    at.text_input(key="live.filter").set_value("flat-3").run()
    assert [s for s in texts(at.subheader) if s.startswith("flat-")] == [f"flat-3{i}" for i in range(10)]


def _many_alerts() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path.cwd()))
    from app import ui
    from thermolog.alerting.rules import Alert

    ui.show_alerts([Alert(f"dev-{i}", "silent", "no reading for 3 h") for i in range(40)])


def test_many_alerts_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forty alerts: the first thirty are listed, then how many more there are."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    at = AppTest.from_function(_many_alerts).run()
    assert not at.exception
    assert len(at.warning) == 30 and texts(at.caption) == ["… and 10 more."]


def test_card_shows_the_next_scheduled_change(db: Path) -> None:
    """A device with a stored program shows its next change on its card; the others do not."""
    program = {"timezone": "UTC", "slots": [{"days": "daily", "at": "00:00", "target": 20.0},
                                            {"days": "daily", "at": "12:00", "preset": "eco"}]}
    con = duckdb.connect(str(db))
    try:
        con.execute("INSERT INTO schedules VALUES (?, now(), 'r1', 'alice', ?)", [DEVICES[0], json.dumps(program)])
    finally:
        con.close()
    at = app("live")
    assert not at.exception
    nexts = [c for c in texts(at.caption) if c.startswith("Next: ")]
    expected = "→ 18.0 °C (eco)" if datetime.now(UTC).hour < 12 else "→ 20.0 °C (program)"
    assert len(nexts) == 1 and nexts[0].endswith(expected), nexts
