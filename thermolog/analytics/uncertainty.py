"""How sure the thermal fit is: an interval for every fitted constant, and whether the window identifies it.

- Time constant: profile likelihood. For each ``tau`` the rest of the model is solved exactly, so the sum of
  squared errors ``S(tau)`` is cheap; the interval is where ``n_eff * ln(S(tau) / S_min)`` stays below the
  chi-square quantile. ``n_eff`` is the number of readings divided by how much the residuals' block sums vary
  beyond what independent noise would give (the residuals of a room model are strongly autocorrelated: treating
  10,000 readings as 10,000 independent errors gives intervals ten times too narrow).
- The linear constants (heater gain, outdoor mean and daily swing) and the heater lift: least-squares standard
  errors inflated by the same factor, at every ``tau`` of its interval; their interval is the union.
- A constant counts as identified (shown as a number) when its interval is finite and narrow enough
  (``IDENTIFIED``); otherwise the page says "not enough data". The rule and the inflation were chosen on the
  simulator's truth: ``bench/insights_coverage.py`` prints how often a shown number's interval holds the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import brentq
from scipy.stats import chi2, norm

from thermolog.analytics.data import InsufficientData
from thermolog.analytics.thermal import TAU_BOUNDS_S, FitProblem, ThermalModel, device_window, fit_problem, model_from

LEVEL = 0.99
"""Nominal confidence of the statistical part of the intervals (their real coverage is measured by the bench)."""
BLOCKS_S = (3600.0, 2 * 3600.0, 4 * 3600.0, 8 * 3600.0, 12 * 3600.0)
"""Residual block lengths for the autocorrelation inflation; the largest inflation over those that give at least
``MIN_BLOCKS`` blocks counts."""
MIN_BLOCKS = 4
MODEL_ERROR = {"tau_h": 0.12, "gain_c_per_h": 0.05, "heater_lift_c": 0.12, "ambient_mean_c": 1.0,
               "ambient_amplitude_c": 0.5}
"""The first-order model's own error, which no amount of data removes (the heater switches between readings, the
real room is not exactly first order): relative for the first three, °C for the outdoor ones. Every interval
is at least this wide on each side."""
TAU_GRID = 9
"""Values of ``tau`` across its interval at which the linear constants' intervals are combined."""

IDENTIFIED = {
    "tau_h": ("ratio", 2.0),
    "gain_c_per_h": ("ratio", 2.0),
    "heater_lift_c": ("ratio", 2.0),
    "ambient_mean_c": ("width", 4.0),
    "ambient_amplitude_c": ("width", 4.0),
}
"""Per constant, when its interval is narrow enough to show the number: ``ratio`` high / low at most this,
``width`` high - low at most this (°C)."""
CONSTANTS = tuple(IDENTIFIED)
MIN_SPAN_S = 20 * 3600.0
"""A window shorter than about a day cannot tell the room's own response from the daily outdoor cycle: nothing is
shown as a number below this span of readings."""


@dataclass(frozen=True)
class Estimate:
    """A fitted constant, its interval, and whether the window identifies it (else: "not enough data")."""

    value: float
    low: float
    high: float
    identified: bool

    def covers(self, truth: float) -> bool:
        """Whether ``truth`` lies inside the interval."""
        return self.low <= truth <= self.high


@dataclass(frozen=True)
class UncertainFit:
    """The model and an Estimate per constant in ``CONSTANTS``."""

    model: ThermalModel
    estimates: dict[str, Estimate]
    n_eff: float


def inflation(residuals: np.ndarray, t: np.ndarray, blocks_s: tuple[float, ...] = BLOCKS_S) -> float:
    """How much more block sums of the residuals vary than independent errors would (at least 1), the largest
    over the block lengths that fit ``MIN_BLOCKS`` times; every reading counts as one block's worth when none do."""
    variance = float(residuals @ residuals) / len(residuals)
    found = []
    for block_s in blocks_s:
        block = np.floor((t - t[0]) / block_s).astype(np.int64)
        sums, counts = np.bincount(block, weights=residuals), np.bincount(block)
        keep = counts > 0
        if variance > 0 and keep.sum() >= MIN_BLOCKS:
            found.append(float((sums[keep] ** 2).sum() / (counts[keep].sum() * variance)))
    return max(1.0, *found) if found else float(len(residuals))


def _tau_interval(problem: FitProblem, tau: float, sse_min: float, n_eff: float) -> tuple[float, float]:
    """The profile-likelihood interval of ``tau`` (s); an end at the search bound means unbounded there."""
    limit = chi2.ppf(LEVEL, 1)

    def excess(log_tau: float) -> float:
        return n_eff * math.log(problem.solve(math.exp(log_tau))[0] / sse_min) - limit

    ends = []
    for bound in (math.log(TAU_BOUNDS_S[0]), math.log(TAU_BOUNDS_S[1])):
        step, inner = 0.05 * (1 if bound > math.log(tau) else -1), math.log(tau)
        outer = inner + step
        while (outer < bound) if step > 0 else (outer > bound):
            if excess(outer) > 0:
                break
            inner, step = outer, step * 1.6
            outer = inner + step
        else:
            ends.append(math.inf if step > 0 else 0.0)
            continue
        ends.append(math.exp(brentq(excess, inner, outer, xtol=1e-3)))
    return ends[0], ends[1]


