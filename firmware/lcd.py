"""HD44780 character LCD behind a PCF8574 I2C backpack, and the thermostat's two-line screen.

Backpack wiring (the common one): P0=RS, P1=RW, P2=E, P3=backlight, P4..P7=D4..D7; the LCD runs in 4-bit mode.
"""

RS = 0x01
ENABLE = 0x04
BACKLIGHT = 0x08
ROW_OFFSETS = (0x00, 0x40, 0x14, 0x54)


class HD44780:
    """Minimal 4-bit HD44780 driver over a PCF8574: clear, move, write text."""

    def __init__(self, i2c, address=0x27, cols=16, rows=2, sleep_ms=None):
        self._i2c = i2c
        self.address = address
        self.cols = cols
        self.rows = rows
        self._sleep_ms = sleep_ms or (lambda ms: None)
        self._buf = bytearray(1)
        self._sleep_ms(50)
        for _ in range(3):  # reset into 8-bit mode three times, then switch to 4-bit (datasheet figure 24)
            self._nibble(0x30)
            self._sleep_ms(5)
        self._nibble(0x20)
        self.command(0x28)  # 4-bit, two lines, 5x8 font
        self.command(0x0C)  # display on, no cursor
        self.command(0x06)  # entry mode: move right
        self.clear()

    def _out(self, value):
        self._buf[0] = value | BACKLIGHT
        self._i2c.writeto(self.address, self._buf)

    def _nibble(self, value, rs=0):
        self._out((value & 0xF0) | rs | ENABLE)
        self._out((value & 0xF0) | rs)

    def _byte(self, value, rs=0):
        self._nibble(value & 0xF0, rs)
        self._nibble((value << 4) & 0xF0, rs)

    def command(self, value):
        """Send one instruction byte."""
        self._byte(value)

    def clear(self):
        """Blank the screen and home the cursor."""
        self.command(0x01)
        self._sleep_ms(2)

    def move_to(self, col, row):
        """Put the cursor at ``col``, ``row`` (0-based)."""
        self.command(0x80 | (ROW_OFFSETS[row] + col))

    def write(self, text):
        """Write ASCII text at the cursor (other characters show as ``?``)."""
        for char in text:
            code = ord(char)
            self._byte(code if 32 <= code < 127 else 63, RS)


def screen(cols, temperature, humidity, target, heating, mode_off, online):
    """The two lines shown: temperature and humidity, then target, heating state and connection."""
    if temperature is None:
        top = "Sensor error"
    elif humidity is None:
        top = "%.1fC" % temperature
    else:
        top = "%.1fC %d%%RH" % (temperature, int(humidity + 0.5))
    state = "OFF" if mode_off else ("HEAT" if heating else "idle")
    bottom = "Set %.1f %s" % (target, state)
    if not online:
        bottom += " !"
    return top[:cols], bottom[:cols]


class Display:
    """Shows the thermostat screen on an HD44780 and writes only lines that changed (I2C is slow)."""

    def __init__(self, lcd):
        self._lcd = lcd
        self._lines = [None, None]

    def show(self, temperature, humidity, target, heating, mode_off, online):
        """Update the screen; returns True when anything was written."""
        lines = screen(self._lcd.cols, temperature, humidity, target, heating, mode_off, online)
        changed = False
        for row in (0, 1):
            if lines[row] != self._lines[row]:
                self._lcd.move_to(0, row)
                self._lcd.write(lines[row] + " " * (self._lcd.cols - len(lines[row])))
                self._lines[row] = lines[row]
                changed = True
        return changed
