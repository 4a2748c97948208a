"""Wi-Fi station with retries that never blocks the control loop: ``poll(now)`` once per loop."""


class Wifi:
    """Starts a connection, gives it ``timeout_s`` to come up, and otherwise retries after ``retry_s``.

    ``wlan`` is ``network.WLAN(network.STA_IF)`` on the board (already active) or a fake.
    """

    def __init__(self, wlan, ssid, password, timeout_s=20, retry_s=10, log=None):
        self._wlan = wlan
        self._ssid = ssid
        self._password = password
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._log = log or (lambda msg: None)
        self._started = None  # monotonic time the current attempt began
        self._next_try = 0.0
        self.failures = 0
        self.connected = False

    def poll(self, now):
        """Returns True while connected; starts or times out a connection attempt otherwise."""
        if self._wlan.isconnected():
            if not self.connected:
                self._log("wifi: connected to %s" % self._ssid)
            self.connected = True
            self._started = None
            return True
        if self.connected:
            self._log("wifi: connection lost")
            self.connected = False
        if self._started is not None:
            if now - self._started < self.timeout_s:
                return False
            self.failures += 1
            self._log("wifi: no connection to %s after %ss (attempt %d)" % (self._ssid, self.timeout_s,
                                                                             self.failures))
            self._started = None
            self._next_try = now + self.retry_s
            try:
                self._wlan.disconnect()
            except OSError:
                pass
        if now >= self._next_try:
            try:
                self._wlan.connect(self._ssid, self._password)
                self._started = now
            except OSError as exc:
                self._log("wifi: connect failed: %s" % exc)
                self._next_try = now + self.retry_s
        return False
