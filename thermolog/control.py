"""Thermostat control logic: hysteresis band, minimum on/off times, heater off on a missing or stale reading.

This file runs unchanged on CPython and MicroPython (the firmware ships it as ``control.py``), so it imports
nothing and avoids annotations, f-strings with ``=`` and dataclasses. Time is passed in by the caller as
monotonic seconds, which keeps it pure and testable.
"""

# Reasons reported with each decision, so the device, simulator and app can show why the heater is in its state.
REASON_BELOW_BAND = "below band"
REASON_ABOVE_BAND = "above band"
REASON_IN_BAND = "in band"
REASON_MIN_ON = "minimum on time"
REASON_MIN_OFF = "minimum off time"
REASON_NO_READING = "no sensor reading"
REASON_STALE = "sensor reading stale"
REASON_MODE_OFF = "mode off"


class Thermostat:
    """Decides whether the heater is on.

    The heater switches ON when the temperature falls to ``target - hysteresis/2`` or below and OFF when it
    rises to ``target + hysteresis/2`` or above; in between it keeps its state. A switch is delayed until the
    heater has been in its current state for ``min_on_s`` / ``min_off_s`` (relay protection), except that a
    missing reading, or one older than ``stale_after_s``, turns the heater OFF at once.
    """

    MIN_TARGET = 5.0
    MAX_TARGET = 35.0

    def __init__(self, target=21.0, hysteresis=0.5, min_on_s=60.0, min_off_s=60.0, stale_after_s=120.0,
                 min_target=None, max_target=None, step=0.5):
        self.min_target = self.MIN_TARGET if min_target is None else float(min_target)
        self.max_target = self.MAX_TARGET if max_target is None else float(max_target)
        self.step = float(step)
        if hysteresis < 0:
            raise ValueError("hysteresis must be >= 0 °C, got %s" % hysteresis)
        if min_on_s < 0 or min_off_s < 0:
            raise ValueError("minimum on/off times must be >= 0 s")
        self.hysteresis = float(hysteresis)
        self.min_on_s = float(min_on_s)
        self.min_off_s = float(min_off_s)
        self.stale_after_s = float(stale_after_s)
        self.target = self.check_target(target)
        self.heating = False
        self.reason = REASON_NO_READING
        self._since = None  # monotonic time of the last switch; None: never switched

    def check_target(self, value):
        """Return ``value`` as a float if it is a valid setpoint, else raise ValueError naming the rule."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("target must be a number in °C")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("target must be a finite number")
        if value < self.min_target or value > self.max_target:
            raise ValueError("target %s °C is outside %s..%s °C" % (value, self.min_target, self.max_target))
        steps = value / self.step
        # Tolerance of a thousandth of a degree: the ESP32's single-precision floats make 21.3 / 0.1 = 212.99998.
        if abs(steps - round(steps)) * self.step > 0.001:
            raise ValueError("target %s °C is not a multiple of %s °C" % (value, self.step))
        return value

    def set_target(self, value):
        """Change the setpoint; raises ValueError (and keeps the old one) when out of range or off-step."""
        self.target = self.check_target(value)
        return self.target

    def _switch(self, on, now, reason):
        if on != self.heating:
            self.heating = on
            self._since = now
        self.reason = reason
        return self.heating

    def _held_for(self, now):
        return None if self._since is None else now - self._since

    def force_off(self, now, reason=REASON_MODE_OFF):
        """Switch the heater OFF at once (mode off, shutdown): minimum times never delay a forced OFF."""
        return self._switch(False, now, reason)

    def update(self, now, temperature, reading_time=None):
        """Feed the latest reading; returns True when the heater should be ON.

        ``now`` and ``reading_time`` are monotonic seconds; ``temperature`` is °C or None when the sensor failed.
        """
        if temperature is None or temperature != temperature:
            return self._switch(False, now, REASON_NO_READING)
        if reading_time is not None and now - reading_time > self.stale_after_s:
            return self._switch(False, now, REASON_STALE)
        low = self.target - self.hysteresis / 2
        high = self.target + self.hysteresis / 2
        held = self._held_for(now)
        if self.heating:
            if temperature >= high:
                if held is not None and held < self.min_on_s:
                    self.reason = REASON_MIN_ON
                    return True
                return self._switch(False, now, REASON_ABOVE_BAND)
            self.reason = REASON_IN_BAND if temperature > low else REASON_BELOW_BAND
            return True
        if temperature <= low:
            if held is not None and held < self.min_off_s:
                self.reason = REASON_MIN_OFF
                return False
            return self._switch(True, now, REASON_BELOW_BAND)
        self.reason = REASON_IN_BAND if temperature < high else REASON_ABOVE_BAND
        return False


class SetpointSchedule:
    """Follows a list of setpoint change points ``(unix_seconds, target)`` the server expanded from a weekly
    program (``thermolog.schedule``), so a device keeps its program without the network.

    ``due(now)`` returns the target of the newest point at or before ``now`` once per point: a setpoint changed
    by hand afterwards holds until the next point, and loading a refreshed list whose current point is the same
    does not apply it again.
    """

    MAX_POINTS = 512
    """Points kept (the newest dropped beyond it): a week of 4 changes a day is 28."""

    def __init__(self):
        self.points = []
        self._applied = None  # (at, target) of the last point handed out by due()

    def load(self, points):
        """Replace the list; ``points`` are ``[at, target]`` pairs (any order). Raises ValueError when malformed."""
        out = []
        for point in points:
            if not isinstance(point, (list, tuple)) or len(point) != 2:
                raise ValueError("a schedule point is [unix_seconds, target]")
            at, target = point
            if isinstance(at, bool) or not isinstance(at, int):
                raise ValueError("a schedule point's time must be whole Unix seconds")
            if isinstance(target, bool) or not isinstance(target, (int, float)):
                raise ValueError("a schedule point's target must be a number")
            out.append((at, float(target)))
        out.sort()
        self.points = out[:self.MAX_POINTS]
        return len(self.points)

    def current(self, now):
        """The newest point at or before ``now`` (Unix seconds), or None."""
        found = None
        for point in self.points:
            if point[0] > now:
                break
            found = point
        return found

    def due(self, now):
        """The target to apply now, or None when nothing new is due (``now`` in Unix seconds)."""
        point = self.current(now)
        if point is None or point == self._applied:
            return None
        self._applied = point
        return point[1]

    def next_change(self, now):
        """The first point after ``now``, or None."""
        for point in self.points:
            if point[0] > now:
                return point
        return None
