"""Schedule page: viewers see the stored program, its next changes and who changed it; operators edit presets,
slots and overrides, and Save publishes the program (for ingest's audit) and the change points (for the device)
on the real Mosquitto."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from app.roles import ROLE_OPERATOR, ROLE_VIEWER, User
from tests.app_support import DEVICES, SignedInBrowser, app, recent_db, texts, use_db, visible
from tests.simulator.test_mode_schedule import retained
from tests.simulator.test_mqtt import Collector
from thermolog import contract

ENTRA = {"entra_client_id": "thermolog-test", "entra_tenant_id": "contoso-test"}
VIEWER = User(name="Victor Viewer", username="victor@example.com", roles=frozenset({ROLE_VIEWER}))
PROGRAM = {"timezone": "Europe/Berlin", "presets": {"comfort": 21.5, "eco": 17.0, "away": 14.0},
           "slots": [{"days": "daily", "at": "06:00", "preset": "comfort"},
                     {"days": "daily", "at": "22:00", "preset": "eco"}]}


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> SignedInBrowser:
    return SignedInBrowser(monkeypatch)


@pytest.fixture
def db(thermolog_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Recent readings and one stored program for the first device, as ingest stores it."""
    path = recent_db(Path(thermolog_env["THERMOLOG_DB_PATH"]))
    con = duckdb.connect(str(path))
    try:
        con.execute("INSERT INTO schedules VALUES (?, ?, 'req-1', 'alice@example.com', ?)",
                    [DEVICES[0], datetime.now(UTC) - timedelta(hours=1), json.dumps(PROGRAM)])
    finally:
        con.close()
    use_db(monkeypatch, path, display_timezone="Europe/Berlin", **ENTRA)
    return path


@pytest.fixture
def collector(thermolog_env: dict[str, str], system_broker: tuple[str, int]) -> Iterator[Collector]:
    c = Collector(thermolog_env["THERMOLOG_TOPIC_PREFIX"], *system_broker)
    yield c
    c.close()


def page(browser: SignedInBrowser, user: User, device: str):  # noqa: ANN201
    browser.sign_in(user)
    at = app("schedule")
    at.selectbox(key="schedule.device").set_value(device).run()
    return at


def test_viewer_sees_program_next_changes_and_history_but_cannot_edit(browser: SignedInBrowser, db: Path) -> None:
    at = page(browser, VIEWER, DEVICES[0])
    assert not at.exception
    captions = [visible(c) for c in texts(at.caption)]
    assert any("Set by alice@example.com" in c and "Europe/Berlin" in c for c in captions), captions
    upcoming = at.dataframe[0].value
    assert set(upcoming["why"]) == {"comfort", "eco"} and set(upcoming["target"]) == {"21.5 °C", "17.0 °C"}
    assert all(w.endswith(("06:00", "22:00")) for w in upcoming["when (Europe/Berlin)"])
    assert at.dataframe[1].value["who"].to_list() == ["alice@example.com"]
    assert not [b for b in at.button if b.key == "schedule.save"]
    assert any("Only operators can change schedules" in i for i in texts(at.info))


def test_operator_edits_presets_slots_and_boost_and_saves(browser: SignedInBrowser, db: Path,
                                                          collector: Collector, topic_prefix: str) -> None:
    """The saved program carries the edited preset, the slots typed and a boost; the retained change points start
    with the boost target."""
    user = User(name="Olivia", username=f"olivia-{uuid.uuid4().hex[:6]}@example.com",
                roles=frozenset({ROLE_OPERATOR}))
    at = page(browser, user, DEVICES[0])
    assert "[[slots]]" in at.text_area(key="schedule.program").value
    at.number_input(key="schedule.preset.comfort").set_value(22.5)
    at.text_area(key="schedule.program").set_value('[[slots]]\ndays = "mon-fri"\nat = "07:15"\npreset = "comfort"\n'
                                                   '\n[[slots]]\ndays = "daily"\nat = "23:00"\ntarget = 16.5\n')
    at.number_input(key="schedule.boost").set_value(24.0)
    at.number_input(key="schedule.boost_minutes").set_value(45)
    at.button(key="schedule.save").click().run()
    assert not at.exception, at.exception
    assert any("sent" in s for s in texts(at.success)), texts(at.error)
    change_topic = contract.topic(DEVICES[0], contract.SCHEDULE, topic_prefix)
    points_topic = contract.topic(DEVICES[0], contract.SCHEDULE_POINTS, topic_prefix)
    collector.wait_for(lambda ms: [m for m in ms if m.topic == points_topic])
    change = contract.parse_schedule(collector.on(change_topic)[0].payload)
    assert change.issued_by == user.username
    assert change.program["presets"]["comfort"] == 22.5 and change.program["timezone"] == "Europe/Berlin"
    assert change.program["slots"][0] == {"days": "mon-fri", "at": "07:15", "preset": "comfort"}
    assert change.program["overrides"][0]["target"] == 24.0 and change.program["overrides"][0]["minutes"] == 45
    kept = retained(points_topic)  # retained for a device that connects later
    subprocess.run(["mosquitto_pub", "-t", points_topic, "-n", "-r", "-q", "1"], check=True, timeout=10)
    assert kept is not None and contract.parse_points(kept).points[0][1] == 24.0


def test_invalid_slots_are_explained_and_nothing_is_sent(browser: SignedInBrowser, db: Path,
                                                         collector: Collector, topic_prefix: str) -> None:
    user = User(name="Olivia", username=f"olivia-{uuid.uuid4().hex[:6]}@example.com",
                roles=frozenset({ROLE_OPERATOR}))
    at = page(browser, user, DEVICES[1])
    assert any("No schedule yet" in i for i in texts(at.info))
    at.text_area(key="schedule.program").set_value('[[slots]]\ndays = "someday"\nat = "07:15"\ntarget = 20\n')
    at.button(key="schedule.save").click().run()
    assert any("Not saved" in visible(e) and "slots[0].days" in visible(e) for e in texts(at.error))
    at.text_area(key="schedule.program").set_value("[[slots]\n")
    at.button(key="schedule.save").click().run()
    assert any("not valid TOML" in e for e in texts(at.error))
    assert not [m for m in collector.messages if m.topic.startswith(f"{topic_prefix}/{DEVICES[1]}/schedule")]
