"""Heater output: a relay (or an LED standing in for one) on ``machine.Pin`` objects passed in."""


class Relay:
    """Drives the heater relay; the pin is written only when the state changes, and starts OFF."""

    def __init__(self, pin, active_high=True, led=None):
        self._pin = pin
        self._led = led
        self._active_high = active_high
        self.on = False
        self.switches = 0
        self._write(False)

    def _write(self, on):
        self._pin.value(1 if on == self._active_high else 0)
        if self._led is not None:
            self._led.value(1 if on else 0)

    def set(self, on):
        """Switch the heater; returns True when the state changed."""
        on = bool(on)
        if on == self.on:
            return False
        self._write(on)
        self.on = on
        self.switches += 1
        return True
