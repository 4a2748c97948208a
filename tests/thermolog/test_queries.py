"""Query functions read what the database holds, downsample within the point budget and take ids as parameters."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tests.telemetry_db import T0, build_db, readings
from thermolog import queries
from thermolog.reader import DatabaseNotReady
from thermolog.settings import get_settings

YEAR = timedelta(days=365)
HOSTILE_IDS = ("x' OR '1'='1", "a'); DROP TABLE telemetry; --", "dev-a' --", '"; SELECT 1; --', "%", "dev-%")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two devices with a day of 30 s readings, one with a year of 10-minute readings, plus side tables."""
    path = tmp_path_factory.mktemp("q") / "q.duckdb"
    return build_db(
        path,
        [
            readings("dev-a", T0, 2880, 30),
            readings("dev-b", T0, 2880, 30, target=19.0, base=19.5),
            readings("year", T0, 365 * 144, 600, period_s=86400),
            readings("it's-quoted", T0, 10, 60),
        ],
        status=[("dev-a", T0, "online"), ("dev-a", T0 + timedelta(hours=5), "offline"),
                ("dev-b", T0, "online"), ("ghost", T0, "online")],
        state=[("dev-a", T0 + timedelta(hours=1), 22.5)],
        system=[("edge-1", T0, 1.0, 2.0, 3.0), ("edge-1", T0 + timedelta(minutes=1), 4.0, 5.0, 6.0)],
        commands=[
            ("r-ok", "dev-a", T0, "alice", 21.5, T0 + timedelta(seconds=1), True, None, "mqtt"),
            ("r-no", "dev-a", T0 + timedelta(seconds=5), "bob", 22.0, T0 + timedelta(seconds=6), False,
             "locked", "mqtt"),
            ("r-lost", "dev-b", T0 + timedelta(seconds=9), "carol", 20.0, None, None, None, "mqtt"),
            ("r-new", "dev-b", datetime.now(UTC), "dave", 20.5, None, None, None, "mqtt"),
        ],
        rejected=[(T0, "thermostats/x/telemetry", "not JSON", b"\xff\xfe{oops"),
                  (T0 + timedelta(seconds=1), "thermostats/y/telemetry", "NaN", b'{"temperature": NaN}')],
    )


def raw(db: Path, sql: str, params: list | None = None) -> pl.DataFrame:
    """A direct query, for comparing against the query functions."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.sql(sql, params=params or []).pl()
    finally:
        con.close()


def test_latest_state_has_last_reading_newest_status_and_state_target(db: Path) -> None:
    """Each device's newest reading, its newest status and the retained target; status-only devices appear too."""
    state = {row["device_id"]: row for row in queries.latest_state(db).to_dicts()}
    last = raw(db, "SELECT * FROM telemetry WHERE device_id = 'dev-a' ORDER BY ts DESC LIMIT 1").row(0, named=True)
    a = state["dev-a"]
    assert a["last_seen"] == last["ts"]
    assert (a["temperature"], a["humidity"], a["heating"]) == (last["temperature"], last["humidity"], last["heating"])
    assert a["status"] == "offline" and a["target_temp"] == 22.5 and a["reading_target"] == 21.0
    assert state["dev-b"]["status"] == "online" and state["dev-b"]["target_temp"] == 19.0
    assert state["ghost"]["last_seen"] is None and state["ghost"]["status"] == "online"
    assert set(state) == {"dev-a", "dev-b", "year", "it's-quoted", "ghost"}


@pytest.mark.parametrize("span", [timedelta(hours=1), timedelta(hours=24), timedelta(days=7),
                                  timedelta(days=30), YEAR])
