"""Time to target: observed crossings after setpoint changes, and the model's prediction checked against them.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from thermolog.analytics.cycles import _slope
from thermolog.analytics.thermal import ThermalModel


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
