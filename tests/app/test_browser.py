"""The running system in a real browser: `thermolog demo` on the system Mosquitto, driven by headless Chromium.

One demo stack (simulated thermostats, ingest worker, dashboard) serves the whole module; sign-in goes through
the OIDC stand-in, so the pages are seen as a signed-in operator (and once as a viewer). Every page is saved to
docs/screenshots/<page>.png, which README shows (THERMOLOG_SCREENSHOT_DIR sends them elsewhere).
The tests run in file order: sign in, then page by page.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser_support import OPERATOR, VIEWER, chromium, entra_env, new_context, save_screenshot, sign_in
from tests.conftest import SYSTEM_BROKER, free_port
from tests.oidc_standin import OidcStandIn
from tests.waiting import wait_for_port, wait_until
from thermolog import queries, reader

pytestmark = [pytest.mark.browser, pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DEVICES = ["sim-01", "sim-02", "sim-03"]
CONTROLLED = "sim-02"
NEW_TARGET = 27.5  # outside the simulators' daily schedule, so only our command can set it
STACK_START_S = 120
UI_TIMEOUT_MS = 30_000

@dataclass
class Stack:
    """The running demo: where the dashboard is, where its database is, who signs people in."""

    url: str
    db_path: Path
    topic_prefix: str
    standin: OidcStandIn
    log_dir: Path


def db_rows(stack: Stack, sql: str, params: list[object] | None = None) -> list[tuple]:
    """Rows of a read-only query on the demo's database (between the ingest worker's flushes)."""
    with reader.read_connection(stack.db_path, retry_s=10) as con:
        return con.execute(sql, params or []).fetchall()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`thermolog demo` against the system Mosquitto with a private prefix, database and port; SIGINT at the end."""
    wait_for_port(*SYSTEM_BROKER, timeout=5)
    workdir = tmp_path_factory.mktemp("demo")
    standin = OidcStandIn(workdir).start()
    port = free_port()
    prefix = f"t{uuid.uuid4().hex[:12]}"
    db_path = workdir / "thermolog.duckdb"
    env = {
        **os.environ,
        "THERMOLOG_MQTT_URL": f"mqtt://{SYSTEM_BROKER[0]}:{SYSTEM_BROKER[1]}",
        "THERMOLOG_TOPIC_PREFIX": prefix,
        "THERMOLOG_DB_PATH": str(db_path),
        "THERMOLOG_JOURNAL_DIR": str(workdir / "journal"),
        "THERMOLOG_INGEST_CLIENT_ID": f"ingest-{prefix}",
        "THERMOLOG_APP_HOST": "127.0.0.1",
        "THERMOLOG_APP_PORT": str(port),
        "THERMOLOG_LIVE_REFRESH_S": "2",
        "PYTHONPATH": str(ROOT),
        **entra_env(standin, port),
    }
    log_dir = workdir / "logs"
    out = open(workdir / "demo.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "thermolog.cli", "demo", "--devices", str(len(DEVICES)), "--interval", "5",
         "--backfill", "4h", "--log-dir", str(log_dir)],
        env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    stack = Stack(f"http://127.0.0.1:{port}/", db_path, prefix, standin, log_dir)
    try:
        try:
            wait_for_port("127.0.0.1", port, timeout=STACK_START_S)
            wait_until(lambda: len(db_rows(
                stack, "SELECT DISTINCT device_id FROM telemetry WHERE ts > now() - INTERVAL 1 MINUTE")) == len(
                DEVICES), STACK_START_S, "readings from every simulated thermostat in DuckDB", interval=0.25,
                retry_on=(reader.DatabaseNotReady,))
        except BaseException:
            print(f"--- demo.log ---\n{tail(workdir / 'demo.log')}", file=sys.stderr)
            for part in sorted(log_dir.glob("*.log")):
                print(f"--- {part.name} ---\n{tail(part)}", file=sys.stderr)
            raise
        yield stack
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started (start_new_session)
            proc.wait()
        out.close()
        standin.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def operator(stack: Stack, browser: Browser) -> Page:
    """One tab signed in as an operator, kept for the whole module (a reload would start a new session)."""
    page = new_context(browser).new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    sign_in(page, stack.url, stack.standin, OPERATOR, screenshot="sign-in")
    return page