def test_history_never_exceeds_max_points_and_keeps_every_reading(db: Path, span: timedelta) -> None:
    """Whatever the range: at most max_points buckets per series, all readings counted once, extremes kept."""
    devices = ["dev-a", "dev-b", "year"]
    frame = queries.history(devices, T0, T0 + span, max_points=2000, db_path=db)
    per_device = frame.group_by("device_id").len()
    assert per_device["len"].max() <= 2000
    truth = raw(db, "SELECT device_id, count(*) AS n, min(temperature) AS lo, max(temperature) AS hi FROM telemetry "
                    "WHERE device_id IN ('dev-a', 'dev-b', 'year') AND ts >= ? AND ts < ? GROUP BY ALL",
                [T0, T0 + span])
    got = frame.group_by("device_id").agg(pl.col("n").sum(), pl.col("temp_min").min().alias("lo"),
                                          pl.col("temp_max").max().alias("hi"))
    assert got.sort("device_id").to_dicts() == truth.sort("device_id").to_dicts()


def test_one_year_reads_the_hourly_rollup(db: Path) -> None:
    """A one-year range is answered from telemetry_1h, with averages equal to the raw average."""
    assert queries.choose_resolution(T0, T0 + YEAR).source == queries.SOURCE_1H
    frame = queries.history(["year"], T0, T0 + YEAR, db_path=db)
    assert get_settings().max_chart_points / 2 < frame.height <= get_settings().max_chart_points
    weighted = (frame["temp_avg"] * frame["n"]).sum() / frame["n"].sum()
    truth = raw(db, "SELECT avg(temperature) AS a FROM telemetry WHERE device_id = 'year'")["a"][0]
    assert math.isclose(weighted, truth, rel_tol=1e-9)


RAW_BUCKETS = """
    SELECT device_id, min(epoch_ms(ts)) AS t_ms, count(*) AS n,
           min(temperature) AS temp_min, avg(temperature) AS temp_avg, max(temperature) AS temp_max,
           min(humidity) AS hum_min, avg(humidity) AS hum_avg, max(humidity) AS hum_max,
           min(target_temp) AS target_min, avg(target_temp) AS target_avg, max(target_temp) AS target_max,
           avg(heating::DOUBLE) AS heating
    FROM telemetry WHERE device_id IN ('dev-a', 'dev-b', 'year') AND ts >= ? AND ts < ?
    GROUP BY device_id, epoch_ms(ts) // ? ORDER BY device_id, t_ms"""


@pytest.mark.parametrize(("start", "span", "source", "width_ms"), [
    (T0, timedelta(hours=24), queries.SOURCE_1M, queries.MINUTE_MS),
    (T0 + timedelta(days=60), timedelta(days=30), queries.SOURCE_1H, queries.HOUR_MS),
])
def test_day_and_month_charts_are_the_rollup_rows_themselves(db: Path, start: datetime, span: timedelta,
                                                              source: str, width_ms: int) -> None:
    """24 h is drawn from the minute rollup and 30 d from the hourly one, a stored row per point: every bucket
    equals the aggregates of its raw readings, sorted by device and time."""
    res = queries.choose_resolution(start, start + span, 2000)
    assert (res.source, res.bucket_ms) == (source, width_ms)
    frame = queries.history(["year", "dev-b", "dev-a"], start, start + span, max_points=2000, db_path=db)
    truth = raw(db, RAW_BUCKETS, [start, start + span, width_ms])
    assert frame.height == truth.height > 0
    assert_frame_equal(frame, truth, rel_tol=1e-12)


def test_short_range_returns_the_readings_themselves(db: Path) -> None:
    """When the range fits the budget each bucket is one reading at its own time."""
    frame = queries.history(["dev-a"], T0, T0 + timedelta(minutes=10), db_path=db)
    truth = raw(db, "SELECT epoch_ms(ts) AS t_ms, temperature FROM telemetry WHERE device_id = 'dev-a' "
                    "AND ts < ? ORDER BY ts", [T0 + timedelta(minutes=10)])
    assert frame["n"].to_list() == [1] * 20
    assert frame.select("t_ms", pl.col("temp_avg").alias("temperature")).equals(truth)


