"""Heating cycles, duty cycle, overshoot, short-cycling, daily profile, anomalies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

SHORT_CYCLE_S = 300.0
"""Heating cycles shorter than this are short cycles (relay wear, poor comfort)."""
MAX_CYCLES_PER_HOUR = 6
"""More heating cycles than this in one hour is short-cycling."""


def runs(frame: pl.DataFrame) -> pl.DataFrame:
    """Maximal runs of readings with the same heating state inside one segment.

    Columns: device_id, run, heating, start, end, duration_s, n, temp_start, temp_end, temp_min, temp_max,
    target (at the start), target_changed (the target moved during the run), rate_c_per_h (least-squares slope of
    the temperature over the run and the reading that ends it). ``end`` is the reading that ended the run, or the
    run's last reading plus one interval at a segment end.
    """
    f = frame.with_columns(
        (
            (pl.col("heating") != pl.col("heating").shift(1)).fill_null(True)
            | (pl.col("segment") != pl.col("segment").shift(1)).fill_null(True)
        ).cum_sum().over("device_id").alias("run"),
    ).with_columns(
        # the reading that closes each run (next reading, if in the same segment) counts towards its rate
        pl.col("t").shift(-1).over("device_id").alias("_t_next"),
        pl.col("temperature").shift(-1).over("device_id").alias("_temp_next"),
    )
    agg = f.group_by("device_id", "run", maintain_order=True).agg(
        pl.col("heating").first(),
        pl.col("segment").first(),
        pl.col("ts").first().alias("start"),
        pl.col("t").first().alias("_t0"),
        pl.col("t").last().alias("_t_last"),
        pl.col("dt").last().alias("_dt_last"),
        pl.len().alias("n"),
        pl.col("temperature").first().alias("temp_start"),
        pl.col("temperature").last().alias("_temp_last"),
        pl.col("_temp_next").last(),
        pl.col("temperature").min().alias("temp_min"),
        pl.col("temperature").max().alias("temp_max"),
        pl.col("target_temp").first().alias("target"),
        (pl.col("target_temp").n_unique() > 1).alias("target_changed"),
        pl.col("t"),
        pl.col("temperature"),
    )
    interval = frame["dt"].median() or 0.0
    closed = pl.col("_dt_last").is_not_null()
    agg = agg.with_columns(
        pl.when(closed).then(pl.col("_t_last") + pl.col("_dt_last"))
        .otherwise(pl.col("_t_last") + interval).alias("_t_end"),
        pl.when(closed).then(pl.col("_temp_next")).otherwise(pl.col("_temp_last")).alias("temp_end"),
    )
    slopes = [
        _slope(np.asarray(t), np.asarray(y), t_end if closed_ else None, y_end if closed_ else None)
        for t, y, t_end, y_end, closed_ in zip(
            agg["t"], agg["temperature"], agg["_t_end"], agg["temp_end"], agg["_dt_last"].is_not_null(),
            strict=True,
        )
    ]
    return agg.with_columns(
        (pl.col("_t_end") * 1e6).cast(pl.Int64).cast(pl.Datetime("us", "UTC")).alias("end"),
        (pl.col("_t_end") - pl.col("_t0")).alias("duration_s"),
        pl.Series("rate_c_per_h", slopes, dtype=pl.Float64) * 3600.0,
    ).select(
        "device_id", "run", "segment", "heating", "start", "end", "duration_s", "n", "temp_start", "temp_end",
        "temp_min", "temp_max", "target", "target_changed", "rate_c_per_h",
    )


def _slope(t: np.ndarray, y: np.ndarray, t_end: float | None, y_end: float | None) -> float | None:
    if t_end is not None and y_end is not None:
        t, y = np.append(t, t_end), np.append(y, y_end)
    if len(t) < 3:
        return None
    tc = t - t.mean()
    denom = float(tc @ tc)
    return float(tc @ (y - y.mean()) / denom) if denom > 0 else None


def heating_cycles(frame: pl.DataFrame, short_cycle_s: float = SHORT_CYCLE_S) -> pl.DataFrame:
    """One row per heating cycle (a run of heating readings): start, end, duration_s, temp_start, temp_end,
    temp_rise, rate_c_per_h, target, and ``short`` when it lasted less than ``short_cycle_s``."""
    return (
        runs(frame)
        .filter(pl.col("heating"))
        .with_columns(
            (pl.col("temp_end") - pl.col("temp_start")).alias("temp_rise"),
            (pl.col("duration_s") < short_cycle_s).alias("short"),
        )
        .select("device_id", "start", "end", "duration_s", "temp_start", "temp_end", "temp_rise", "rate_c_per_h",
                "target", "target_changed", "short")
    )


def duty_cycle(frame: pl.DataFrame, every: str = "1h") -> pl.DataFrame:
    """Share of time the heater was on per device and time bucket (``every``: a Polars duration such as ``1h``,
    ``1d``). Each reading's state counts for the time until the next reading; gaps count for neither."""
    return (
        frame.filter(pl.col("dt").is_not_null())
        .with_columns(pl.col("ts").dt.truncate(every).alias("bucket"))
        .group_by("device_id", "bucket")
        .agg(
            (pl.col("dt") * pl.col("u")).sum().alias("on_s"),
            pl.col("dt").sum().alias("covered_s"),
            pl.col("temperature").mean().alias("temp_mean"),
            pl.col("target_temp").mean().alias("target_mean"),
        )
        .with_columns((pl.col("on_s") / pl.col("covered_s")).alias("duty"))
        .sort("device_id", "bucket")
    )