def open_page(page: Page, title: str) -> None:
    """Click the page in the sidebar navigation and wait for its title."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=re.compile(rf"{title}$")).click()
    page.get_by_role("heading", name=title, level=1).wait_for()


def settle(page: Page) -> None:
    """Before a screenshot: wait (at most a minute) for Streamlit to finish its run, so the picture is complete.

    Only the picture depends on this; what the tests check was already awaited. The Live and Health pages
    rerun every few seconds, so the indicator comes and goes; a busy machine may keep it past the minute.
    """
    try:
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                               timeout=60_000)
    except PlaywrightTimeout:
        warnings.warn("Streamlit was still running when the screenshot was taken", stacklevel=2)


# --- the pages ---------------------------------------------------------------------------------------------


def test_live_shows_the_simulated_thermostats(stack: Stack, operator: Page) -> None:
    page = operator
    open_page(page, "Live")
    for device in DEVICES:
        card = page.get_by_test_id("stColumn").filter(
            has=page.get_by_role("heading", name=device, exact=True))
        card.first.get_by_text("online").wait_for()
        card.first.get_by_text("Temperature").wait_for()
    assert page.get_by_test_id("stSidebar").get_by_text("Olivia Operator", exact=True).is_visible()
    settle(page)
    save_screenshot(page, "live")


def test_history_draws_a_chart(stack: Stack, operator: Page) -> None:
    page = operator
    open_page(page, "History")
    chart = page.get_by_test_id("stPlotlyChart").first
    chart.locator(".scatterlayer .trace path").first.wait_for(state="attached")
    # One temperature trace per chosen thermostat, each drawn with points along a path.
    paths = chart.locator(".scatterlayer .trace path.js-line")
    wait_until(lambda: paths.count() >= len(DEVICES), 20, "temperature lines in the chart")
    assert all(len(paths.nth(i).get_attribute("d") or "") > 100 for i in range(paths.count()))
    for device in DEVICES:
        assert chart.locator(".legend").get_by_text(device).count() >= 1
    settle(page)
    save_screenshot(page, "history")


def choose_thermostat(page: Page, device: str) -> None:
    """Pick ``device`` in the Control page's thermostat box."""
    box = page.get_by_role("combobox", name="Thermostat", exact=True)
    box.click()
    page.get_by_role("option", name=device, exact=True).click()
    expect(box).to_have_value(device)


def test_control_sends_a_setpoint_and_the_thermostat_follows(stack: Stack, operator: Page) -> None:
    page = operator
    open_page(page, "Control")
    choose_thermostat(page, CONTROLLED)
    sent_after = datetime.now(UTC) - timedelta(seconds=1)
    target = page.get_by_label(re.compile(r"^New target"))
    target.fill(f"{NEW_TARGET:g}")
    target.press("Enter")
    send = page.get_by_role("button", name="Send", exact=True)
    wait_until(send.is_enabled, 10, "the Send button to be enabled")
    send.click()
    page.get_by_text(f"{CONTROLLED} accepted the new target {NEW_TARGET:g} °C.").wait_for()
    # The ingest worker recorded the command with who sent it and the device's answer.
    command = wait_until(lambda: db_rows(
        stack, "SELECT issued_by, ok FROM commands WHERE device_id = ? AND target_temp = ? AND sent_at >= ?",
        [CONTROLLED, NEW_TARGET, sent_after]), 20, "the command in the audit table", interval=0.25,
        retry_on=(reader.DatabaseNotReady,))
    assert command == [(OPERATOR.preferred_username, True)]
    # The thermostat's own telemetry now carries the new target.
    wait_until(lambda: db_rows(
        stack, "SELECT ts FROM telemetry WHERE device_id = ? AND target_temp = ? AND ts >= ?",
        [CONTROLLED, NEW_TARGET, sent_after]), 30, "a reading with the new target", interval=0.25,
        retry_on=(reader.DatabaseNotReady,))
    # Coming back to the page shows the command in the audit below the form, and the outcome beside the device.
    open_page(page, "Live")
    open_page(page, "Control")
    choose_thermostat(page, CONTROLLED)
    page.get_by_text(f"{CONTROLLED} accepted the new target {NEW_TARGET:g} °C.").wait_for()
    audit = page.get_by_test_id("stDataFrame")
    # The grid is drawn on a canvas; its cells are also in an accessibility table that is not displayed.
    audit.get_by_role("gridcell", name=OPERATOR.preferred_username, include_hidden=True).first.wait_for(
        state="attached")
    settle(page)
    save_screenshot(page, "control")


