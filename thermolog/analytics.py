"""Heating-behaviour analytics: cycles, duty cycle, rates, a fitted first-order thermal model and its predictions.

One module shared by the notebooks and the app's Insights page. Every function takes a telemetry frame with the
columns of the ``telemetry`` table (``device_id, ts, temperature, humidity, target_temp, heating``), read through
``thermolog.reader`` (:func:`load_telemetry`) or from an export file (:func:`read_export`).

A reading's ``heating`` flag is the heater state the thermostat decided on that reading; for cycles and duty
cycle it holds until the next reading. Readings further apart than :data:`MAX_GAP_FACTOR` times the device's usual
interval start a new segment: nothing is assumed about the time in between.

Thermal model (per device)::

    dT/dt = (T_amb(t) - T) / tau + g * u(t)          u = 1 while heating, else 0
    T_amb(t) = m + a * sin(w t) + b * cos(w t)        w = 2 pi / 24 h, t in UTC epoch seconds

With ``u`` constant between readings this has an exact solution, so the fit simulates it reading by reading and
minimises the squared difference to the measured temperature (output error). Output error is used rather than
regressing finite differences because sensor noise on the regressor ``T`` biases the time constant badly when
``tau`` is hours and readings are a minute apart. For a fixed ``tau`` the simulated temperature is linear in
everything else, so those are solved exactly and only ``tau`` is searched (variable projection).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl
from scipy.optimize import brentq, minimize_scalar

from thermolog import reader

DAY_S = 86_400.0
OMEGA = 2.0 * math.pi / DAY_S
"""Angular frequency of the daily outdoor cycle (rad/s)."""
MAX_GAP_FACTOR = 5.0
"""A gap longer than this many usual intervals splits a device's readings into separate segments."""
SHORT_CYCLE_S = 300.0
"""Heating cycles shorter than this are short cycles (relay wear, poor comfort)."""
MAX_CYCLES_PER_HOUR = 6
"""More heating cycles than this in one hour is short-cycling."""
TELEMETRY_COLUMNS = ("device_id", "ts", "temperature", "humidity", "target_temp", "heating")


class InsufficientData(ValueError):
    """Too little data (or no heating/idle variety) to compute the requested result."""


# --- Loading ---------------------------------------------------------------------------------------------------


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


def model_for_device(device_id: str, end: datetime | None = None, days: float = 7.0,
                     db_path: Path | str | None = None, min_interval_s: float = 30.0) -> ThermalModel | None:
    """The thermal model of one device fitted on its last ``days`` before ``end`` (default: its newest reading);
    None when there is too little data or the heater never switched."""
    if end is None:
        newest = reader.query("SELECT max(ts) AS ts FROM telemetry WHERE device_id = ?", [device_id], db_path)
        if newest.is_empty() or newest["ts"][0] is None:
            return None
        end = newest["ts"][0] + timedelta(seconds=1)
    start = end - timedelta(days=days)  # type: ignore[operator]
    readings = load_telemetry([device_id], start, end, db_path, min_interval_s)
    try:
        return fit_thermal_model(readings, device_id) if readings.height else None
    except InsufficientData:
        return None


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


# --- Runs, cycles, duty cycle ----------------------------------------------------------------------------------


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


def rates(frame: pl.DataFrame, min_readings: int = 5) -> pl.DataFrame:
    """Per device: median heating rate while ON and cooling rate while OFF (°C/h, from run slopes of at least
    ``min_readings`` readings), mean duty cycle, cycle count and the OFF-only time constant estimate."""
    r = runs(frame).filter((pl.col("n") >= min_readings) & pl.col("rate_c_per_h").is_not_null())
    summary = r.group_by("device_id").agg(
        pl.col("rate_c_per_h").filter(pl.col("heating")).median().alias("heating_rate_c_per_h"),
        pl.col("rate_c_per_h").filter(~pl.col("heating")).median().alias("cooling_rate_c_per_h"),
    )
    duty = duty_cycle(frame, "1d").group_by("device_id").agg(
        (pl.col("on_s").sum() / pl.col("covered_s").sum()).alias("duty")
    )
    cycles = heating_cycles(frame).group_by("device_id").agg(
        pl.len().alias("cycles"), pl.col("short").sum().alias("short_cycles")
    )
    taus = []
    for device_id in summary["device_id"]:
        try:
            taus.append(cooling_time_constant(frame.filter(pl.col("device_id") == device_id)) / 3600.0)
        except InsufficientData:
            taus.append(None)
    summary = summary.with_columns(pl.Series("off_tau_h", taus, dtype=pl.Float64))
    return summary.join(duty, on="device_id", how="left").join(cycles, on="device_id", how="left").sort("device_id")


