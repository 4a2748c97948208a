"""Time for the firmware: a monotonic clock that never wraps, NTP-synced wall time, ISO-8601 UTC strings.

Readings are stamped with monotonic time when taken and turned into wall time when published, so readings taken
before the first NTP sync (no Wi-Fi at boot) still get their true timestamps once the clock is set.
"""

UNIX_2000 = 946684800
"""Seconds from 1970-01-01 to 2000-01-01: some ports count ``time.time()`` from 2000."""


def iso_utc(unix_seconds):
    """``YYYY-MM-DDTHH:MM:SSZ`` for whole Unix seconds, independent of the port's epoch and time zone."""
    secs = int(unix_seconds)
    days, rem = divmod(secs, 86400)
    hour, rem = divmod(rem, 3600)
    minute, second = divmod(rem, 60)
    # Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), exact for the proleptic Gregorian calendar.
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (year, month, day, hour, minute, second)


class Clock:
    """Monotonic time from a wrapping millisecond tick counter, plus wall time once synced.

    ``ticks_ms``/``ticks_diff`` are ``time.ticks_ms``/``time.ticks_diff`` on the board; ``unix_ms()`` returns the
    RTC as integer Unix milliseconds and ``set_time()`` sets the RTC from NTP (``ntptime.settime``), raising on
    failure. Wall time is integer arithmetic throughout: the ESP32 port's floats are single precision, which
    cannot hold a Unix time to the second (a float32 near 1.7e9 steps by 128 s).
    """

    def __init__(self, ticks_ms, ticks_diff, unix_ms=None, set_time=None, resync_s=6 * 3600, retry_s=60):
        self._ticks_ms = ticks_ms
        self._ticks_diff = ticks_diff
        self._unix_ms = unix_ms
        self._set_time = set_time
        self.resync_s = resync_s
        self.retry_s = retry_s
        self._last = ticks_ms()
        self._mono_ms = 0
        self._offset_ms = None  # wall minus monotonic milliseconds; None until the first sync
        self._next_sync = 0.0

    def monotonic_ms(self):
        """Integer milliseconds since start; call at least every few days so the tick counter cannot wrap twice
        unseen."""
        now = self._ticks_ms()
        self._mono_ms += self._ticks_diff(now, self._last)
        self._last = now
        return self._mono_ms

    def monotonic(self):
        """Seconds since start (a float, for the control logic)."""
        return self.monotonic_ms() / 1000

    @property
    def synced(self):
        """True once wall time is known."""
        return self._offset_ms is not None

    def wall(self, mono_ms):
        """Whole Unix seconds at monotonic milliseconds ``mono_ms``, or None before the first successful sync."""
        return None if self._offset_ms is None else (self._offset_ms + mono_ms) // 1000

    def sync(self, now):
        """Set the RTC from NTP and learn the wall offset; returns True on success (never raises)."""
        if self._set_time is not None:
            try:
                self._set_time()
            except Exception:  # noqa: BLE001 - NTP over UDP fails in many ways; retry later
                self._next_sync = now + self.retry_s
                return False
        if self._unix_ms is None:
            return False
        self._offset_ms = self._unix_ms() - self.monotonic_ms()
        self._next_sync = now + self.resync_s
        return True

    def maybe_sync(self, now):
        """Sync when due (first sync, retry after a failure, or periodic resync against RTC drift)."""
        if now >= self._next_sync:
            return self.sync(now)
        return False
