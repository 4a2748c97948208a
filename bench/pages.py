"""Page speed as a person waits for it: headless Chromium against ``thermolog app`` on a fleet-sized database.

N thermostats (``--size``, default 1,000) get 30 days of 60-second history, loaded through the ingest writer's
bulk path (``DuckDBSink.write``, rollups included); the first of them a whole year, for the 1-year chart. Then
``thermolog ingest`` and ``thermolog simulate`` (the same N device ids, one reading every 10 s each) run, so the
pages read a database that a live stream keeps flushing into, and ``thermolog app`` serves them.

Each page is loaded once to warm the app's caches and the browser's, then 5 times; the figure is the median time
from navigation (opening the page's address) until Streamlit reports the script run done and every Plotly chart
on the page is drawn. Target: every page <= 1.0 s. Two figures put it in context: the floor, the same measure for
a Streamlit page holding only a title (served the same way, same run), and moving between pages inside the app
(a click in the sidebar: the browser keeps the loaded app, the session and its connection). Sessions: 10 browser
tabs open History at once (3 rounds); target p95 <= 3 s, and the app's memory after they close within 10 % of
before. The same tabs on the floor page show what the browsers alone take on these cores, and the same History
loads over Streamlit's protocol without a browser what the server takes.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psutil

from app.launch import streamlit_command
from bench.common import Result, bench_env, free_port, private_mosquitto, running_ingest, wait_until

DAYS = 30
YEAR_DAYS = 365
INTERVAL_S = 60
LIVE_INTERVAL_S = 10
CHUNK_ROWS = 1_000_000
WARM_LOADS = int(os.environ.get("BENCH_PAGES_LOADS", "5"))
"""Loads per page (median); the tests set BENCH_PAGES_LOADS=1 to keep the benchmark working in minutes."""
TARGET_S = 1.0
SESSIONS = int(os.environ.get("BENCH_PAGES_SESSIONS", "10"))
SESSION_ROUNDS = int(os.environ.get("BENCH_PAGES_SESSION_ROUNDS", "3"))
SESSION_P95_S = 3.0
MEMORY_TOLERANCE = 0.10
LOAD_TIMEOUT_MS = 120_000
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

# Done: Streamlit's run is over (the app root says so), the page's title is drawn, no element still waits as a
# skeleton, and every Plotly chart has its SVG with a drawn trace layer.
READY_JS = """
(title) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.dataset.testScriptState !== 'notRunning') return false;
  const h1 = [...document.querySelectorAll('h1')].some(h => h.textContent.trim() === title);
  if (!h1 || document.querySelector('[data-testid="stSkeleton"]')) return false;
  for (const chart of document.querySelectorAll('[data-testid="stPlotlyChart"]')) {
    if (!chart.querySelector('.main-svg .cartesianlayer')) return false;
  }
  return true;
}
"""


class PageCase(NamedTuple):
    """One page to time: what the report calls it, its address and its title."""

    label: str
    path: str
    title: str


def device_ids(count: int) -> list[str]:
    """The ids ``thermolog simulate --devices count`` gives its devices, so history and live stream match."""
    from simulator.run import device_ids as simulated_ids

    return simulated_ids(count, "sim")


def cases(ids: list[str]) -> list[PageCase]:
    """Every page, History twice (1 device over 1 year, 10 devices over 30 days) through its link parameters."""
    ten = ",".join(ids[:10])
    return [
        PageCase("Live", "/", "Live"),
        PageCase("History, 1 device, 1 y", f"/history?devices={ids[0]}&range=1y", "History"),
        PageCase(f"History, {min(10, len(ids))} devices, 30 d", f"/history?devices={ten}&range=30d", "History"),
        PageCase("Control", "/control", "Control"),
        PageCase("Schedule", "/schedule", "Schedule"),
        PageCase("Insights", "/insights", "Insights"),
        PageCase("Export", "/export", "Export"),
        PageCase("Health", "/health", "Health"),
    ]


def _chunks(ids: list[str], end_s: int):  # noqa: ANN202 - generator of column dicts
    """Readings in time order, about CHUNK_ROWS at a time: a heater cycling around the target, with noise.

    The first device reports for a whole year (the one-year chart's device), the fleet for the last DAYS.
    """
    rng = np.random.default_rng(11)
    per_day = 86400 // INTERVAL_S
    ids_arr = np.array(ids, dtype=object)
    for devices, first, last in ((np.arange(1), -YEAR_DAYS * per_day, -DAYS * per_day),
                                 (np.arange(len(ids)), -DAYS * per_day, 0)):
        step_rows = max(1, CHUNK_ROWS // devices.size)
        for lo in range(first, last, step_rows):
            steps = np.arange(lo, min(lo + step_rows, last), dtype=np.int64)
            ts_s = np.repeat(end_s + steps * INTERVAL_S, devices.size)
            device = np.tile(devices, steps.size)
            cycle = ((ts_s + device * 137) % 2400) / 2400  # a 40-minute heating cycle, shifted per device
            heating = cycle < 0.45
            sawtooth = np.where(heating, cycle / 0.45, (1 - cycle) / 0.55)
            daily = np.cos(2 * np.pi * (ts_s % 86400) / 86400)
            temperature = 20 + sawtooth + 0.2 * daily + rng.normal(0, 0.05, ts_s.size)
            yield {"device_id": ids_arr[device].tolist(), "ts_s": ts_s, "temperature": temperature.round(2),
                   "humidity": (45 + 5 * daily).round(1), "heating": heating}


def load_history(db: Path, ids: list[str], end: datetime) -> tuple[float, int]:
    """The fleet's history through the writer's bulk path; returns seconds taken and rows written."""
    from ingest.parse import Batch
    from ingest.sinks.duckdb import DuckDBSink

    sink = DuckDBSink(db)
    started = time.perf_counter()
    rows = 0
    for chunk in _chunks(ids, int(end.timestamp())):
        ts_us = (chunk["ts_s"] * 1_000_000).tolist()
        batch = Batch()
        batch.telemetry.update(device_id=chunk["device_id"], ts=ts_us, temperature=chunk["temperature"].tolist(),
                               humidity=chunk["humidity"].tolist(), target_temp=[20.5] * len(ts_us),
                               heating=chunk["heating"].tolist(), received_at=ts_us)
        batch.records = len(ts_us)
        sink.write(batch, [])
        rows += len(ts_us)
    return time.perf_counter() - started, rows


def tree_rss(pid: int) -> int:
    """RSS of a process and its children (``thermolog app`` runs Streamlit as a child)."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes and their children, each process counted once
    (Chromium's processes are each other's children)."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs |= {proc.pid: proc for proc in (root, *root.children(recursive=True))}
        except psutil.NoSuchProcess:
            continue
    total = 0.0
    for proc in procs.values():
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def browser_pids() -> list[int]:
    """Chromium's processes started for this benchmark (children of Playwright's driver)."""
    return [p.pid for p in psutil.Process().children(recursive=True) if p.name().startswith("chrom")]


@contextmanager
def running(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A thermolog subcommand in its own process group, stopped (SIGINT, then SIGKILL) afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "thermolog.cli", *command], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_ready(page, title: str, started: float) -> float:  # noqa: ANN001 - a Playwright page
    """Seconds since ``started`` until the page is done (see READY_JS); a page not done within LOAD_TIMEOUT_MS
    counts as that long (and is reported), so one stuck load does not lose the run."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(READY_JS, arg=title, timeout=LOAD_TIMEOUT_MS, polling=10)
    except PlaywrightTimeout:
        print(f"   {title}: not done after {LOAD_TIMEOUT_MS / 1000:.0f} s", file=sys.stderr, flush=True)
        return LOAD_TIMEOUT_MS / 1000
    return time.perf_counter() - started


def time_load(page, url: str, title: str) -> float:  # noqa: ANN001 - a Playwright page
    """Seconds from navigation to the page being done (see READY_JS)."""
    started = time.perf_counter()
    page.goto(url, wait_until="commit", timeout=LOAD_TIMEOUT_MS)
    return wait_ready(page, title, started)


def warm_median(page, url: str, title: str) -> tuple[float, list[float]]:  # noqa: ANN001 - a Playwright page
    """Median (and all) of WARM_LOADS loads after one warm-up load (caches, the browser's static files)."""
    time_load(page, url, title)
    times = [time_load(page, url, title) for _ in range(WARM_LOADS)]
    return statistics.median(times), times


def time_pages(browser, base: str, ids: list[str], floor_s: float, app_pid: int) -> list[Result]:  # noqa: ANN001
    """Median of WARM_LOADS loads of each page after one warm-up load, with the CPU each side used per load."""
    results = []
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, timezone_id="UTC")
    page = context.new_page()
    for case in cases(ids):
        time_load(page, base + case.path, case.title)  # warm-up: caches, the browser's static files
        cpu_app, cpu_browser = tree_cpu([app_pid]), tree_cpu(browser_pids())
        times = [time_load(page, base + case.path, case.title) for _ in range(WARM_LOADS)]
        cpu_app, cpu_browser = tree_cpu([app_pid]) - cpu_app, tree_cpu(browser_pids()) - cpu_browser
        median = statistics.median(times)
        print(f"   {case.label}: {median:.2f} s", file=sys.stderr, flush=True)
        results.append(Result("pages", f"{case.label}: median of {WARM_LOADS} warm loads", median, "s",
                              f"<= {TARGET_S:.1f} s", median <= TARGET_S,
                              f"{median / floor_s:.1f}x the floor; CPU per load: app {cpu_app / WARM_LOADS:.2f} s, "
                              f"browser {cpu_browser / WARM_LOADS:.2f} s; min {min(times):.2f} s, "
                              f"max {max(times):.2f} s"))
    context.close()
    return results


def time_clicks(browser, base: str) -> list[Result]:  # noqa: ANN001 - a Playwright browser
    """Moving between pages in the sidebar: each page reached WARM_LOADS times from the one before it (after one
    warm-up round), median per page."""
    titles = ["Live", "History", "Control", "Schedule", "Insights", "Export", "Health"]
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, timezone_id="UTC")
    page = context.new_page()
    time_load(page, base + "/health", "Health")
    times: dict[str, list[float]] = {title: [] for title in titles}
    nav = page.get_by_test_id("stSidebarNav")
    for round_ in range(WARM_LOADS + 1):
        for title in titles:
            started = time.perf_counter()
            nav.get_by_role("link", name=re.compile(rf"{title}$")).click(timeout=LOAD_TIMEOUT_MS)
            took = wait_ready(page, title, started)
            if round_:
                times[title].append(took)
    context.close()
    return [Result("pages", f"{title} from the sidebar: median of {WARM_LOADS}", statistics.median(found), "s",
                   note="in-app navigation, default choices" + (" (4 thermostats, 24 h)" if title == "History" else ""))
            for title, found in times.items()]