def cooling_time_constant(frame: pl.DataFrame, min_readings: int = 10) -> float:
    """Time constant (s) of one device from its idle periods alone: a cross-check of :func:`fit_thermal_model`,
    which uses every reading.

    While idle, ``T(t) = P(t) + c_r exp(-(t - t_r) / tau)``, with ``P`` the room's periodic response to the
    outdoor cycle and one free ``c_r`` per idle run; for each ``tau`` the rest is linear, and ``tau`` minimises the
    squared error. The first and last reading of each run are left out: the thermostat switched on them because
    noise pushed them across its band, so their noise is not centred.
    """
    if frame["device_id"].n_unique() != 1:
        raise ValueError("cooling_time_constant takes one device")
    r = runs(frame).filter(~pl.col("heating") & (pl.col("n") >= min_readings))
    if r.height < 4:
        raise InsufficientData("need at least four idle periods")
    idle = (
        frame.join_asof(r.select("start", "end", "run").sort("start"), left_on="ts", right_on="start")
        .filter((pl.col("ts") > pl.col("start")) & (pl.col("ts") < pl.col("end")))
        .filter(pl.col("ts") < pl.col("ts").max().over("run"))
        .sort("ts")
    )
    t, y = idle["t"].to_numpy(), idle["temperature"].to_numpy()
    chunk = idle["run"].rank("dense").to_numpy().astype(np.int64) - 1
    log_tau = _minimise_over_tau(lambda lt: _separable_fit(math.exp(lt), t, y, chunk)[0])
    return math.exp(log_tau)


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