MODE_DEVICE = "sim-03"


def test_control_switches_a_thermostat_off_and_on(stack: Stack, operator: Page) -> None:
    """Mode off from the Control page: the device confirms, its state and the audit say off; back to heat."""
    page = operator
    open_page(page, "Control")
    choose_thermostat(page, MODE_DEVICE)
    sent_after = datetime.now(UTC) - timedelta(seconds=1)
    for mode in ("off", "heat"):
        page.get_by_test_id("stButtonGroup").get_by_role("radio", name=mode, exact=True).click()
        page.get_by_role("button", name="Set mode", exact=True).click()
        page.get_by_text(f"{MODE_DEVICE} accepted mode {mode}.").wait_for()
        wait_until(lambda m=mode: db_rows(
            stack, "SELECT mode FROM device_state WHERE device_id = ? AND mode = ?", [MODE_DEVICE, m]), 20,
            f"the device's state in mode {mode}", interval=0.25, retry_on=(reader.DatabaseNotReady,))
    audited = wait_until(lambda: len(rows := db_rows(
        stack, "SELECT mode, ok, issued_by FROM commands WHERE device_id = ? AND mode IS NOT NULL AND sent_at >= ? "
        "AND ok IS NOT NULL ORDER BY sent_at", [MODE_DEVICE, sent_after])) == 2 and rows, 20,
        "both mode commands in the audit", interval=0.25,
        retry_on=(reader.DatabaseNotReady,))
    assert audited == [("off", True, OPERATOR.preferred_username), ("heat", True, OPERATOR.preferred_username)]


def test_schedule_edit_is_stored_with_who_and_sent_to_the_thermostat(stack: Stack, operator: Page) -> None:
    """The demo's thermostats start with the simulator's program; an operator changes the slots and boosts: the
    ingest worker stores the change with the operator's name and the thermostat takes the boost target."""
    page = operator
    open_page(page, "Schedule")
    box = page.get_by_role("combobox", name="Thermostat", exact=True)
    box.click()
    page.get_by_role("option", name=MODE_DEVICE, exact=True).click()
    page.get_by_text("Set by simulator").wait_for()
    changed_after = datetime.now(UTC) - timedelta(seconds=1)
    slots = page.get_by_label(re.compile(r"^Weekly slots"))
    slots.fill('[[slots]]\ndays = "weekdays"\nat = "06:45"\npreset = "comfort"\n\n'
               '[[slots]]\ndays = "daily"\nat = "23:00"\npreset = "eco"\n')
    boost = page.get_by_label(re.compile(r"^Boost to"))
    boost.fill("26")
    boost.press("Enter")
    page.get_by_role("button", name="Save schedule", exact=True).click()
    page.get_by_text(f"Schedule of {MODE_DEVICE} sent").wait_for()
    stored = wait_until(lambda: db_rows(
        stack, "SELECT issued_by, program FROM schedules WHERE device_id = ? AND changed_at >= ?",
        [MODE_DEVICE, changed_after]), 20, "the schedule change in DuckDB", interval=0.25,
        retry_on=(reader.DatabaseNotReady,))
    assert stored[0][0] == OPERATOR.preferred_username and '"06:45"' in stored[0][1]
    wait_until(lambda: db_rows(
        stack, "SELECT ts FROM telemetry WHERE device_id = ? AND target_temp = 26 AND ts >= ?",
        [MODE_DEVICE, changed_after]), 30, "a reading at the boost target", interval=0.25,
        retry_on=(reader.DatabaseNotReady,))
    settle(page)
    save_screenshot(page, "schedule")