FLOOR_SCRIPT = 'import streamlit as st\n\nst.title("Floor")\n'


@contextmanager
def serving_floor(tmp: Path) -> Iterator[tuple[str, int]]:
    """A Streamlit page holding only a title, served with the app's own flags: its address and process id."""
    script = tmp / "floor.py"
    script.write_text(FLOOR_SCRIPT)
    port = free_port()
    command = streamlit_command("127.0.0.1", port, entrypoint=script)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if not wait_until(lambda: _serving(f"http://127.0.0.1:{port}"), 60, 0.2):
            raise RuntimeError("the floor page's Streamlit did not start")
        yield f"http://127.0.0.1:{port}/", proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def time_floor(browser, url: str) -> float:  # noqa: ANN001 - a Playwright browser
    """Median warm load of the floor page: what any page costs here before its content."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, timezone_id="UTC")
    median, _ = warm_median(context.new_page(), url, "Floor")
    context.close()
    return median


def time_sessions(browser, base: str, ids: list[str], app_pid: int,  # noqa: ANN001 - a Playwright browser
                  floor: tuple[str, int]) -> list[Result]:
    """SESSIONS tabs (each its own browser profile) open History at once, SESSION_ROUNDS times; then they close.
    The same tabs on the floor page (``floor``: its address and process): what the browsers alone take on these
    cores. The same History loads over Streamlit's websocket protocol without a browser
    (``bench.stream_sessions``): what the server takes when the browsers run elsewhere. Memory is read before, at
    the peak and once the closed sessions are past Streamlit's reconnect window
    (``server.disconnectedSessionTTL``)."""
    from bench.stream_sessions import concurrent_loads
    from thermolog.settings import get_settings

    # The app started here reads the same environment (the tests shorten it); memory is read once it has passed.
    session_ttl_s = get_settings().app_session_ttl_s
    case = cases(ids)[2]
    url = base + case.path
    before = tree_rss(app_pid)
    browser_rows, peak = _browser_sessions(browser, url, case.title, app_pid)
    floor_rows, _ = _browser_sessions(browser, floor[0], "Floor", floor[1])
    cpu_app = tree_cpu([app_pid])
    loads = concurrent_loads(url, SESSIONS, SESSION_ROUNDS, LOAD_TIMEOUT_MS / 1000)
    cpu_app = (tree_cpu([app_pid]) - cpu_app) / len(loads)
    peak = max(peak, tree_rss(app_pid))
    times = [took for took, _ in loads]
    p95 = float(np.percentile(times, 95))
    print(f"   sessions without a browser: p95 {p95:.2f} s", file=sys.stderr, flush=True)
    wait_until(lambda: tree_rss(app_pid) <= before * (1 + MEMORY_TOLERANCE), session_ttl_s + 30, 1.0)
    after = tree_rss(app_pid)
    growth = (after - before) / before
    return [
        *browser_rows,
        *floor_rows,
        Result("sessions", f"{SESSIONS} concurrent History sessions, no browser: p95", p95, "s",
               f"<= {SESSION_P95_S:.0f} s", p95 <= SESSION_P95_S,
               f"Streamlit's websocket protocol until the script finished; {len(times)} loads in {SESSION_ROUNDS} "
               f"rounds; median {statistics.median(times):.2f} s; {loads[0][1] / 1024:,.0f} KiB per load"),
        Result("sessions", "CPU per History load, no browser: app", cpu_app, "s"),
        Result("sessions", "app RSS before the sessions", before / 2**20, "MiB"),
        Result("sessions", "app RSS at the peak", peak / 2**20, "MiB"),
        Result("sessions", "app RSS after they closed", after / 2**20, "MiB", f"within +{MEMORY_TOLERANCE:.0%}",
               growth <= MEMORY_TOLERANCE, f"{growth * 100:+.1f} % of before, read within "
               f"{session_ttl_s + 30} s of the last session's end (Streamlit keeps a closed session "
               f"{session_ttl_s} s for reconnects)"),
    ]


def _browser_sessions(browser, url: str, title: str, app_pid: int) -> tuple[list[Result], int]:  # noqa: ANN001
    """SESSIONS browser tabs load ``url`` (the page titled ``title``: History, or Floor for the floor page) at once,
    SESSION_ROUNDS times; the rows and the serving process's peak RSS."""
    what = "History" if title == "History" else "floor-page"
    contexts = [browser.new_context(viewport={"width": 1600, "height": 1000}, timezone_id="UTC")
                for _ in range(SESSIONS)]
    pages = [context.new_page() for context in contexts]
    times: list[float] = []
    peak = 0
    cpu_app, cpu_browser = tree_cpu([app_pid]), tree_cpu(browser_pids())
    for _ in range(SESSION_ROUNDS):
        started = time.perf_counter()
        for page in pages:  # start every navigation before waiting for any
            page.goto(url, wait_until="commit", timeout=LOAD_TIMEOUT_MS)
        times += [wait_ready(page, title, started) for page in pages]
        peak = max(peak, tree_rss(app_pid))
    cpu_app, cpu_browser = tree_cpu([app_pid]) - cpu_app, tree_cpu(browser_pids()) - cpu_browser
    for context in contexts:
        context.close()
    p95 = float(np.percentile(times, 95))
    print(f"   {what} sessions in Chromium: p95 {p95:.2f} s", file=sys.stderr, flush=True)
    late = f"{sum(t >= LOAD_TIMEOUT_MS / 1000 for t in times)} not done within {LOAD_TIMEOUT_MS / 1000:.0f} s"
    if title != "History":
        return [
            Result("sessions", f"{SESSIONS} concurrent floor-page sessions in Chromium: p95 page time", p95, "s",
                   note=f"a Streamlit page holding only a title, same tabs and cores: what the browsers alone "
                   f"take; median {statistics.median(times):.2f} s; {late}"),
            Result("sessions", "CPU per floor-page load in Chromium: browser", cpu_browser / len(times), "s"),
        ], peak
    return [
        Result("sessions", f"{SESSIONS} concurrent History sessions in Chromium: p95 page time", p95, "s",
               f"<= {SESSION_P95_S:.0f} s", p95 <= SESSION_P95_S,
               f"{len(times)} loads in {SESSION_ROUNDS} rounds; median {statistics.median(times):.2f} s; {late}"),
        Result("sessions", "CPU per History load in Chromium: app", cpu_app / len(times), "s",
               note="Streamlit process: session, script run, figures, websocket"),
        Result("sessions", "CPU per History load in Chromium: browser", cpu_browser / len(times), "s",
               note="Chromium, all processes: the page's JavaScript, layout and the charts' drawing"),
    ], peak