# --- Thermal model ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThermalModel:
    """A fitted first-order model of one room: time constant, heater gain and the daily outdoor cycle."""

    device_id: str
    tau_s: float
    gain_c_per_s: float
    ambient_mean_c: float
    ambient_sin_c: float
    ambient_cos_c: float
    rmse_c: float
    n_readings: int
    hold_fraction: float = 1.0
    """Share of the interval before a reading that shows a switch during which the old heater state still held:
    1 when the reported state holds until the next reading, about 0.5 when switches fall anywhere in between."""
    start: datetime | None = None
    end: datetime | None = None

    @property
    def tau_h(self) -> float:
        """Time constant in hours."""
        return self.tau_s / 3600.0

    @property
    def gain_c_per_h(self) -> float:
        """Heater gain in °C per hour (rate of warming the heater alone adds)."""
        return self.gain_c_per_s * 3600.0

    @property
    def ambient_amplitude_c(self) -> float:
        """Amplitude of the daily outdoor cycle (°C)."""
        return math.hypot(self.ambient_sin_c, self.ambient_cos_c)

    @property
    def heater_lift_c(self) -> float:
        """How far above the outdoor temperature the heater alone can hold the room (g * tau, °C)."""
        return self.gain_c_per_s * self.tau_s

    def ambient_at(self, t: float | np.ndarray) -> float | np.ndarray:
        """Outdoor temperature the model assumes at epoch seconds ``t``."""
        return self.ambient_mean_c + self.ambient_sin_c * np.sin(OMEGA * t) + self.ambient_cos_c * np.cos(OMEGA * t)

    def _particular(self, t: float | np.ndarray, u: float | np.ndarray) -> float | np.ndarray:
        # periodic solution of the ODE for a constant heater state: the daily cycle damped and delayed by the room
        return _particular(t, u, self.tau_s, self.gain_c_per_s, self.ambient_mean_c, self.ambient_sin_c,
                           self.ambient_cos_c)

    def simulate(self, t: np.ndarray, u: np.ndarray, temp0: float) -> np.ndarray:
        """Temperatures at times ``t`` (epoch s) starting from ``temp0`` with heater states ``u`` per reading."""
        u = np.asarray(u, float)
        if len(u) > 1:  # heater share of each interval: the old state for hold_fraction, then the new one
            u = np.append(self.hold_fraction * u[:-1] + (1.0 - self.hold_fraction) * u[1:], u[-1])
        return _simulate(np.asarray(t, float), u, temp0, self.tau_s, self.gain_c_per_s,
                         self.ambient_mean_c, self.ambient_sin_c, self.ambient_cos_c)

    def time_to_target(self, current_c: float, target_c: float, at: datetime | float | None = None,
                       horizon_s: float = 2 * DAY_S) -> float | None:
        """Seconds until the room reaches ``target_c`` from ``current_c`` (heater on to warm, off to cool).

        Without ``at`` the closed form with the mean outdoor temperature: ``tau * ln((T_end - T0) / (T_end - X))``
        where ``T_end`` is where the room would settle. With ``at`` (when the change happens) the exact solution
        with the daily outdoor cycle is solved for the crossing. None when the target is out of reach.
        """
        if math.isclose(current_c, target_c, abs_tol=1e-9):
            return 0.0
        u = 1.0 if target_c > current_c else 0.0
        if at is None:
            settle = self.ambient_mean_c + u * self.heater_lift_c
            ratio = (settle - current_c) / (settle - target_c)
            if (settle - target_c) * (target_c - current_c) <= 0 or ratio <= 0:
                return None
            return self.tau_s * math.log(ratio)
        t0 = at.timestamp() if isinstance(at, datetime) else float(at)
        sign = 1.0 if u else -1.0

        def excess(dt_s: float) -> float:
            p0 = self._particular(t0, u)
            temp = self._particular(t0 + dt_s, u) + (current_c - p0) * math.exp(-dt_s / self.tau_s)
            return sign * (temp - target_c)

        step = min(600.0, self.tau_s / 20)
        grid = np.arange(step, horizon_s + step, step)
        values = np.array([excess(s) for s in grid])
        hits = np.nonzero(values >= 0)[0]
        if hits.size == 0:
            return None
        hi = float(grid[hits[0]])
        lo = 0.0 if hits[0] == 0 else float(grid[hits[0] - 1])
        return float(brentq(excess, lo, hi, xtol=1.0))

    def nowcast(self, frame: pl.DataFrame, at: datetime, window_s: float = 600.0) -> float | None:
        """The room temperature at ``at`` from the readings of the ``window_s`` before it (one device).

        The model is run over the window with the recorded heater states and its starting temperature fitted to
        the readings, which averages the sensor noise without lagging behind a warming or cooling room. The window
        is short because a reading only shows that the heater switched since the previous one, not when: every
        switch inside the window adds its timing error to the estimate, and a heater holding its band switches
        every few minutes. None when the window holds fewer than five readings or a gap.
        """
        t_at = at.timestamp()
        win = frame.filter((pl.col("t") >= t_at - window_s) & (pl.col("t") < t_at))
        if win.height < 5 or win["segment"].n_unique() != 1:
            return None
        t = np.append(win["t"].to_numpy(), t_at)
        u = win["u"].to_numpy().astype(float)
        u = np.append(u, u[-1])  # up to ``at`` the heater holds its last reported state
        forced = self.simulate(t, u, 0.0)  # from 0 °C: the start temperature only adds start * decay
        decay = np.exp(-(t - t[0]) / self.tau_s)
        y = win["temperature"].to_numpy()
        start = float((decay[:-1] @ (y - forced[:-1])) / (decay[:-1] @ decay[:-1]))
        return float(forced[-1] + start * decay[-1])

    def as_row(self) -> dict[str, Any]:
        """Plain dict with the derived constants too, for tables."""
        row = asdict(self)
        row.update(tau_h=self.tau_h, gain_c_per_h=self.gain_c_per_h, ambient_amplitude_c=self.ambient_amplitude_c,
                   heater_lift_c=self.heater_lift_c)
        return row