def overshoot(frame: pl.DataFrame) -> pl.DataFrame:
    """Overshoot and undershoot against the target per settled run.

    Overshoot: highest temperature of an idle run minus its target; undershoot: target minus the lowest temperature
    of a heating run. Only runs whose target equals the previous run's (no transient after a setpoint change).
    """
    r = runs(frame).with_columns(pl.col("target").shift(1).over("device_id").alias("_prev_target"))
    settled = r.filter((pl.col("target") == pl.col("_prev_target")) & ~pl.col("target_changed"))
    return settled.select(
        "device_id", "start", "heating", "target",
        pl.when(~pl.col("heating")).then(pl.col("temp_max") - pl.col("target")).alias("overshoot_c"),
        pl.when(pl.col("heating")).then(pl.col("target") - pl.col("temp_min")).alias("undershoot_c"),
    )


def overshoot_summary(frame: pl.DataFrame) -> pl.DataFrame:
    """Per device: mean and max overshoot and undershoot (°C) over settled runs."""
    return overshoot(frame).group_by("device_id").agg(
        pl.col("overshoot_c").mean().alias("overshoot_mean_c"),
        pl.col("overshoot_c").max().alias("overshoot_max_c"),
        pl.col("undershoot_c").mean().alias("undershoot_mean_c"),
        pl.col("undershoot_c").max().alias("undershoot_max_c"),
    ).sort("device_id")


def short_cycling(frame: pl.DataFrame, short_cycle_s: float = SHORT_CYCLE_S,
                  max_cycles_per_hour: int = MAX_CYCLES_PER_HOUR) -> pl.DataFrame:
    """Hours in which a device short-cycled: more than ``max_cycles_per_hour`` heating cycles started, or any
    cycle shorter than ``short_cycle_s``. Columns: device_id, hour, cycles, short_cycles, flagged."""
    return (
        heating_cycles(frame, short_cycle_s)
        .with_columns(pl.col("start").dt.truncate("1h").alias("hour"))
        .group_by("device_id", "hour")
        .agg(pl.len().alias("cycles"), pl.col("short").sum().alias("short_cycles"))
        .with_columns(((pl.col("cycles") > max_cycles_per_hour) | (pl.col("short_cycles") > 0)).alias("flagged"))
        .filter(pl.col("flagged"))
        .sort("device_id", "hour")
    )


def daily_profile(frame: pl.DataFrame, tz: str = "UTC") -> pl.DataFrame:
    """Average day per device in time zone ``tz``: per hour of day, mean temperature, target and duty cycle."""
    return (
        frame.filter(pl.col("dt").is_not_null())
        .with_columns(pl.col("ts").dt.convert_time_zone(tz).dt.hour().alias("hour"))
        .group_by("device_id", "hour")
        .agg(
            pl.col("temperature").mean().alias("temp_mean"),
            pl.col("target_temp").mean().alias("target_mean"),
            ((pl.col("dt") * pl.col("u")).sum() / pl.col("dt").sum()).alias("duty"),
        )
        .sort("device_id", "hour")
    )


def heater_anomalies(frame: pl.DataFrame, window_s: float = 1800.0, min_rise_c_per_h: float = 0.2) -> pl.DataFrame:
    """Periods where the heater was ON but the temperature did not rise.

    Every heating run is cut into consecutive windows of ``window_s``; a window whose least-squares slope is below
    ``min_rise_c_per_h`` is suspect, and adjacent suspect windows merge into one anomaly (device_id, start, end,
    duration_s, rate_c_per_h). A healthy heater below its reachable maximum warms by degrees per hour.
    """
    rows: list[dict[str, Any]] = []
    heating = frame.filter(pl.col("heating"))
    r = runs(frame).filter(pl.col("heating") & (pl.col("duration_s") >= window_s))
    for device_id, start, end in r.select("device_id", "start", "end").iter_rows():
        run = heating.filter((pl.col("device_id") == device_id) & (pl.col("ts") >= start) & (pl.col("ts") < end))
        t, y = run["t"].to_numpy(), run["temperature"].to_numpy()
        edges = np.arange(t[0], t[-1] + 1e-9, window_s)
        current: dict[str, Any] | None = None
        for lo in edges:
            mask = (t >= lo) & (t < lo + window_s)
            if mask.sum() < 5 or t[mask][-1] - t[mask][0] < window_s / 2:
                continue
            slope = _slope(t[mask], y[mask], None, None)
            if slope is not None and slope * 3600.0 < min_rise_c_per_h:
                if current is None:
                    current = {"device_id": device_id, "t0": t[mask][0], "rates": []}
                current["t1"] = t[mask][-1]
                current["rates"].append(slope * 3600.0)
            elif current is not None:
                rows.append(current)
                current = None
        if current is not None:
            rows.append(current)
    schema = {"device_id": pl.String, "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC"),
              "duration_s": pl.Float64, "rate_c_per_h": pl.Float64}
    if not rows:
        return pl.DataFrame(schema=schema)
    return pl.DataFrame(
        {
            "device_id": [row["device_id"] for row in rows],
            "start": [datetime.fromtimestamp(row["t0"], UTC) for row in rows],
            "end": [datetime.fromtimestamp(row["t1"], UTC) for row in rows],
            "duration_s": [row["t1"] - row["t0"] for row in rows],
            "rate_c_per_h": [float(np.mean(row["rates"])) for row in rows],
        },
        schema=schema,
    )