def run(thermostats: int = 1000) -> list[Result]:
    """Build the fleet database, start ingest, simulator and app, and time every page in Chromium."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"the pages benchmark needs Chromium at {CHROMIUM}: apt-get install chromium")
    ids = device_ids(thermostats)
    prefix = f"pages{uuid.uuid4().hex[:6]}"
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pages-")))
        port = stack.enter_context(private_mosquitto())
        db = tmp / "bench.duckdb"
        print(f"   loading {thermostats:,} thermostats x {DAYS} d of {INTERVAL_S} s readings ...", file=sys.stderr,
              flush=True)
        load_s, rows = load_history(db, ids, end)
        stack.enter_context(running_ingest(tmp, port, prefix))
        app_port = free_port()
        env = bench_env(tmp, port, prefix, THERMOLOG_APP_PORT=str(app_port), THERMOLOG_APP_HOST="127.0.0.1")
        stack.enter_context(running(["simulate", "--devices", str(thermostats), "--interval", str(LIVE_INTERVAL_S),
                                     "--shared-connection", "--params-out", str(tmp / "params.json")], env))
        app = stack.enter_context(running(["app"], env))
        base = f"http://127.0.0.1:{app_port}"
        if not wait_until(lambda: _serving(base), 60, 0.2):
            raise RuntimeError("thermolog app did not start")
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        stack.callback(browser.close)
        results = [Result("pages", "history loaded (writer bulk path, with rollups)", load_s, "s",
                          note=f"{rows:,} readings; {thermostats:,} thermostats x {DAYS} d + 1 y for {ids[0]}")]
        floor = stack.enter_context(serving_floor(tmp))
        floor_s = time_floor(browser, floor[0])
        results.append(Result("pages", f"floor: a page with only a title, median of {WARM_LOADS} warm loads", floor_s,
                              "s", note="the same Streamlit and browser, no app: what any page costs here"))
        results += time_pages(browser, base, ids, floor_s, app.pid)
        results += time_clicks(browser, base)
        results += time_sessions(browser, base, ids, app.pid, floor)
    return results


def _serving(base: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(base + "/_stcore/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
