"""Live page: a card per thermostat with its readings, stale and offline marks, edge hosts and alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from app import ui
from app.plain_text import plain
from ingest.parse import Batch
from ingest.sinks.duckdb import DuckDBSink
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


def test_units_and_time_zone_are_chosen_in_a_sidebar_popover_named_after_them(db: Path) -> None:
    """The sidebar's preferences button shows the current unit and zone; its widgets change what the page shows
    and the button's name."""
    at = app()
    (popover,) = at.sidebar.get("popover")
    assert popover.proto.popover.label == "°C · UTC"
    popover.radio(key=ui.UNITS_KEY).set_value(ui.FAHRENHEIT)
    popover.selectbox(key=ui.TZ_KEY).set_value("Asia/Tokyo")
    at.run()
    assert at.sidebar.get("popover")[0].proto.popover.label == "°F · Asia/Tokyo"
    assert ("Target", "69.8 °F") in [(m.label, m.value) for m in at.metric]
    assert any("last seen" in c and "JST" in c for c in texts(at.caption))


def test_missing_database_says_to_start_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a database the page says what to start instead of failing."""
    use_db(monkeypatch, tmp_path / "absent.duckdb")
    at = app()
    assert not at.exception
    assert any("thermolog ingest" in e for e in texts(at.error))


def test_a_fleet_is_one_table_with_search_and_sorting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forty thermostats: no cards, one table of all forty; search narrows it, sorting puts the problems (an
    offline one, then the farthest from target) first."""
    now = datetime.now(UTC)
    fleet = [readings(f"flat-{i:02d}", now - timedelta(minutes=10), 20, 30, target=20.0, base=20.0 + i / 100)
             for i in range(40)]
    fleet.append(readings("flat-cold", now - timedelta(minutes=10), 20, 30, target=22.0, base=17.0))
    path = build_db(tmp_path / "fleet.duckdb", fleet, status=[("flat-07", now - timedelta(minutes=1), "offline")])
    use_db(monkeypatch, path)
    at = app()
    assert not at.exception
    assert not [s for s in texts(at.subheader) if s.startswith("flat-")]
    table = at.dataframe[0].value
    assert len(table) == 41
    assert list(table["device"][:2]) == ["flat-07", "flat-cold"]  # offline first, then the largest deviation
    assert table["status"].iloc[0] == "offline"
    metrics = dict((m.label, m.value) for m in at.metric)
    assert metrics["Thermostats"] == "41" and metrics["Offline"] == "1"
    at.selectbox(key="live.sort").set_value("deviation from target").run()
    table = at.dataframe[0].value
    assert table["device"].iloc[0] == "flat-cold"
    assert (table["deviation (°C)"].abs().diff().dropna() <= 0).all()
    at.text_input(key="live.filter").set_value("flat-3").run()
    assert sorted(at.dataframe[0].value["device"]) == [f"flat-3{i}" for i in range(10)]
    assert any("10 of 41 thermostats match" in c for c in texts(at.caption))


def _many_alerts() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path.cwd()))
    from app import ui
    from thermolog.alerting.rules import Alert

    found = [Alert(f"dev-{i}", "silent", "no reading for 3 h") for i in range(500)]
    found += [Alert(f"hot-{i}", "temperature_high", "temperature 31.0 °C is above 30.0 °C") for i in range(2)]
    ui.show_alerts(found)


def test_many_devices_with_the_same_alert_get_one_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """500 silent devices: one summary box naming a few of them and the count; a rule firing for two devices
    lists both; every alert is in the table underneath."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    at = AppTest.from_function(_many_alerts).run()
    assert not at.exception
    warnings = texts(at.warning)
    assert len(warnings) == 3
    assert warnings[0].startswith("**500 thermostats** silent for more than")
    assert f"{plain('dev-0')}, {plain('dev-1')}" in warnings[0] and warnings[0].endswith("and 492 more")
    hot = plain("temperature 31.0 °C is above 30.0 °C")
    assert warnings[1:] == [f"**{plain('hot-0')}**: {hot}", f"**{plain('hot-1')}**: {hot}"]
    assert len(at.dataframe[0].value) == 502


def test_cached_state_follows_the_next_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached live state is reused while nothing is written and replaced as soon as the writer commits."""
    now = datetime.now(UTC).replace(microsecond=0)
    path = build_db(tmp_path / "flush.duckdb", [readings("solo", now - timedelta(minutes=5), 10, 30)])
    use_db(monkeypatch, path)
    reads = []
    query = ui.queries.latest_state
    monkeypatch.setattr(ui.queries, "latest_state", lambda db: reads.append(db) or query(db))
    ui.latest_state(str(path))
    ui.latest_state(str(path))
    assert len(reads) == 1  # nothing flushed: the cached frame
    version = ui.data_version(str(path))
    batch = Batch()  # one flush through the ingest writer
    stamp = int(now.timestamp() * 1_000_000)
    batch.telemetry.update(device_id=["solo"], ts=[stamp], temperature=[30.5], humidity=[40.0], target_temp=[21.0],
                           heating=[False], received_at=[stamp])
    batch.records = 1
    DuckDBSink(path).write(batch, [])
    assert ui.data_version(str(path)) != version
    assert ui.latest_state(str(path))["temperature"].to_list() == [30.5]
    assert len(reads) == 2


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