@given(start_s=st.integers(0, 2_000_000_000), span_ms=st.integers(1, 20 * 365 * 86_400_000),
       points=st.integers(10, 20_000))
def test_resolution_bucket_count_is_within_budget(start_s: int, span_ms: int, points: int) -> None:
    """Epoch-aligned buckets touching any [start, end) never outnumber max_points, nor fall below a quarter of it."""
    start = datetime.fromtimestamp(start_s, UTC)
    end = start + timedelta(milliseconds=span_ms)
    res = queries.choose_resolution(start, end, points)
    first = int(start.timestamp() * 1000) // res.bucket_ms
    last = (int(end.timestamp() * 1000) - 1) // res.bucket_ms
    assert last - first + 1 <= points
    # Not coarser than a quarter of the budget, unless buckets would be narrower than the raw minimum.
    assert 4 * (last - first + 1) >= points or res.bucket_ms == queries.MIN_RAW_BUCKET_MS


def test_stats_are_time_weighted_duty_cycle_and_time_below_target(db: Path) -> None:
    """Duty cycle and time below target weigh each reading by the time until the next one."""
    end = T0 + timedelta(hours=6)
    row = queries.stats(["dev-a"], T0, end, exact=True, db_path=db).row(0, named=True)
    frame = raw(db, "SELECT ts, temperature, target_temp, heating FROM telemetry WHERE device_id = 'dev-a' "
                    "AND ts < ? ORDER BY ts", [end])
    ts = frame["ts"].to_list()
    durations = [(b - a).total_seconds() for a, b in zip(ts, ts[1:], strict=False)] + [0.0]
    on = sum(d for d, h in zip(durations, frame["heating"], strict=True) if h)
    below = sum(d for d, t, g in zip(durations, frame["temperature"], frame["target_temp"], strict=True) if t < g)
    assert row["n"] == frame.height
    assert math.isclose(row["duty_pct"], 100 * on / sum(durations))
    assert row["below_target_s"] == below
    assert (row["temp_min"], row["temp_max"]) == (frame["temperature"].min(), frame["temperature"].max())


def test_rollup_stats_window_is_whole_minutes_and_reads_the_same_buckets(db: Path) -> None:
    """A range the 1-minute rollup answers widens to whole minutes, the same for every end within a minute, with
    the same statistics; a range read from the raw readings stays as it is."""
    start, end = T0 + timedelta(seconds=20), T0 + timedelta(days=2, seconds=30)
    window = queries.stats_window(start, end)
    assert window == (T0, T0 + timedelta(days=2, minutes=1))
    for later in (timedelta(seconds=s) for s in (10, 20, 30)):  # the chart's end moves in 10 s steps
        assert queries.stats_window(start + later, end + later) == window
    devices = ["dev-a", "dev-b"]
    # The same query either way; only DuckDB's parallel summation of doubles may order the adds differently.
    assert_frame_equal(queries.stats(devices, *window, db_path=db), queries.stats(devices, start, end, db_path=db),
                       rel_tol=1e-12, abs_tol=0)
    short = (T0 + timedelta(seconds=20), T0 + timedelta(hours=6, seconds=30))
    assert queries.stats_window(*short) == short


def test_long_range_stats_from_the_rollup_agree_with_the_raw_readings(db: Path) -> None:
    """Long ranges read the 1-minute rollup: counts and extremes exact, time-weighted figures within a minute."""
    end = T0 + timedelta(days=1)
    exact = queries.stats(["dev-a", "dev-b"], T0, end, exact=True, db_path=db).to_dicts()
    rolled = queries.stats(["dev-a", "dev-b"], T0, end, exact=False, db_path=db).to_dicts()
    assert queries.stats(["dev-a"], T0, T0 + timedelta(days=7), db_path=db)["resolution"][0] == "1m"
    for raw_row, rollup_row in zip(exact, rolled, strict=True):
        assert (rollup_row["resolution"], raw_row["resolution"]) == ("1m", "raw")
        for key in ("device_id", "n", "temp_min", "temp_max", "first_ts", "last_ts"):
            assert rollup_row[key] == raw_row[key]
        assert math.isclose(rollup_row["temp_avg"], raw_row["temp_avg"], rel_tol=1e-12)
        assert abs(rollup_row["duty_pct"] - raw_row["duty_pct"]) < 1.0
        assert abs(rollup_row["below_target_s"] - raw_row["below_target_s"]) < 0.02 * raw_row["covered_s"]
        assert abs(rollup_row["covered_s"] - raw_row["covered_s"]) <= 60