def _particular(t: float | np.ndarray, u: float | np.ndarray, tau: float, gain: float, m: float, a: float,
                b: float) -> float | np.ndarray:
    wt = OMEGA * tau
    den = 1.0 + wt * wt
    amp_sin = (a + b * wt) / den
    amp_cos = (b - a * wt) / den
    return m + gain * tau * u + amp_sin * np.sin(OMEGA * t) + amp_cos * np.cos(OMEGA * t)


_CHUNK_TAUS = 200.0  # exp(±200) stays well inside float64, so a chunk's cumulative form cannot overflow


def _simulate(t: np.ndarray, u: np.ndarray, temp0: float, tau: float, gain: float, m: float, a: float,
              b: float) -> np.ndarray:
    """Exact solution reading by reading: ``T[k+1] - P_u(t[k+1]) = (T[k] - P_u(t[k])) * exp(-dt/tau)``
    with ``u = u[k]`` held over the step and ``P_u`` the periodic solution. Vectorised via cumulative sums."""
    n = len(t)
    out = np.empty(n)
    out[0] = temp0
    if n == 1:
        return out
    decay = np.exp(-np.diff(t) / tau)
    # T[k+1] = decay[k] * T[k] + c[k]
    c = _particular(t[1:], u[:-1], tau, gain, m, a, b) - decay * _particular(t[:-1], u[:-1], tau, gain, m, a, b)
    start = 0
    while start < n - 1:
        # largest chunk whose span stays under _CHUNK_TAUS time constants
        stop = int(np.searchsorted(t, t[start] + _CHUNK_TAUS * tau, side="right"))
        stop = max(min(stop, n), start + 2)
        span = t[start:stop] - t[start]
        e = np.exp(-span / tau)  # e[i] = prod of decay over steps start..start+i-1
        acc = np.concatenate([[0.0], np.cumsum(c[start:stop - 1] / e[1:])])
        out[start:stop] = e * (out[start] + acc)
        start = stop - 1
    return out


FIT_CHUNK_S = 6 * 3600.0
"""The fit gives every chunk of this length its own starting temperature (see :func:`fit_thermal_model`)."""
_TAU_BOUNDS_S = (600.0, 10 * DAY_S)


def _chunk_starts(chunk: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.diff(chunk, prepend=-1))


def _ambient_columns(t: np.ndarray, tau: float) -> list[np.ndarray]:
    """Periodic room response to a unit constant, sine and cosine outdoor temperature."""
    wt = OMEGA * tau
    den = 1.0 + wt * wt
    sin, cos = np.sin(OMEGA * t), np.cos(OMEGA * t)
    return [np.ones_like(t), (sin - wt * cos) / den, (wt * sin + cos) / den]


def _separable_fit(tau: float, t: np.ndarray, y: np.ndarray, chunk: np.ndarray,
                   inputs: Sequence[np.ndarray] = ()) -> tuple[float, np.ndarray]:
    """For a fixed ``tau`` the model is linear in everything else: solve it, return (sse, [m, a, b, *inputs]).

    Within a chunk the free starting temperature adds ``c * exp(-(t - t0) / tau)``; that direction is projected out
    of every column chunk by chunk (Frisch-Waugh), which also absorbs how each input's response began.
    """
    starts = _chunk_starts(chunk)
    decay = np.exp(-(t - t[starts][chunk]) / tau)
    cols = _ambient_columns(t, tau) + list(inputs)
    x = np.column_stack([*cols, y])
    dd = np.add.reduceat(decay * decay, starts)
    dx = np.add.reduceat(decay[:, None] * x, starts, axis=0)
    proj = x - decay[:, None] * (dx / dd[:, None])[chunk]
    coef, *_ = np.linalg.lstsq(proj[:, :-1], proj[:, -1], rcond=None)
    resid = proj[:, -1] - proj[:, :-1] @ coef
    return float(resid @ resid), coef


