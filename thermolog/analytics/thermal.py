"""A fitted first-order thermal model per device, its predictions, and heating and cooling rates.

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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import brentq, minimize_scalar

from thermolog import reader
from thermolog.analytics.cycles import duty_cycle, heating_cycles, runs
from thermolog.analytics.data import DAY_S, InsufficientData, load_telemetry

OMEGA = 2.0 * math.pi / DAY_S
"""Angular frequency of the daily outdoor cycle (rad/s)."""


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
TAU_BOUNDS_S = (600.0, 10 * DAY_S)


def _chunk_starts(chunk: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.diff(chunk, prepend=-1))


def _ambient_columns(t: np.ndarray, tau: float) -> list[np.ndarray]:
    """Periodic room response to a unit constant, sine and cosine outdoor temperature."""
    wt = OMEGA * tau
    den = 1.0 + wt * wt
    sin, cos = np.sin(OMEGA * t), np.cos(OMEGA * t)
    return [np.ones_like(t), (sin - wt * cos) / den, (wt * sin + cos) / den]


def separable_design(tau: float, t: np.ndarray, y: np.ndarray, chunk: np.ndarray,
                     inputs: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, np.ndarray]:
    """For a fixed ``tau`` the model is linear in everything else: the design (columns m, a, b, *inputs) and the
    target, with each chunk's free starting temperature projected out.

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
    return proj[:, :-1], proj[:, -1]


def _separable_fit(tau: float, t: np.ndarray, y: np.ndarray, chunk: np.ndarray,
                   inputs: Sequence[np.ndarray] = ()) -> tuple[float, np.ndarray]:
    """Solve the linear part for a fixed ``tau`` (:func:`separable_design`): (sse, [m, a, b, *inputs])."""
    design, target = separable_design(tau, t, y, chunk, inputs)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = target - design @ coef
    return float(resid @ resid), coef


def minimise_over_tau(sse: Any) -> float:
    """The log time constant minimising ``sse(log_tau)``: a coarse grid, then Brent's method around the best."""
    grid = np.linspace(math.log(TAU_BOUNDS_S[0]), math.log(TAU_BOUNDS_S[1]), 48)
    values = [sse(g) for g in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    return float(minimize_scalar(sse, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5}).x)


@dataclass(frozen=True)
class FitProblem:
    """One device's readings set up for the fit: times, temperatures, chunks and heater inputs."""

    device_id: str
    t: np.ndarray
    y: np.ndarray
    chunk: np.ndarray
    u: np.ndarray
    u_next: np.ndarray
    """The heater state of the next reading, for the share of each interval after a switch."""
    seg_bounds: tuple[int, ...]

    def gain_columns(self, tau: float) -> list[np.ndarray]:
        """Responses to each reading's state, and to the next reading's state, held over the interval at 1 °C/h,
        from rest at each segment start (the chunk terms absorb the rest)."""
        return [
            np.concatenate([_simulate(self.t[a:b], v[a:b], 0.0, tau, 1.0 / 3600.0, 0.0, 0.0, 0.0)
                            for a, b in itertools.pairwise(self.seg_bounds)])
            for v in (self.u, self.u_next)
        ]

    def design(self, tau: float) -> tuple[np.ndarray, np.ndarray]:
        """:func:`separable_design` with the heater inputs: columns m, a, b, gain held, gain next."""
        return separable_design(tau, self.t, self.y, self.chunk, self.gain_columns(tau))

    def solve(self, tau: float) -> tuple[float, np.ndarray]:
        """(sse, [m, a, b, gain held, gain next]) for a fixed ``tau``."""
        return _separable_fit(tau, self.t, self.y, self.chunk, self.gain_columns(tau))

    def best_tau(self) -> float:
        """The least-squares time constant (s)."""
        return math.exp(minimise_over_tau(lambda log_tau: self.solve(math.exp(log_tau))[0]))


def fit_problem(frame: pl.DataFrame, device_id: str | None = None, min_readings: int = 30,
                chunk_s: float = FIT_CHUNK_S) -> FitProblem:
    """Set one device's readings up for the fit; raises InsufficientData when they cannot identify a model."""
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
    seg_bounds = (*seg_start.tolist(), len(t))
    u_next = np.concatenate([np.append(u[a + 1:b], u[b - 1]) for a, b in itertools.pairwise(seg_bounds)])
    return FitProblem(ids[0], t, y, chunk, u, u_next, seg_bounds)


def fit_thermal_model(frame: pl.DataFrame, device_id: str | None = None, min_readings: int = 30,
                      chunk_s: float = FIT_CHUNK_S) -> ThermalModel:
    """Fit ``tau``, heater gain and the daily outdoor cycle of one device by least squares (output error).

    The model is simulated over every reading and compared with the measured temperature. Each ``chunk_s`` of
    readings (and each segment after a gap) gets its own free starting temperature, so small errors in the heater's
    switching times (a reading shows the state at that moment, not exactly when it switched) do not accumulate over
    days. For a fixed ``tau`` the problem is linear (variable projection); ``tau`` is found by a 1-D search.
    """
    problem = fit_problem(frame, device_id, min_readings, chunk_s)
    tau = problem.best_tau()
    total, coef = problem.solve(tau)
    span = frame.filter(pl.col("device_id") == problem.device_id)["ts"]
    return model_from(problem, tau, total, coef, span.min(), span.max())  # type: ignore[arg-type]


def model_from(problem: FitProblem, tau: float, sse: float, coef: np.ndarray, start: datetime | None,
               end: datetime | None) -> ThermalModel:
    """The ThermalModel for a solved ``tau`` and its linear coefficients [m, a, b, gain held, gain next]."""
    m, a, b, g_held, g_next = coef
    gain = g_held + g_next
    return ThermalModel(
        device_id=problem.device_id,
        tau_s=tau,
        gain_c_per_s=float(gain) / 3600.0,
        hold_fraction=float(np.clip(g_held / gain, 0.0, 1.0)) if gain > 0 else 1.0,
        ambient_mean_c=float(m),
        ambient_sin_c=float(a),
        ambient_cos_c=float(b),
        rmse_c=math.sqrt(sse / len(problem.t)),
        n_readings=len(problem.t),
        start=start,
        end=end,
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


def model_for_device(device_id: str, end: datetime | None = None, days: float = 7.0,
                     db_path: Path | str | None = None, min_interval_s: float = 30.0) -> ThermalModel | None:
    """The thermal model of one device fitted on its last ``days`` before ``end`` (default: its newest reading);
    None when there is too little data or the heater never switched."""
    readings = device_window(device_id, end, days, db_path, min_interval_s)
    try:
        return fit_thermal_model(readings, device_id) if readings is not None and readings.height else None
    except InsufficientData:
        return None


def device_window(device_id: str, end: datetime | None, days: float, db_path: Path | str | None,
                  min_interval_s: float) -> pl.DataFrame | None:
    """One device's readings over the ``days`` before ``end`` (default: just after its newest reading); None when
    it has none."""
    if end is None:
        newest = reader.query("SELECT max(ts) AS ts FROM telemetry WHERE device_id = ?", [device_id], db_path)
        if newest.is_empty() or newest["ts"][0] is None:
            return None
        end = newest["ts"][0] + timedelta(seconds=1)
    start = end - timedelta(days=days)  # type: ignore[operator]
    return load_telemetry([device_id], start, end, db_path, min_interval_s)


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
    log_tau = minimise_over_tau(lambda lt: _separable_fit(math.exp(lt), t, y, chunk)[0])
    return math.exp(log_tau)


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