def test_export_downloads_a_csv_equal_to_the_database(stack: Stack, operator: Page, tmp_path: Path) -> None:
    page = operator
    open_page(page, "Export")
    page.get_by_role("button", name="Prepare file").click()
    download_button = page.get_by_test_id("stDownloadButton").get_by_role("button")
    with page.expect_download() as waiting:
        download_button.click()
    download = waiting.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    days = re.fullmatch(r"thermolog-(\d{8})-(\d{8})\.csv", download.suggested_filename)
    assert days, download.suggested_filename
    start = datetime.strptime(days.group(1), "%Y%m%d").replace(tzinfo=UTC)  # display zone: UTC (default)
    end = datetime.strptime(days.group(2), "%Y%m%d").replace(tzinfo=UTC) + timedelta(days=1)

    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert rows and list(rows[0]) == list(queries.EXPORT_COLUMNS)
    assert {row["device_id"] for row in rows} == set(DEVICES)
    assert all(row["ts"].endswith("Z") for row in rows)
    # Readings keep arriving; per thermostat they arrive in order, so up to the newest reading in the file
    # the database must hold exactly the file's rows.
    for device in DEVICES:
        mine = [row for row in rows if row["device_id"] == device]
        newest = datetime.fromisoformat(mine[-1]["ts"].replace("Z", "+00:00"))
        expected = db_rows(stack, "SELECT device_id, ts, temperature, humidity, target_temp, heating FROM telemetry "
                           "WHERE device_id = ? AND ts >= ? AND ts < ? AND ts <= ? ORDER BY ts",
                           [device, start, end, newest])
        got = [(r["device_id"], datetime.fromisoformat(r["ts"].replace("Z", "+00:00")), float(r["temperature"]),
                float(r["humidity"]) if r["humidity"] else None, float(r["target_temp"]),
                r["heating"] == "true") for r in mine]
        assert len(got) == len(expected) > 100
        assert got == [(d, ts.astimezone(UTC), t, h, tt, bool(heat)) for d, ts, t, h, tt, heat in expected]
    settle(page)
    save_screenshot(page, "export")


def test_health_shows_ingest_and_the_rejected_message(stack: Stack, operator: Page) -> None:
    client = mqtt.Client(client_id=f"bad-{stack.topic_prefix}")
    client.connect(*SYSTEM_BROKER)
    client.loop_start()
    client.publish(f"{stack.topic_prefix}/sim-01/telemetry", b'{"temperature": "warm"}', qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    wait_until(lambda: db_rows(
        stack, "SELECT count(*) FROM rejected WHERE topic = ?", [f"{stack.topic_prefix}/sim-01/telemetry"])[0][0],
        20, "the rejected payload in DuckDB", interval=0.25, retry_on=(reader.DatabaseNotReady,))
    page = operator
    open_page(page, "Health")
    page.get_by_test_id("stMetric").filter(has_text="Ingest ↔ broker").get_by_text("connected").wait_for()
    page.get_by_role("heading", name="Rejected messages").wait_for()
    wait_until(lambda: page.get_by_text("Nothing rejected.").count() == 0
               and page.get_by_test_id("stDataFrame").count() >= 1, 20, "rejected messages listed")
    settle(page)
    save_screenshot(page, "health")


def test_insights_fits_the_thermal_models(stack: Stack, operator: Page) -> None:
    page = operator
    open_page(page, "Insights")
    page.get_by_role("heading", name="Constants").wait_for(timeout=60_000)
    # A few thermostats: a Markdown table with a column per thermostat (app.thermal.show_constants).
    constants = page.get_by_test_id("stMarkdown").locator("table").first
    for device in DEVICES:
        constants.get_by_role("columnheader", name=device, exact=True).wait_for()
    constants.get_by_role("cell", name="time constant (h)", exact=True).wait_for()
    settle(page)
    save_screenshot(page, "insights")


def test_a_viewer_sees_the_pages_but_cannot_send(stack: Stack, browser: Browser) -> None:
    page = new_context(browser).new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    sign_in(page, stack.url, stack.standin, VIEWER)
    open_page(page, "Control")
    page.get_by_text("Only operators can change setpoints").wait_for()
    assert page.get_by_role("button", name="Send", exact=True).count() == 0
    assert page.get_by_label(re.compile(r"^New target")).count() == 0
    page.context.close()