def _minimise_over_tau(sse: Any) -> float:
    """The log time constant minimising ``sse(log_tau)``: a coarse grid, then Brent's method around the best."""
    grid = np.linspace(math.log(_TAU_BOUNDS_S[0]), math.log(_TAU_BOUNDS_S[1]), 48)
    values = [sse(g) for g in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    return float(minimize_scalar(sse, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5}).x)


def fit_thermal_model(frame: pl.DataFrame, device_id: str | None = None, min_readings: int = 30,
                      chunk_s: float = FIT_CHUNK_S) -> ThermalModel:
    """Fit ``tau``, heater gain and the daily outdoor cycle of one device by least squares (output error).

    The model is simulated over every reading and compared with the measured temperature. Each ``chunk_s`` of
    readings (and each segment after a gap) gets its own free starting temperature, so small errors in the heater's
    switching times (a reading shows the state at that moment, not exactly when it switched) do not accumulate over
    days. For a fixed ``tau`` the problem is linear (variable projection); ``tau`` is found by a 1-D search.
    """
    if device_id is not None:
        frame = frame.filter(pl.col("device_id") == device_id)
    ids = frame["device_id"].unique().to_list()
    if len(ids) != 1:
        raise ValueError(f"fit one device at a time (got {ids})")
    used = frame.with_columns(pl.len().over("segment").alias("_n")).filter(pl.col("_n") >= min_readings)
    if used.height < min_readings:
        raise InsufficientData(f"{ids[0]}: {used.height} readings in usable segments")
    u = used["u"].to_numpy().astype(float)
    if u.min() == u.max():
        raise InsufficientData(f"{ids[0]}: the heater never changed state, gain and time constant are not separable")
    t, y = used["t"].to_numpy(), used["temperature"].to_numpy()
    segment = used["segment"].to_numpy()
    seg_start = _chunk_starts(segment)
    seg_of_row = np.searchsorted(seg_start, np.arange(len(t)), side="right") - 1
    chunk_in_seg = np.floor((t - t[seg_start][seg_of_row]) / chunk_s).astype(np.int64)
    chunk = np.unique(np.column_stack([seg_of_row, chunk_in_seg]), axis=0, return_inverse=True)[1].ravel()
    seg_bounds = [*seg_start.tolist(), len(t)]

    # the heater state of the next reading, for the share of each interval after a switch
    u_next = np.concatenate([np.append(u[a + 1:b], u[b - 1]) for a, b in itertools.pairwise(seg_bounds)])

    def gain_columns(tau: float) -> list[np.ndarray]:
        # responses to each reading's state, and to the next reading's state, held over the interval at 1 °C/h,
        # from rest at each segment start (the chunk terms absorb the rest)
        return [
            np.concatenate([_simulate(t[a:b], v[a:b], 0.0, tau, 1.0 / 3600.0, 0.0, 0.0, 0.0)
                            for a, b in itertools.pairwise(seg_bounds)])
            for v in (u, u_next)
        ]

    def sse(log_tau: float) -> float:
        tau = math.exp(log_tau)
        return _separable_fit(tau, t, y, chunk, gain_columns(tau))[0]

    tau = math.exp(_minimise_over_tau(sse))
    total, (m, a, b, g_held, g_next) = _separable_fit(tau, t, y, chunk, gain_columns(tau))
    gain = g_held + g_next
    return ThermalModel(
        device_id=ids[0],
        tau_s=tau,
        gain_c_per_s=float(gain) / 3600.0,
        hold_fraction=float(np.clip(g_held / gain, 0.0, 1.0)) if gain > 0 else 1.0,
        ambient_mean_c=float(m),
        ambient_sin_c=float(a),
        ambient_cos_c=float(b),
        rmse_c=math.sqrt(total / len(t)),
        n_readings=len(t),
        start=frame["ts"].min(),  # type: ignore[arg-type]
        end=frame["ts"].max(),  # type: ignore[arg-type]
    )


def fit_thermal_models(frame: pl.DataFrame, min_readings: int = 30) -> dict[str, ThermalModel]:
    """:func:`fit_thermal_model` for every device with enough data (devices without are left out)."""
    models = {}
    for device_id in sorted(frame["device_id"].unique().to_list()):
        try:
            models[device_id] = fit_thermal_model(frame, device_id, min_readings)
        except InsufficientData:
            continue
    return models


