"""Every read query of thermolog: the app pages, the notebooks and ``thermolog export`` share these functions.

All SQL lives here, values travel as ``?`` parameters (never formatted into the SQL) and every query goes
through ``thermolog.reader`` (read-only, brief retries, connection closed right after). Times in and out are
UTC; chart x values are epoch milliseconds (numbers keep the figure JSON small and need no parsing).

History never returns more than ``max_points`` buckets per device: the bucket width follows from the range, and
the source table from the width (raw rows, the 1-minute or the 1-hour rollup), so a one-year chart reads a few
thousand rollup rows instead of millions of readings. A rollup's own buckets are used as they are whenever they
fit the budget and still give a quarter of it (24 h as 1,440 minutes, 30 d as 720 hours): those charts read one
stored row per point and aggregate nothing. Each bucket keeps min/avg/max, so peaks survive the downsampling
(the same guarantee M4 gives, with one row per bucket instead of four).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from thermolog.reader import query
from thermolog.schema import TELEMETRY_1H, TELEMETRY_1M
from thermolog.settings import get_settings

DbPath = Path | str | None

SOURCE_RAW = "telemetry"
SOURCE_1M = TELEMETRY_1M
SOURCE_1H = TELEMETRY_1H
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
MIN_RAW_BUCKET_MS = 1_000
MIN_SHARE_OF_POINTS = 4
"""A rollup's own buckets serve a chart when at least ``max_points / MIN_SHARE_OF_POINTS`` of them fall in range."""
EXACT_STATS_POINTS = 2000
"""Statistics read every raw reading for ranges up to this many one-minute buckets (about 33 h): a bound on their
cost, independent of how many points the charts get."""
ROLLUPS = ((SOURCE_1H, HOUR_MS), (SOURCE_1M, MINUTE_MS))

HISTORY_COLUMNS = (
    "device_id", "t_ms", "n",
    "temp_min", "temp_avg", "temp_max",
    "hum_min", "hum_avg", "hum_max",
    "target_min", "target_avg", "target_max",
    "heating",
)
"""Columns of :func:`history`; ``heating`` is the fraction (0..1) of readings in the bucket with the heater ON."""


@dataclass(frozen=True)
class Resolution:
    """Where a history query reads from and how wide its buckets are."""

    source: str
    bucket_ms: int


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{value!r} needs a time zone; thermolog stores and queries UTC")
    return value.astimezone(UTC)


def _placeholders(values: Sequence[Any]) -> str:
    """``?, ?, ?`` for an IN list: only the count of values reaches the SQL text, never a value."""
    if not values:
        raise ValueError("at least one value is needed")
    return ", ".join("?" for _ in values)