def test_heating_periods_match_the_readings(db: Path) -> None:
    """Every ON run becomes one period from its first ON reading to the first OFF reading after it."""
    end = T0 + timedelta(hours=3)
    periods = queries.heating_periods(["dev-a"], T0, end, db_path=db)
    frame = raw(db, "SELECT ts, heating FROM telemetry WHERE device_id = 'dev-a' AND ts < ? ORDER BY ts", [end])
    expected, begin = [], None
    for ts, heating in frame.iter_rows():
        if heating and begin is None:
            begin = ts
        elif not heating and begin is not None:
            expected.append((begin, ts))
            begin = None
    if begin is not None:
        expected.append((begin, frame["ts"][-1]))
    assert len(expected) >= 3
    assert list(zip(periods["start"], periods["end"], strict=True)) == expected


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_sql_like_device_ids_are_plain_values(db: Path, hostile: str) -> None:
    """Ids that look like SQL match nothing, change nothing, and a stored id with a quote is found exactly."""
    start, end = T0, T0 + YEAR
    assert queries.history([hostile], start, end, db_path=db).height == 0
    assert queries.stats([hostile], start, end, db_path=db).height == 0
    assert queries.heating_periods([hostile], start, end, db_path=db).height == 0
    assert queries.export_count([hostile], start, end, db_path=db) == 0
    assert queries.recent_commands(device_id=hostile, db_path=db).height == 0
    assert raw(db, "SELECT count(*) AS n FROM telemetry")["n"][0] > 0
    assert queries.export_count(["it's-quoted"], start, end, db_path=db) == 10


def test_recent_commands_outcomes(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Acked ok, refused with the device's reason, unanswered past the timeout, and still pending."""
    monkeypatch.setenv("THERMOLOG_COMMAND_TIMEOUT_S", "300")  # r-new stays pending however slow this run is
    get_settings.cache_clear()
    try:
        frame = queries.recent_commands(db_path=db)
    finally:
        get_settings.cache_clear()  # the next test reads its own settings
    outcome = {row["request_id"]: (row["outcome"], row["issued_by"], row["error"]) for row in frame.to_dicts()}
    assert outcome == {"r-ok": ("ok", "alice", None), "r-no": ("refused", "bob", "locked"),
                       "r-lost": ("timeout", "carol", None), "r-new": ("pending", "dave", None)}
    assert frame["request_id"][0] == "r-new"  # newest first


def test_recent_rejected_previews_undecodable_payloads(db: Path) -> None:
    """Rejected rows come newest first with a readable preview even when the bytes are not UTF-8."""
    frame = queries.recent_rejected(db_path=db)
    assert frame["reason"].to_list() == ["NaN", "not JSON"]
    assert frame["preview"][1].endswith("{oops") and frame["payload_size"][1] == 7


def test_system_latest_is_the_newest_row_per_host(db: Path) -> None:
    """Edge host metrics: the newest row of each host."""
    row = queries.system_latest(db).row(0, named=True)
    assert (row["host"], row["cpu_usage"], row["memory_usage"], row["disk_usage"]) == ("edge-1", 4.0, 5.0, 6.0)


def test_missing_database_says_what_to_start(tmp_path: Path) -> None:
    """Without a database the error tells the user to start ingest."""
    with pytest.raises(DatabaseNotReady, match="thermolog ingest"):
        queries.latest_state(tmp_path / "absent.duckdb")