def models_table(models: dict[str, ThermalModel] | Sequence[ThermalModel]) -> pl.DataFrame:
    """The fitted constants of several devices as a table (hours and °C/h for reading)."""
    items = models.values() if isinstance(models, dict) else models
    rows = [m.as_row() for m in items]
    cols = ["device_id", "tau_h", "gain_c_per_h", "heater_lift_c", "ambient_mean_c", "ambient_amplitude_c",
            "rmse_c", "n_readings"]
    if not rows:
        return pl.DataFrame(schema={c: (pl.String if c == "device_id" else pl.Float64) for c in cols})
    return pl.DataFrame(rows).select(cols)


# --- Setpoint changes and time to target -----------------------------------------------------------------------


def setpoint_changes(frame: pl.DataFrame) -> pl.DataFrame:
    """Readings at which the target changed: device_id, ts, old_target, new_target."""
    return (
        frame.with_columns(pl.col("target_temp").shift(1).over("device_id").alias("old_target"))
        .filter(pl.col("old_target").is_not_null() & (pl.col("old_target") != pl.col("target_temp")))
        .select("device_id", "ts", "old_target", pl.col("target_temp").alias("new_target"))
    )


def observed_time_to_target(frame: pl.DataFrame, device_id: str, since: datetime, target_c: float,
                            smooth: int = 5) -> float | None:
    """Seconds from ``since`` until the device's temperature reached ``target_c``; None if it did not before the
    target changed again or the data ended.

    Only the approach counts: the readings until the heater first switches back (OFF after warming, ON after
    cooling). The thermostat then holds the room around the target, the middle of its band, so later readings
    hover about the target and would drag any smoothed curve back onto it: its crossing can come many minutes
    after the room's. Within the approach the crossing is read off a straight line fitted to the ``smooth``
    readings either side of it, which averages the sensor noise without the lag or edge bias of a rolling mean.
    """
    dev = frame.filter(pl.col("device_id") == device_id)
    before = dev.filter(pl.col("ts") < since).tail(smooth)
    after = dev.filter(pl.col("ts") >= since)
    if before.is_empty() or after.is_empty():
        return None
    rising = target_c > float(before["temperature"].mean())  # type: ignore[arg-type]
    changed = after.filter(pl.col("target_temp") != target_c)
    if not changed.is_empty():
        after = after.filter(pl.col("ts") < changed["ts"][0])
    if after.is_empty():
        return None
    end = _approach_end(after["heating"].to_numpy(), rising)
    t, y = after["t"].to_numpy()[:end], after["temperature"].to_numpy()[:end]
    switched_back = end < after.height
    sign = 1.0 if rising else -1.0
    rough = pl.Series(y).rolling_mean(smooth, center=True, min_samples=1).to_numpy()
    hit = np.flatnonzero(sign * (rough - target_c) >= 0)
    if hit.size == 0 and not switched_back:
        return None
    # A heater that switched back saw the room past the target (at its band's far edge) even if the smoothed
    # readings of the approach never got there: the crossing is then at the approach's end.
    crossing = _line_crossing(t, y, int(hit[0]) if hit.size else len(t) - 1, smooth, target_c, sign)
    if switched_back:
        crossing = min(crossing, float(after["t"][end]))
    return max(0.0, crossing - since.timestamp())


def _approach_end(heating: np.ndarray, rising: bool) -> int:
    """Index of the first reading after the approach: the heater took the state the change calls for (ON to
    warm, OFF to cool; minimum on/off times may delay that) and then left it. ``len(heating)`` if it never did."""
    took = np.flatnonzero(heating == rising)
    if took.size == 0:
        return len(heating)
    left = np.flatnonzero(heating[took[0]:] != rising)
    return int(took[0] + left[0]) if left.size else len(heating)