def _linear_intervals(problem: FitProblem, taus: np.ndarray, k: float) -> dict[str, tuple[float, float]]:
    """Union over ``taus`` of each linear constant's ± z standard errors (inflated by ``k``)."""
    z = norm.ppf(0.5 + LEVEL / 2)
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    for tau in taus:
        design, target = problem.design(float(tau))
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        resid = target - design @ coef
        dof = max(1, len(target) - design.shape[1] - int(problem.chunk.max()) - 1)
        cov = np.linalg.pinv(design.T @ design) * float(resid @ resid) / dof * k
        gain_vec = np.array([0, 0, 0, 3600.0, 3600.0]) / 3600.0
        amp_sd = math.sqrt(max(np.linalg.eigvalsh(cov[1:3, 1:3]).max(), 0.0))
        gain, gain_sd = float(coef[3] + coef[4]), math.sqrt(max(gain_vec @ cov @ gain_vec, 0.0))
        spans = {
            "gain_c_per_h": (gain - z * gain_sd, gain + z * gain_sd),
            "heater_lift_c": ((gain - z * gain_sd) * tau / 3600.0, (gain + z * gain_sd) * tau / 3600.0),
            "ambient_mean_c": (coef[0] - z * math.sqrt(cov[0, 0]), coef[0] + z * math.sqrt(cov[0, 0])),
            "ambient_amplitude_c": (max(0.0, math.hypot(coef[1], coef[2]) - z * amp_sd),
                                    math.hypot(coef[1], coef[2]) + z * amp_sd),
        }
        for name, (lo, hi) in spans.items():
            lows[name] = min(lows.get(name, math.inf), float(lo))
            highs[name] = max(highs.get(name, -math.inf), float(hi))
    return {name: (lows[name], highs[name]) for name in lows}


def _with_model_error(name: str, value: float, low: float, high: float) -> tuple[float, float]:
    margin = MODEL_ERROR[name] * (abs(value) if IDENTIFIED[name][0] == "ratio" else 1.0)
    return min(low, value - margin), max(high, value + margin)


def _identified(name: str, low: float, high: float) -> bool:
    kind, limit = IDENTIFIED[name]
    if not (math.isfinite(low) and math.isfinite(high)):
        return False
    if kind == "ratio":
        return low > 0 and high / low <= limit
    return high - low <= limit


def fit_with_uncertainty(frame: pl.DataFrame, device_id: str | None = None, min_readings: int = 30) -> UncertainFit:
    """Fit one device (as :func:`fit_thermal_model`) and give every constant its interval; raises
    InsufficientData like the fit."""
    problem = fit_problem(frame, device_id, min_readings)
    tau = problem.best_tau()
    sse, coef = problem.solve(tau)
    span = frame.filter(pl.col("device_id") == problem.device_id)["ts"]
    model = model_from(problem, tau, sse, coef, span.min(), span.max())  # type: ignore[arg-type]
    design, target = problem.design(tau)
    k = inflation(target - design @ coef, problem.t)
    n_eff = len(problem.t) / k
    lo, hi = _tau_interval(problem, tau, sse, n_eff)
    bounded = lo > 0 and math.isfinite(hi)
    long_enough = float(problem.t[-1] - problem.t[0]) >= MIN_SPAN_S
    taus = np.exp(np.linspace(math.log(lo), math.log(hi), TAU_GRID)) if bounded else np.array([tau])
    linear = _linear_intervals(problem, np.append(taus, tau), k)
    values = model.as_row()
    intervals = {"tau_h": (lo / 3600.0, hi / 3600.0), **linear}
    estimates = {}
    for name in CONSTANTS:
        low, high = _with_model_error(name, float(values[name]), *intervals[name])
        if not bounded:
            low, high = -math.inf, math.inf
        estimates[name] = Estimate(float(values[name]), low, high,
                                   bounded and long_enough and _identified(name, low, high))
    return UncertainFit(model, estimates, n_eff)


TIME_TO_TARGET_NEEDS = ("tau_h", "heater_lift_c", "ambient_mean_c")
"""The constants a time-to-target estimate rests on: it is a number only when all of them are identified."""


def identifies_time_to_target(fit: UncertainFit) -> bool:
    """Whether the fit may give a time-to-target estimate as a number."""
    return all(fit.estimates[name].identified for name in TIME_TO_TARGET_NEEDS)


def fit_with_uncertainty_for_device(device_id: str, end: datetime | None = None, days: float = 7.0,
                                    db_path: Path | str | None = None,
                                    min_interval_s: float = 30.0) -> UncertainFit | None:
    """:func:`fit_with_uncertainty` on a device's last ``days`` (as :func:`model_for_device` reads them); None
    when nothing can be fitted."""
    readings = device_window(device_id, end, days, db_path, min_interval_s)
    try:
        return fit_with_uncertainty(readings, device_id) if readings is not None and readings.height else None
    except InsufficientData:
        return None


def uncertainty_table(fits: dict[str, UncertainFit]) -> pl.DataFrame:
    """Per device and constant: ``{name}_low``, ``{name}_high`` and ``{name}_identified``."""
    schema: dict[str, Any] = {"device_id": pl.String}
    for name in CONSTANTS:
        schema.update({f"{name}_low": pl.Float64, f"{name}_high": pl.Float64, f"{name}_identified": pl.Boolean})
    rows = []
    for device_id, fit in fits.items():
        row: dict[str, Any] = {"device_id": device_id}
        for name, estimate in fit.estimates.items():
            row.update({f"{name}_low": estimate.low, f"{name}_high": estimate.high,
                        f"{name}_identified": estimate.identified})
        rows.append(row)
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