def _ceil_to(value: int, step: int) -> int:
    return -(-value // step) * step


def _budget(max_points: int | None) -> int:
    points = max_points or get_settings().max_chart_points
    if points < 2:
        raise ValueError("max_points must be at least 2")
    return points


def _span_and_width(start: datetime, end: datetime, points: int) -> tuple[int, int]:
    """The range in ms and the narrowest bucket width (ms) that splits it into at most ``points`` buckets."""
    span_ms = max(1, math.ceil((_utc(end) - _utc(start)).total_seconds() * 1000))
    return span_ms, math.ceil(span_ms / (points - 1))


def choose_resolution(start: datetime, end: datetime, max_points: int | None = None) -> Resolution:
    """Bucket width and source table so that [start, end) gives at most ``max_points`` buckets per series.

    Buckets are aligned to multiples of their width since the epoch, so a range touches at most
    ``ceil(span / width) + 1`` of them; the width is chosen with that in mind. The coarsest rollup wins whose
    own buckets still number at least a quarter of ``max_points`` over the range (a rollup row is then one point,
    nothing is aggregated at read time); below a minute the raw readings are bucketed.
    """
    points = _budget(max_points)
    span_ms, width = _span_and_width(start, end, points)
    for source, unit in ROLLUPS:
        # width < unit means span < unit * (points - 1), so the unit-wide buckets touched stay within points.
        if width >= unit or span_ms * MIN_SHARE_OF_POINTS >= unit * points:
            return Resolution(source, max(unit, _ceil_to(width, unit)))
    return Resolution(SOURCE_RAW, max(width, MIN_RAW_BUCKET_MS))


def _unit_ms(source: str) -> int:
    return dict(ROLLUPS)[source]


def _empty_history() -> pl.DataFrame:
    schema: dict[str, Any] = {name: pl.Float64 for name in HISTORY_COLUMNS}
    schema.update(device_id=pl.Utf8, t_ms=pl.Int64, n=pl.Int64)
    return pl.DataFrame(schema=schema)


def history_sql(device_ids: Sequence[str], start: datetime, end: datetime,
                max_points: int | None = None) -> tuple[str, list[Any]]:
    """The SQL and parameters :func:`history` runs (unsorted rows), for running it on a connection of one's own."""
    start, end = _utc(start), _utc(end)
    res = choose_resolution(start, end, max_points)
    devices = list(device_ids)
    if res.source != SOURCE_RAW:
        return _rollup_history_sql(res, devices, start, end)
    sql = f"""
        SELECT device_id, epoch_ms(ts) // ? AS b, min(epoch_ms(ts)) AS t_ms, count(*) AS n,
               min(temperature) AS temp_min, avg(temperature) AS temp_avg, max(temperature) AS temp_max,
               min(humidity) AS hum_min, avg(humidity) AS hum_avg, max(humidity) AS hum_max,
               min(target_temp) AS target_min, avg(target_temp) AS target_avg, max(target_temp) AS target_max,
               avg(heating::DOUBLE) AS heating
        FROM telemetry
        WHERE device_id IN ({_placeholders(devices)}) AND ts >= ? AND ts < ?
        GROUP BY device_id, b"""
    return sql, [res.bucket_ms, *devices, start, end]


def history(device_ids: Sequence[str], start: datetime, end: datetime, max_points: int | None = None,
            db_path: DbPath = None) -> pl.DataFrame:
    """Downsampled readings of several devices over [start, end): one row per device and bucket.

    Columns are :data:`HISTORY_COLUMNS`; ``t_ms`` is the time of the bucket's first reading in epoch
    milliseconds (UTC), so a bucket of one reading is that reading exactly; ``n`` is the number of readings in
    the bucket. Sorted by device and time.
    """
    if not device_ids:
        return _empty_history()
    frame = query(*history_sql(device_ids, start, end, max_points), db_path)
    # Sorted here, not in SQL: an ORDER BY over a chart's 2,000 rows costs DuckDB milliseconds, Polars microseconds.
    return frame.select(HISTORY_COLUMNS).sort("device_id", "t_ms") if frame.height else _empty_history()


def _rollup_history_sql(res: Resolution, devices: list[str], start: datetime, end: datetime) -> tuple[str, list[Any]]:
    """History SQL over a rollup: its rows as they are when the bucket is the rollup's own, else merged."""
    unit = _unit_ms(res.source)
    # start is floored to the rollup's own bucket so the bucket holding start is included.
    floor = datetime.fromtimestamp(int(start.timestamp() * 1000) // unit * unit / 1000, UTC)
    where = f"device_id IN ({_placeholders(devices)}) AND bucket >= ? AND bucket < ? AND n > 0"
    if res.bucket_ms == unit:
        # One stored row per device and bucket: nothing to aggregate.
        sql = f"""
            SELECT device_id, epoch_ms(first_ts) AS t_ms, n,
                   temp_min, temp_sum / n AS temp_avg, temp_max,
                   hum_min, hum_sum / nullif(hum_n, 0) AS hum_avg, hum_max,
                   target_min, target_sum / n AS target_avg, target_max,
                   heating_n / n AS heating
            FROM {res.source} WHERE {where}"""
        return sql, [*devices, floor, end]
    # A rollup bucket lies wholly inside one wider bucket (widths are whole minutes / hours), so sums and
    # counts merge exactly.
    sql = f"""
        SELECT device_id, epoch_ms(bucket) // ? AS b, min(epoch_ms(first_ts)) AS t_ms, sum(n)::BIGINT AS n,
               min(temp_min) AS temp_min, sum(temp_sum) / sum(n) AS temp_avg, max(temp_max) AS temp_max,
               min(hum_min) AS hum_min, sum(hum_sum) / nullif(sum(hum_n), 0) AS hum_avg, max(hum_max) AS hum_max,
               min(target_min) AS target_min, sum(target_sum) / sum(n) AS target_avg,
               max(target_max) AS target_max,
               sum(heating_n) / sum(n) AS heating
        FROM {res.source} WHERE {where}
        GROUP BY device_id, b"""
    return sql, [res.bucket_ms, *devices, floor, end]


def devices(db_path: DbPath = None) -> list[str]:
    """Every device id known from readings, status or state, sorted."""
    frame = query(
        """SELECT device_id FROM telemetry_1h UNION SELECT device_id FROM device_status
           UNION SELECT device_id FROM device_state ORDER BY device_id""",
        None,
        db_path,
    )
    return frame["device_id"].to_list()


def latest_state(db_path: DbPath = None) -> pl.DataFrame:
    """One row per device: its last reading, newest online/offline status and the target it reports.

    Columns: device_id, last_seen, temperature, humidity, heating, reading_target, status, status_ts,
    target_temp (the retained ``state`` target, else the last reading's), mode, firmware, state_updated_at.
    """
    # The hourly rollup knows each device's newest reading time, so the raw scan can skip almost everything.
    return query(
        """
        WITH newest AS (SELECT device_id, max(last_ts) AS ts FROM telemetry_1h GROUP BY device_id),
        reading AS (
            SELECT t.device_id, max(t.ts) AS last_seen, arg_max(t.temperature, t.ts) AS temperature,
                   arg_max(t.humidity, t.ts) AS humidity, arg_max(t.heating, t.ts) AS heating,
                   arg_max(t.target_temp, t.ts) AS reading_target
            FROM telemetry t JOIN newest n ON t.device_id = n.device_id AND t.ts = n.ts
            WHERE t.ts >= (SELECT min(ts) FROM newest)
            GROUP BY t.device_id),
        status AS (SELECT device_id, arg_max(status, ts) AS status, max(ts) AS status_ts
                   FROM device_status GROUP BY device_id),
        ids AS (SELECT device_id FROM reading UNION SELECT device_id FROM status
                UNION SELECT device_id FROM device_state)
        SELECT ids.device_id, r.last_seen, r.temperature, r.humidity, r.heating, r.reading_target,
               s.status, s.status_ts, coalesce(d.target_temp, r.reading_target) AS target_temp,
               d.mode, d.firmware, d.updated_at AS state_updated_at
        FROM ids LEFT JOIN reading r USING (device_id) LEFT JOIN status s USING (device_id)
                 LEFT JOIN device_state d USING (device_id)
        ORDER BY ids.device_id
        """,
        None,
        db_path,
    )


def heating_periods(device_ids: Sequence[str], start: datetime, end: datetime,
                    db_path: DbPath = None) -> pl.DataFrame:
    """Exact heater-ON intervals from raw readings: device_id, start, end (the first OFF reading after).

    An interval still running at the end of the range ends at its last ON reading.
    """
    if not device_ids:
        return pl.DataFrame(schema={"device_id": pl.Utf8, "start": pl.Datetime("us", "UTC"),
                                    "end": pl.Datetime("us", "UTC")})
    devices = list(device_ids)
    return query(
        f"""
        WITH r AS (
            SELECT device_id, ts, heating,
                   lead(ts) OVER w AS next_ts,
                   (heating IS DISTINCT FROM lag(heating) OVER w)::INT AS change
            FROM telemetry WHERE device_id IN ({_placeholders(devices)}) AND ts >= ? AND ts < ?
            WINDOW w AS (PARTITION BY device_id ORDER BY ts)),
        g AS (SELECT *, sum(change) OVER (PARTITION BY device_id ORDER BY ts) AS run FROM r)
        SELECT device_id, min(ts) AS "start", max(coalesce(next_ts, ts)) AS "end"
        FROM g WHERE heating GROUP BY device_id, run ORDER BY device_id, "start"
        """,
        [*devices, _utc(start), _utc(end)],
        db_path,
    )


def _exact_stats(start: datetime, end: datetime) -> bool:
    """Whether :func:`stats` reads every raw reading for [start, end) by default (else the 1-minute rollup)."""
    return _span_and_width(start, end, EXACT_STATS_POINTS)[1] < MINUTE_MS


def _whole_minutes(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) widened to whole minutes: the same 1-minute rollup buckets."""
    first_s = int(_utc(start).timestamp()) // 60 * 60
    last_s = _ceil_to(math.ceil(_utc(end).timestamp()), 60)
    return datetime.fromtimestamp(first_s, UTC), datetime.fromtimestamp(last_s, UTC)


def stats_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The [start, end) :func:`stats` reads by default: whole minutes when the 1-minute rollup answers (the same
    buckets as [start, end), so the same result), else [start, end) itself. A cache keyed by it shares one
    query among all the ends of a minute."""
    return (start, end) if _exact_stats(start, end) else _whole_minutes(start, end)


def stats(device_ids: Sequence[str], start: datetime, end: datetime, gap_s: float | None = None,
          exact: bool | None = None, db_path: DbPath = None) -> pl.DataFrame:
    """Per device over [start, end): readings, min/avg/max temperature, heating duty cycle % and time below target.

    Duty cycle and time below target are time-weighted: each reading counts until the next one, but at most
    ``gap_s`` (default the stale-after setting), so an outage is not counted as heating or as cold.
    ``exact`` reads every raw reading (a window over all of them: seconds for a year of 5 s readings); by default
    that is done for ranges whose buckets would be narrower than a minute at ``EXACT_STATS_POINTS`` (up to about
    33 h), longer ones read the 1-minute rollup: counts, min, max and mean stay exact, duty cycle and time
    below target are resolved to the minute.
    Columns: device_id, n, temp_min, temp_avg, temp_max, duty_pct, below_target_s, covered_s, first_ts, last_ts,
    resolution (``raw`` or ``1m``).
    """
    if not device_ids:
        return pl.DataFrame()
    devices = list(device_ids)
    cap = get_settings().stale_after_s if gap_s is None else gap_s
    start, end = _utc(start), _utc(end)
    if exact is None:
        exact = _exact_stats(start, end)
    if exact:
        return query(
            f"""
            WITH r AS (
                SELECT device_id, ts, temperature, target_temp, heating,
                       least(coalesce(epoch(lead(ts) OVER (PARTITION BY device_id ORDER BY ts)) - epoch(ts), 0), ?)
                           AS dur
                FROM telemetry WHERE device_id IN ({_placeholders(devices)}) AND ts >= ? AND ts < ?)
            SELECT device_id, count(*) AS n,
                   min(temperature) AS temp_min, avg(temperature) AS temp_avg, max(temperature) AS temp_max,
                   100 * sum(CASE WHEN heating THEN dur ELSE 0 END) / nullif(sum(dur), 0) AS duty_pct,
                   sum(CASE WHEN temperature < target_temp THEN dur ELSE 0 END) AS below_target_s,
                   sum(dur) AS covered_s, min(ts) AS first_ts, max(ts) AS last_ts, 'raw' AS resolution
            FROM r GROUP BY device_id ORDER BY device_id
            """,
            [cap, *devices, start, end],
            db_path,
        )
    first, last = _whole_minutes(start, end)
    # Each minute covers n readings times the device's typical interval (at most 60 s): time-weighted per minute.
    return query(
        f"""
        WITH b AS (
            SELECT device_id, n, temp_min, temp_max, temp_sum, target_sum, heating_n, first_ts, last_ts
            FROM telemetry_1m WHERE device_id IN ({_placeholders(devices)}) AND bucket >= ? AND bucket < ? AND n > 0),
        d AS (
            SELECT device_id,
                   least(coalesce((epoch(max(last_ts)) - epoch(min(first_ts))) / nullif(sum(n) - 1, 0), 60), ?) AS dt
            FROM b GROUP BY device_id),
        w AS (SELECT b.*, least(60, b.n * d.dt) AS cov FROM b JOIN d USING (device_id))
        SELECT device_id, sum(n)::BIGINT AS n,
               min(temp_min) AS temp_min, sum(temp_sum) / sum(n) AS temp_avg, max(temp_max) AS temp_max,
               100 * sum(cov * heating_n / n) / nullif(sum(cov), 0) AS duty_pct,
               sum(CASE WHEN temp_sum < target_sum THEN cov ELSE 0 END) AS below_target_s,
               sum(cov) AS covered_s, min(first_ts) AS first_ts, max(last_ts) AS last_ts, '1m' AS resolution
        FROM w GROUP BY device_id ORDER BY device_id
        """,
        [*devices, first, last, cap],
        db_path,
    )


def heating_window(minutes: float, db_path: DbPath = None) -> pl.DataFrame:
    """Per device, its readings in the last ``minutes`` before its newest reading, summarised for alerts.

    Columns: device_id, n, all_on (heater ON in every reading), first_ts, last_ts, slope_c_per_min
    (least-squares temperature trend, robust against sensor noise).
    """
    return query(
        """
        WITH newest AS (SELECT device_id, max(last_ts) AS ts FROM telemetry_1h GROUP BY device_id)
        SELECT t.device_id, count(*) AS n, bool_and(t.heating) AS all_on, min(t.ts) AS first_ts,
               max(t.ts) AS last_ts, 60 * regr_slope(t.temperature, epoch(t.ts)) AS slope_c_per_min
        FROM telemetry t JOIN newest n ON t.device_id = n.device_id
        WHERE t.ts > n.ts - to_microseconds((? * 60e6)::BIGINT)
          AND t.ts >= (SELECT min(ts) FROM newest) - to_microseconds((? * 60e6)::BIGINT)
        GROUP BY t.device_id ORDER BY t.device_id
        """,
        [minutes, minutes],
        db_path,
    )


def system_latest(db_path: DbPath = None) -> pl.DataFrame:
    """Newest metrics of each edge host: host, ts, cpu_usage, memory_usage, disk_usage (percent)."""
    return query(
        """SELECT host, max(ts) AS ts, arg_max(cpu_usage, ts) AS cpu_usage,
                  arg_max(memory_usage, ts) AS memory_usage, arg_max(disk_usage, ts) AS disk_usage
           FROM system_metrics GROUP BY host ORDER BY host""",
        None,
        db_path,
    )


def device_kind(device_id: str, db_path: DbPath = None) -> tuple[str, str | None]:
    """``(kind, display name)`` of a device: its profile's kind from ``devices``, else ``("native", None)``."""
    frame = query("SELECT kind, name FROM devices WHERE device_id = ?", [device_id], db_path)
    return ("native", None) if frame.is_empty() else frame.row(0)


def device_names(db_path: DbPath = None) -> dict[str, str]:
    """Display names of the devices that have one (Zigbee2MQTT friendly names), by device id."""
    frame = query("SELECT device_id, name FROM devices WHERE name IS NOT NULL", None, db_path)
    return dict(frame.iter_rows())


def recent_commands(limit: int = 50, device_id: str | None = None, db_path: DbPath = None) -> pl.DataFrame:
    """Newest commands first: sent_at, device_id, issued_by, target_temp, mode, outcome, error, acked_at, transport,
    request_id.

    ``outcome`` is ``ok`` / ``refused`` once acked, ``timeout`` when unanswered past the command timeout,
    else ``pending``.
    """
    timeout_s = get_settings().command_timeout_s
    where, params = ("WHERE device_id = ?", [device_id]) if device_id else ("", [])
    return query(
        f"""
        SELECT coalesce(sent_at, acked_at) AS sent_at, device_id, issued_by, target_temp, mode,
               CASE WHEN ok THEN 'ok' WHEN NOT ok THEN 'refused'
                    WHEN sent_at < now() - to_microseconds((? * 1e6)::BIGINT) THEN 'timeout'
                    ELSE 'pending' END AS outcome,
               error, acked_at, transport, request_id
        FROM commands {where}
        ORDER BY coalesce(sent_at, acked_at) DESC NULLS LAST LIMIT ?
        """,
        [timeout_s, *params, limit],
        db_path,
    )


def recent_rejected(limit: int = 50, preview_bytes: int = 200, db_path: DbPath = None) -> pl.DataFrame:
    """Newest rejected messages first: received_at, topic, reason, payload_size, source, preview (text)."""
    frame = query(
        """SELECT received_at, topic, left(reason, ?) AS reason, payload_size, source, payload[1:?] AS head
           FROM rejected ORDER BY received_at DESC LIMIT ?""",
        [REASON_SHOWN_CHARS, preview_bytes, limit],
        db_path,
    )
    previews = [(head or b"").decode("utf-8", "replace") for head in frame["head"].to_list()]
    return frame.drop("head").with_columns(pl.Series("preview", previews, dtype=pl.Utf8))


REJECTED_REASONS_LIMIT = 20
"""Most reasons ``rejected_counts`` returns: a flood of distinct reasons must not reach every page refresh."""
REASON_SHOWN_CHARS = 500
"""Reasons are shown cut to this many characters (the writer caps new ones at the same length)."""


def rejected_counts(db_path: DbPath = None, limit: int = REJECTED_REASONS_LIMIT) -> pl.DataFrame:
    """How many messages were rejected per reason, the ``limit`` most frequent first."""
    return query(
        "SELECT left(reason, ?) AS reason, count(*) AS n FROM rejected GROUP BY ALL ORDER BY n DESC, reason LIMIT ?",
        [REASON_SHOWN_CHARS, limit], db_path)


def ingest_state(db_path: DbPath = None) -> dict[str, str]:
    """The ingest worker's bookkeeping (journal position, schema version, ...) as a dict."""
    frame = query("SELECT key, value FROM ingest_state ORDER BY key", None, db_path)
    return dict(zip(frame["key"].to_list(), frame["value"].to_list(), strict=True))


def message_rates(window_s: float = 60.0, db_path: DbPath = None) -> dict[str, float]:
    """Messages stored per second over the last ``window_s`` seconds (by arrival time) and the newest arrival.

    Keys: telemetry_per_s, system_per_s, rejected_per_s, newest_received_at (epoch seconds or NaN).
    """
    frame = query(
        """
        WITH since AS (SELECT now() - to_microseconds((? * 1e6)::BIGINT) AS t)
        SELECT (SELECT count(*) FROM telemetry WHERE received_at >= (SELECT t FROM since)) AS telemetry,
               (SELECT count(*) FROM system_metrics WHERE received_at >= (SELECT t FROM since)) AS system,
               (SELECT count(*) FROM rejected WHERE received_at >= (SELECT t FROM since)) AS rejected,
               epoch((SELECT max(received_at) FROM telemetry)) AS newest
        """,
        [window_s],
        db_path,
    )
    row = frame.row(0, named=True)
    return {
        "telemetry_per_s": row["telemetry"] / window_s,
        "system_per_s": row["system"] / window_s,
        "rejected_per_s": row["rejected"] / window_s,
        "newest_received_at": math.nan if row["newest"] is None else float(row["newest"]),
    }


EXPORT_COLUMNS = ("device_id", "ts", "temperature", "humidity", "target_temp", "heating")
"""Columns of an export; in CSV ``ts`` is ISO-8601 UTC text, in Parquet a UTC timestamp."""


def export_page_sql(device_id: str, start: datetime, end: datetime, after: datetime | None,
                    limit: int) -> tuple[str, list[Any]]:
    """SQL and parameters for the next page of one device's raw readings in [start, end), oldest first.

    Keyset paging (``ts > after``) lets an export close the database between pages, so the ingest writer is
    never kept out for the length of a large export. Besides :data:`EXPORT_COLUMNS` the page carries
    ``ts_iso`` (ISO-8601 UTC text, ``2025-07-04T00:13:36.000000Z``).
    """
    lower, lower_op = (_utc(after), ">") if after is not None else (_utc(start), ">=")
    sql = f"""
        SELECT device_id, ts, temperature, humidity, target_temp, heating,
               strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') AS ts_iso
        FROM telemetry WHERE device_id = ? AND ts {lower_op} ? AND ts < ?
        ORDER BY ts LIMIT ?"""
    return sql, [device_id, lower, _utc(end), limit]


def export_count(device_ids: Sequence[str], start: datetime, end: datetime, db_path: DbPath = None) -> int:
    """How many raw readings of the devices lie in [start, end)."""
    if not device_ids:
        return 0
    devices = list(device_ids)
    frame = query(
        f"SELECT count(*) AS n FROM telemetry WHERE device_id IN ({_placeholders(devices)}) AND ts >= ? AND ts < ?",
        [*devices, _utc(start), _utc(end)],
        db_path,
    )
    return int(frame["n"][0])