def _line_crossing(t: np.ndarray, y: np.ndarray, k: int, half: int, target_c: float, sign: float) -> float:
    """Where a straight line through the ``2 * half + 1`` readings around ``k`` (shifted to stay inside ``t``)
    meets ``target_c``, re-centred on that crossing once. ``t[k]`` if the line runs the wrong way (noise drowns a
    very slow approach)."""
    width = min(len(t), 2 * half + 1)
    crossing = float(t[k])
    for _ in range(2):
        lo = int(np.clip(k - half, 0, len(t) - width))
        slope = _slope(t[lo:lo + width], y[lo:lo + width], None, None) if width >= 3 else None
        if slope is None or sign * slope <= 0:
            return float(t[k])
        crossing = float(t[lo:lo + width].mean() + (target_c - y[lo:lo + width].mean()) / slope)
        k = int(np.clip(np.searchsorted(t, crossing), 0, len(t) - 1))
    return crossing


def temperature_before(frame: pl.DataFrame, device_id: str, at: datetime, readings: int = 5) -> float | None:
    """A device's temperature at ``at``, from a straight line through its last ``readings`` readings before it
    (less noisy than one reading and, unlike a mean, not behind while the room warms or cools)."""
    last = frame.filter((pl.col("device_id") == device_id) & (pl.col("ts") < at)).tail(readings)
    if last.is_empty():
        return None
    t, y = last["t"].to_numpy(), last["temperature"].to_numpy()
    if len(t) < 3:
        return float(y.mean())
    slope = _slope(t, y, None, None) or 0.0
    return float(y.mean() + slope * (at.timestamp() - t.mean()))


def validate_time_to_target(frame: pl.DataFrame, models: dict[str, ThermalModel],
                            changes: pl.DataFrame | None = None) -> pl.DataFrame:
    """Predicted versus observed time to reach each new target after setpoint changes.

    Columns: device_id, ts, old_target, new_target, start_temp, predicted_s, observed_s, error_pct. Changes the
    room could not be seen to reach (target changed again first, or out of reach) have null observed_s.
    """
    changes = setpoint_changes(frame) if changes is None else changes
    rows = []
    for device_id, ts, old, new in changes.select("device_id", "ts", "old_target", "new_target").iter_rows():
        model = models.get(device_id)
        if model is None:
            continue
        start_temp = model.nowcast(frame.filter(pl.col("device_id") == device_id), ts)
        if start_temp is None:
            start_temp = temperature_before(frame, device_id, ts)
        if start_temp is None:
            continue
        predicted = model.time_to_target(start_temp, new, at=ts)
        observed = observed_time_to_target(frame, device_id, ts, new)
        rows.append({"device_id": device_id, "ts": ts, "old_target": old, "new_target": new,
                     "start_temp": start_temp, "predicted_s": predicted, "observed_s": observed})
    schema = {"device_id": pl.String, "ts": pl.Datetime("us", "UTC"), "old_target": pl.Float64,
              "new_target": pl.Float64, "start_temp": pl.Float64, "predicted_s": pl.Float64,
              "observed_s": pl.Float64}
    out = pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
    return out.with_columns(
        ((pl.col("predicted_s") - pl.col("observed_s")) / pl.col("observed_s") * 100.0).alias("error_pct")
    )


def describe_time_to_target(model: ThermalModel, current_c: float, target_c: float,
                            at: datetime | None = None) -> str:
    """A short sentence for the app, e.g. ``about 42 minutes to reach 22.5 °C``."""
    seconds = model.time_to_target(current_c, target_c, at=at)
    if seconds is None:
        return f"{target_c:g} °C is out of reach at current outdoor conditions"
    minutes = max(0, round(seconds / 60.0))
    if minutes < 1:
        return f"already at {target_c:g} °C"
    if minutes >= 120:
        return f"about {minutes / 60:.1f} hours to reach {target_c:g} °C"
    return f"about {minutes} minutes to reach {target_c:g} °C"


# --- Figures ---------------------------------------------------------------------------------------------------


