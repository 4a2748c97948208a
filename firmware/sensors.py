"""Temperature/humidity sensor drivers: DHT22 (MicroPython's ``dht``), AHT20 and SHT31 over I2C.

Each driver has ``read() -> (temperature_c, humidity_pct)`` and raises OSError when the sensor does not answer,
is busy, or sends data whose CRC does not match; the device then keeps its last good reading until it goes stale
(the control logic switches the heater off). Buses and pins are passed in, so the I2C drivers run against fakes.
"""

AHT20_ADDRESS = 0x38
SHT31_ADDRESS = 0x44

TEMP_RANGE = (-40.0, 85.0)
"""What these sensors can measure (°C); anything outside is a wiring or bus fault."""


def crc8(data, init=0xFF, poly=0x31):
    """CRC-8 as used by the AHT20 and SHT31 (polynomial x^8 + x^5 + x^4 + 1, initial 0xFF)."""
    crc = init
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def check_reading(temperature, humidity):
    """Return the pair if plausible, else raise OSError (a stuck bus often reads as 0xFFFF or 0x0000)."""
    if temperature != temperature or not TEMP_RANGE[0] <= temperature <= TEMP_RANGE[1]:
        raise OSError("temperature %r outside the sensor's range" % temperature)
    if humidity is not None and (humidity != humidity or not 0.0 <= humidity <= 100.0):
        raise OSError("humidity %r outside 0..100 %%" % humidity)
    return temperature, humidity


class DHT22:
    """A DHT22/AM2302 through MicroPython's ``dht.DHT22(pin)`` (which checks the checksum itself)."""

    def __init__(self, dht_sensor):
        self._dht = dht_sensor

    def read(self):
        """Measure; raises OSError (timeout or checksum) from the ``dht`` module."""
        self._dht.measure()
        return check_reading(self._dht.temperature(), self._dht.humidity())


class AHT20:
    """An AHT20 over I2C: trigger a measurement, wait 80 ms, read 6 data bytes and a CRC."""

    def __init__(self, i2c, sleep_ms, address=AHT20_ADDRESS):
        self._i2c = i2c
        self._sleep_ms = sleep_ms
        self.address = address
        self._ready = False

    def _init(self):
        status = self._i2c.readfrom(self.address, 1)[0]
        if not status & 0x08:  # not calibrated: load the calibration coefficients
            self._i2c.writeto(self.address, b"\xbe\x08\x00")
            self._sleep_ms(10)
        self._ready = True

    def read(self):
        """Measure; raises OSError when busy, on a CRC mismatch, or when the bus fails."""
        if not self._ready:
            self._init()
        self._i2c.writeto(self.address, b"\xac\x33\x00")
        self._sleep_ms(80)
        data = self._i2c.readfrom(self.address, 7)
        if data[0] & 0x80:
            raise OSError("AHT20 still busy")
        if crc8(data[:6]) != data[6]:
            self._ready = False
            raise OSError("AHT20 CRC mismatch")
        raw_h = (data[1] << 12) | (data[2] << 4) | (data[3] >> 4)
        raw_t = ((data[3] & 0x0F) << 16) | (data[4] << 8) | data[5]
        return check_reading(raw_t * 200.0 / 1048576 - 50.0, raw_h * 100.0 / 1048576)


class SHT31:
    """An SHT3x over I2C: single-shot high-repeatability measurement, each word followed by its CRC."""

    def __init__(self, i2c, sleep_ms, address=SHT31_ADDRESS):
        self._i2c = i2c
        self._sleep_ms = sleep_ms
        self.address = address

    def read(self):
        """Measure; raises OSError on a CRC mismatch or when the bus fails."""
        self._i2c.writeto(self.address, b"\x24\x00")
        self._sleep_ms(16)
        data = self._i2c.readfrom(self.address, 6)
        if crc8(data[0:2]) != data[2] or crc8(data[3:5]) != data[5]:
            raise OSError("SHT31 CRC mismatch")
        raw_t = (data[0] << 8) | data[1]
        raw_h = (data[3] << 8) | data[4]
        return check_reading(-45.0 + 175.0 * raw_t / 65535, 100.0 * raw_h / 65535)


def make_sensor(kind, pin=None, dht_module=None, i2c=None, sleep_ms=None, address=None):
    """The driver for ``kind`` (``dht22``, ``aht20`` or ``sht31``) on the given pin or bus."""
    if kind == "dht22":
        return DHT22(dht_module.DHT22(pin))
    if kind == "aht20":
        return AHT20(i2c, sleep_ms, address or AHT20_ADDRESS)
    if kind == "sht31":
        return SHT31(i2c, sleep_ms, address or SHT31_ADDRESS)
    raise ValueError("unknown sensor kind %r" % kind)
