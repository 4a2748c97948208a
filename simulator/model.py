"""First-order thermal model of a heated room, its sensor, and the per-device parameters that drive both.

The room follows ``dT/dt = (T_out(t) - T) / tau + G * heating`` where the outdoor temperature has a daily cosine
cycle and ``G`` is the heater gain (°C per hour while ON, expressed per second inside). For a heater held constant
over a step the equation has an exact solution (steady periodic part plus an exponential transient), so the model
is equally accurate at a 1 s or a 1 h step: no numerical integration error to tune away.

Parameters are drawn deterministically from ``(seed, device_id)`` and recorded (JSON file and the retained ``state``
payload), so analytics fitted on the telemetry can be checked against the truth.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

DAY_S = 86_400.0
OMEGA = 2 * math.pi / DAY_S
"""Angular frequency of the daily outdoor cycle (rad/s)."""

HUMIDITY_REF_C = 20.0
"""Indoor temperature at which ``humidity_ref_pct`` is the relative humidity."""


@dataclass(frozen=True)
class DeviceParams:
    """The true physical and sensor parameters of one simulated thermostat's room."""

    device_id: str
    tau_s: float
    """Time constant of heat loss towards the outdoor temperature (s)."""
    heater_gain_c_per_h: float
    """Rate of temperature rise the heater adds while ON (°C/h)."""
    outdoor_mean_c: float
    outdoor_amplitude_c: float
    outdoor_peak_hour_utc: float
    """Hour of the day (UTC) at which the outdoor temperature peaks."""
    noise_c: float
    """Standard deviation of the Gaussian temperature sensor noise (°C)."""
    initial_temp_c: float
    initial_target_c: float
    hysteresis_c: float
    min_on_s: float
    min_off_s: float
    humidity_ref_pct: float
    """Relative humidity at 20 °C; it falls as the room warms (constant absolute humidity)."""
    humidity_noise_pct: float

    @classmethod
    def draw(cls, device_id: str, seed: int) -> DeviceParams:
        """Parameters for ``device_id``, reproducible from ``seed`` and independent of the other devices."""
        rng = random.Random(f"thermolog-sim:{seed}:{device_id}:params")
        tau_h = rng.uniform(2.5, 8.0)
        mean = rng.uniform(0.0, 10.0)
        amplitude = rng.uniform(2.0, 5.0)
        # Choose the heater's full-power lift (gain * tau) so the room reaches 24 °C even on the coldest night,
        # and derive the gain from it: every device then has heating cycles at every scheduled setpoint.
        lift_c = 24.0 - (mean - amplitude) + rng.uniform(1.0, 8.0)
        return cls(
            device_id=device_id,
            tau_s=round(tau_h * 3600.0, 1),
            heater_gain_c_per_h=round(lift_c / tau_h, 3),
            outdoor_mean_c=round(mean, 2),
            outdoor_amplitude_c=round(amplitude, 2),
            outdoor_peak_hour_utc=round(rng.uniform(13.0, 16.0), 2),
            noise_c=round(rng.uniform(0.02, 0.08), 3),
            initial_temp_c=round(rng.uniform(17.0, 21.0), 2),
            initial_target_c=rng.choice([20.0, 20.5, 21.0, 21.5, 22.0]),
            hysteresis_c=rng.choice([0.4, 0.5, 0.6]),
            min_on_s=60.0,
            min_off_s=60.0,
            humidity_ref_pct=round(rng.uniform(40.0, 55.0), 1),
            humidity_noise_pct=0.3,
        )

    def to_dict(self) -> dict[str, float | str]:
        """The parameters as a JSON-ready dict."""
        return asdict(self)


class ThermalModel:
    """Exact integration of the room temperature for piecewise-constant heater input."""

    def __init__(self, params: DeviceParams, t0: float, temperature: float | None = None) -> None:
        self.params = params
        self.t = float(t0)
        self.temperature = params.initial_temp_c if temperature is None else float(temperature)
        self._gain_per_s = params.heater_gain_c_per_h / 3600.0
        wt = OMEGA * params.tau_s
        # Steady periodic response to the cosine forcing: amplitude damped and phase lagged by the room's inertia.
        self._cos_k = params.outdoor_amplitude_c / (1.0 + wt * wt)
        self._sin_k = wt * self._cos_k
        self._peak_s = params.outdoor_peak_hour_utc * 3600.0

    def outdoor(self, t: float) -> float:
        """Outdoor temperature at epoch seconds ``t`` (°C)."""
        p = self.params
        return p.outdoor_mean_c + p.outdoor_amplitude_c * math.cos(OMEGA * (t - self._peak_s))

    def steady(self, t: float, heating: bool) -> float:
        """The periodic solution the room converges to with the heater held ON or OFF (°C)."""
        theta = OMEGA * (t - self._peak_s)
        base = self.params.outdoor_mean_c + (self._gain_per_s * self.params.tau_s if heating else 0.0)
        return base + self._cos_k * math.cos(theta) + self._sin_k * math.sin(theta)

    def advance(self, t: float, heating: bool) -> float:
        """Move the model to time ``t`` with the heater held in ``heating``; returns the new temperature."""
        if t < self.t:
            raise ValueError(f"cannot go back in time ({t} < {self.t})")
        decay = math.exp(-(t - self.t) / self.params.tau_s)
        self.temperature = self.steady(t, heating) + (self.temperature - self.steady(self.t, heating)) * decay
        self.t = float(t)
        return self.temperature


def saturation_vapour_pressure(temp_c: float) -> float:
    """Magnus formula over water (hPa)."""
    return 6.112 * math.exp(17.62 * temp_c / (243.12 + temp_c))


class Sensor:
    """A temperature/humidity sensor with Gaussian noise, seeded per device."""

    def __init__(self, params: DeviceParams, seed: int) -> None:
        self.params = params
        self.rng = random.Random(f"thermolog-sim:{seed}:{params.device_id}:noise")
        self._es_ref = saturation_vapour_pressure(HUMIDITY_REF_C)

    def temperature(self, true_c: float) -> float:
        """A noisy reading of the true temperature (°C)."""
        return true_c + self.rng.gauss(0.0, self.params.noise_c)

    def humidity(self, true_c: float, t: float) -> float:
        """Relative humidity (%): constant moisture content (slow daily swing), so it falls as the room warms."""
        moisture = self.params.humidity_ref_pct * (1.0 + 0.08 * math.sin(OMEGA * t))
        rh = moisture * self._es_ref / saturation_vapour_pressure(true_c)
        rh += self.rng.gauss(0.0, self.params.humidity_noise_pct)
        return min(100.0, max(0.0, rh))