def fig_temperature(frame: pl.DataFrame, device_id: str, model: ThermalModel | None = None) -> go.Figure:
    """Temperature, target and heater state of one device; with ``model``, its simulated temperature too."""
    dev = frame.filter(pl.col("device_id") == device_id)
    fig = go.Figure()
    fig.add_scatter(x=dev["ts"], y=dev["temperature"], name="temperature", mode="lines")
    fig.add_scatter(x=dev["ts"], y=dev["target_temp"], name="target", mode="lines", line={"shape": "hv",
                                                                                             "dash": "dot"})
    fig.add_scatter(x=dev["ts"], y=dev["u"], name="heating", mode="lines", line={"shape": "hv", "width": 0.5},
                    fill="tozeroy", yaxis="y2", opacity=0.3)
    if model is not None:
        sim = []
        for _, seg in dev.group_by("segment", maintain_order=True):
            sim.append(model.simulate(seg["t"].to_numpy(), seg["u"].to_numpy(), float(seg["temperature"][0])))
        fig.add_scatter(x=dev["ts"], y=np.concatenate(sim) if sim else [], name="model", mode="lines")
        fig.add_scatter(x=dev["ts"], y=model.ambient_at(dev["t"].to_numpy()), name="outdoor (model)", mode="lines")
    fig.update_layout(title=f"{device_id}: temperature and heating", yaxis_title="°C",
                      yaxis2={"overlaying": "y", "side": "right", "range": [0, 4], "showticklabels": False},
                      hovermode="x unified")
    return fig


def fig_duty_cycle(duty: pl.DataFrame) -> go.Figure:
    """Duty cycle per bucket (output of :func:`duty_cycle`), one bar series per device."""
    fig = go.Figure()
    for device_id in sorted(duty["device_id"].unique().to_list()):
        dev = duty.filter(pl.col("device_id") == device_id)
        fig.add_bar(x=dev["bucket"], y=dev["duty"] * 100.0, name=device_id)
    fig.update_layout(title="Heater duty cycle", yaxis_title="% of time on", barmode="group")
    return fig


def fig_daily_profile(profile: pl.DataFrame) -> go.Figure:
    """Mean duty cycle by hour of day per device (output of :func:`daily_profile`)."""
    fig = go.Figure()
    for device_id in sorted(profile["device_id"].unique().to_list()):
        dev = profile.filter(pl.col("device_id") == device_id)
        fig.add_scatter(x=dev["hour"], y=dev["duty"] * 100.0, name=f"{device_id} duty", mode="lines+markers")
    fig.update_layout(title="Average day", xaxis_title="hour of day", yaxis_title="% of time on")
    return fig


def fig_cycles(cycles: pl.DataFrame) -> go.Figure:
    """Heating cycles: duration against temperature rise, short cycles marked."""
    fig = go.Figure()
    for device_id in sorted(cycles["device_id"].unique().to_list()):
        dev = cycles.filter(pl.col("device_id") == device_id)
        fig.add_scatter(x=dev["duration_s"] / 60.0, y=dev["temp_rise"], mode="markers", name=device_id,
                        marker={"symbol": ["x" if s else "circle" for s in dev["short"]]})
    fig.update_layout(title="Heating cycles", xaxis_title="duration (min)", yaxis_title="temperature rise (°C)")
    return fig


def fig_time_to_target(validation: pl.DataFrame) -> go.Figure:
    """Predicted against observed time to target (output of :func:`validate_time_to_target`)."""
    ok = validation.filter(pl.col("observed_s").is_not_null() & pl.col("predicted_s").is_not_null())
    fig = go.Figure()
    for device_id in sorted(ok["device_id"].unique().to_list()):
        dev = ok.filter(pl.col("device_id") == device_id)
        fig.add_scatter(x=dev["observed_s"] / 60.0, y=dev["predicted_s"] / 60.0, mode="markers", name=device_id)
    top = float(max(ok["observed_s"].max() or 0, ok["predicted_s"].max() or 0)) / 60.0  # type: ignore[arg-type]
    fig.add_scatter(x=[0, top], y=[0, top], mode="lines", name="perfect", line={"dash": "dash"})
    fig.update_layout(title="Time to target: predicted vs observed", xaxis_title="observed (min)",
                      yaxis_title="predicted (min)")
    return fig
