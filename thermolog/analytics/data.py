"""Telemetry frames for the analytics: read through ``thermolog.reader`` or from an export file, prepared.

A reading's ``heating`` flag is the heater state the thermostat decided on that reading; for cycles and duty
cycle it holds until the next reading. Readings further apart than :data:`MAX_GAP_FACTOR` times the device's usual
interval start a new segment: nothing is assumed about the time in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from thermolog import reader

DAY_S = 86_400.0
MAX_GAP_FACTOR = 5.0
"""A gap longer than this many usual intervals splits a device's readings into separate segments."""


class InsufficientData(ValueError):
    """Too little data (or no heating/idle variety) to compute the requested result."""


def load_telemetry(device_ids: Sequence[str] | None = None, start: datetime | None = None,
                   end: datetime | None = None, db_path: Path | str | None = None,
                   min_interval_s: float | None = None) -> pl.DataFrame:
    """Raw telemetry (oldest first) for some or all devices in ``[start, end)``, read through the reader helper.

    ``min_interval_s`` keeps only the first reading of each device in every slot of that many seconds (thinned in
    DuckDB), which bounds the work for devices that report every few seconds.
    """
    thin = "QUALIFY row_number() OVER (PARTITION BY device_id, floor(epoch(ts) / ?) ORDER BY ts) = 1 " \
        if min_interval_s else ""
    sql = (
        "SELECT device_id, ts, temperature, humidity, target_temp, heating FROM telemetry "
        "WHERE (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], device_id)) "
        "AND (?::TIMESTAMPTZ IS NULL OR ts >= ?::TIMESTAMPTZ) AND (?::TIMESTAMPTZ IS NULL OR ts < ?::TIMESTAMPTZ) "
        f"{thin}ORDER BY device_id, ts"
    )
    ids = list(device_ids) if device_ids is not None else None
    params: list[Any] = [ids, ids, start, start, end, end] + ([float(min_interval_s)] if min_interval_s else [])
    return prepare(reader.query(sql, params, db_path=db_path))


def read_export(path: Path | str) -> pl.DataFrame:
    """Telemetry from a CSV or Parquet export (``thermolog export``), with the table's columns."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pl.read_parquet(path)
    elif path.suffix.lower() == ".csv":
        frame = pl.read_csv(path, try_parse_dates=True)
    else:
        raise ValueError(f"{path}: expected a .csv or .parquet export")
    return prepare(frame)


def prepare(frame: pl.DataFrame) -> pl.DataFrame:
    """Normalise a telemetry frame: UTC ``ts``, float ``t`` (epoch s), ``u`` (0/1), ``dt`` to the next reading
    (null at a segment end), ``segment`` ids; sorted by device and time, repeated timestamps dropped."""
    missing = [c for c in ("device_id", "ts", "temperature", "target_temp", "heating") if c not in frame.columns]
    if missing:
        raise ValueError(f"telemetry frame lacks columns {missing}")
    ts = pl.col("ts")
    if frame.schema["ts"] == pl.String:
        ts = ts.str.to_datetime(time_zone="UTC")
    frame = frame.with_columns(ts.alias("ts"))
    if frame.schema["ts"].time_zone is None:  # type: ignore[union-attr]
        frame = frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    heating = pl.col("heating")
    if frame.schema["heating"] == pl.String:
        heating = heating.str.to_uppercase().is_in(["ON", "TRUE", "1"])
    frame = (
        frame.with_columns(
            pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us"),
            heating.cast(pl.Boolean).alias("heating"),
            pl.col("temperature").cast(pl.Float64),
            pl.col("target_temp").cast(pl.Float64),
        )
        .unique(["device_id", "ts"], keep="first", maintain_order=False)
        .sort("device_id", "ts")
        .with_columns(
            (pl.col("ts").dt.epoch("us").cast(pl.Float64) / 1e6).alias("t"),
            pl.col("heating").cast(pl.Int8).alias("u"),
        )
        .with_columns((pl.col("t").shift(-1).over("device_id") - pl.col("t")).alias("_dt"))
        .with_columns((pl.col("_dt").median().over("device_id") * MAX_GAP_FACTOR).alias("_max_gap"))
        .with_columns(
            pl.when(pl.col("_dt") <= pl.col("_max_gap")).then(pl.col("_dt")).otherwise(None).alias("dt"),
        )
        .with_columns(
            # a new segment starts after a reading whose next one is missing or too far away
            pl.col("dt").is_null().shift(1, fill_value=False).cum_sum().over("device_id").alias("segment"),
        )
        .drop("_dt", "_max_gap")
    )
    return frame


def usual_interval_s(frame: pl.DataFrame) -> float:
    """Median seconds between consecutive readings (all devices)."""
    value = frame["dt"].median()
    if value is None:
        raise InsufficientData("need at least two readings of one device")
    return float(value)  # type: ignore[arg-type]
