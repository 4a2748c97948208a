"""The simulator's thermal model, sensor, schedule and device logic (no broker needed)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import orjson
import pytest
from scipy.integrate import solve_ivp

from simulator.device import SimDevice
from simulator.model import DeviceParams, Sensor, ThermalModel
from simulator.schedule import schedule_between
from thermolog import contract
from thermolog.cli_types import device_ids, parse_duration

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
FLAT = replace(DeviceParams.draw("sim-01", 1), outdoor_amplitude_c=0.0, outdoor_mean_c=5.0, tau_s=4 * 3600.0,
               heater_gain_c_per_h=6.0, initial_temp_c=5.0)


def closed_form(params: DeviceParams, temp0: float, dt: float, heating: bool) -> float:
    """T(t) for constant outdoor temperature: exponential approach to T_out + gain * tau."""
    equilibrium = params.outdoor_mean_c + (params.heater_gain_c_per_h / 3600.0 * params.tau_s if heating else 0.0)
    return equilibrium + (temp0 - equilibrium) * math.exp(-dt / params.tau_s)


@pytest.mark.parametrize("heating", [True, False])
def test_exponential_approach_matches_closed_form(heating: bool) -> None:
    """With a flat outdoor temperature the model follows the closed form at every step size."""
    params = replace(FLAT, initial_temp_c=18.0)
    for dt in (1.0, 60.0, 3600.0, 5 * 86400.0):
        model = ThermalModel(params, T0)
        assert model.advance(T0 + dt, heating) == pytest.approx(closed_form(params, 18.0, dt, heating), abs=1e-9)


def test_step_size_does_not_change_the_result() -> None:
    """Six hours in one step or in 21,600 one-second steps end at the same temperature."""
    params = DeviceParams.draw("sim-02", 3)
    one = ThermalModel(params, T0)
    one.advance(T0 + 6 * 3600, True)
    many = ThermalModel(params, T0)
    for k in range(1, 6 * 3600 + 1):
        many.advance(T0 + k, True)
    assert many.temperature == pytest.approx(one.temperature, abs=1e-7)


def test_heater_raises_temperature_at_its_gain() -> None:
    """Starting at outdoor equilibrium, the heater adds heater_gain_c_per_h per hour (minus the growing loss)."""
    model = ThermalModel(FLAT, T0)
    dt = 60.0
    rise = model.advance(T0 + dt, True) - FLAT.initial_temp_c
    expected = FLAT.heater_gain_c_per_h * dt / 3600.0
    assert rise == pytest.approx(expected, rel=dt / FLAT.tau_s)
    off = ThermalModel(FLAT, T0)
    assert off.advance(T0 + dt, False) == pytest.approx(FLAT.initial_temp_c, abs=1e-12)


def test_daily_cycle_matches_numerical_integration() -> None:
    """Exact steps agree with a tight ODE solve of dT/dt = (T_out(t) - T)/tau + G*h over two days."""
    params = DeviceParams.draw("sim-03", 5)
    model = ThermalModel(params, T0)
    gain = params.heater_gain_c_per_h / 3600.0
    temp = params.initial_temp_c
    for hour in range(48):
        heating = hour % 3 == 0  # on one hour in three
        a, b = T0 + hour * 3600.0, T0 + (hour + 1) * 3600.0
        sol = solve_ivp(lambda t, y, h=heating: [(model.outdoor(t) - y[0]) / params.tau_s + gain * h],
                        (a, b), [temp], rtol=1e-10, atol=1e-10)
        temp = sol.y[0, -1]
        assert model.advance(b, heating) == pytest.approx(temp, abs=1e-6)
    assert model.outdoor(T0 + params.outdoor_peak_hour_utc * 3600) == pytest.approx(
        params.outdoor_mean_c + params.outdoor_amplitude_c)


def test_parameters_are_reproducible_by_seed_and_recorded() -> None:
    """Same seed and id give the same parameters; other seeds or ids differ; the record round-trips."""
    a = DeviceParams.draw("sim-01", 7)
    assert a == DeviceParams.draw("sim-01", 7)
    assert a != DeviceParams.draw("sim-01", 8)
    assert a != DeviceParams.draw("sim-02", 7)
    assert DeviceParams(**orjson.loads(orjson.dumps(a.to_dict()))) == a
    state = SimDevice(a, 7, T0).state()
    assert state.model_extra["sim"] == {"seed": 7, **a.to_dict()}
    assert contract.parse_state(contract.dumps(state)).target_temp == a.initial_target_c


def test_every_room_can_reach_its_setpoints() -> None:
    """Outdoors stays below every scheduled setpoint and full heater power lifts each room above the highest
    one, so every device has heating cycles."""
    for device_id in device_ids(200, "sim"):
        p = DeviceParams.draw(device_id, 1)
        lift = p.heater_gain_c_per_h / 3600.0 * p.tau_s
        assert p.outdoor_mean_c + p.outdoor_amplitude_c < 16.0
        assert p.outdoor_mean_c - p.outdoor_amplitude_c + lift >= 24.0


def test_humidity_is_bounded_and_falls_as_the_room_warms() -> None:
    """Relative humidity stays in 0..100 and drops when temperature rises (constant moisture)."""
    sensor = Sensor(replace(FLAT, humidity_noise_pct=0.0), 1)
    values = [sensor.humidity(temp, T0) for temp in np.linspace(-20, 60, 81)]
    assert all(0.0 <= v <= 100.0 for v in values)
    assert all(b < a for a, b in zip(values, values[1:], strict=False) if a < 100.0)
    assert values[0] == 100.0  # saturated when very cold


def test_sensor_noise_has_the_recorded_spread() -> None:
    """Sensor readings scatter around the truth with the recorded standard deviation."""
    sensor = Sensor(FLAT, 1)
    errors = np.array([sensor.temperature(20.0) - 20.0 for _ in range(20_000)])
    assert abs(errors.mean()) < 0.01
    assert errors.std() == pytest.approx(FLAT.noise_c, rel=0.05)


def test_device_cycles_the_heater_around_its_target() -> None:
    """Driven by thermolog.control, a day of simulation has heating cycles and stays near the setpoint."""
    params = replace(DeviceParams.draw("sim-01", 1), initial_target_c=21.0)
    device = SimDevice(params, 1, T0)
    temps, heating = [], []
    for k in range(1, 24 * 60 + 1):
        device.advance(T0 + 60.0 * k)
        reading = device.reading()
        temps.append(reading.temperature)
        heating.append(reading.heating == "ON")
    switches = sum(1 for a, b in zip(heating, heating[1:], strict=False) if a != b)
    assert switches >= 10
    settled = np.array(temps[180:])
    assert abs(settled.mean() - 21.0) < 0.5
    assert settled.min() > 20.0 and settled.max() < 22.0


def test_schedule_changes_are_applied_and_recorded() -> None:
    """Scheduled setpoints are deterministic, land at their times and are recorded as applied changes."""
    start, end = T0, T0 + 3 * 86400
    changes = schedule_between("sim-01", 1, start, end)
    assert changes == schedule_between("sim-01", 1, start, end)
    assert changes != schedule_between("sim-01", 2, start, end)
    assert len(changes) >= 9 and all(start < c.t <= end for c in changes)
    device = SimDevice(DeviceParams.draw("sim-01", 1), 1, start)
    device.schedule = list(changes)
    device.advance(end)
    assert [(c.t, c.target_c) for c in device.changes] == [(c.t, c.target_c) for c in changes]
    assert device.thermostat.target == changes[-1].target_c


def _cmd(request_id: str, target: object) -> bytes:
    return orjson.dumps({"request_id": request_id, "target_temp": target})


def test_device_command_validation_and_replay() -> None:
    """Valid targets apply once; out-of-range and malformed ones are refused with a reason; replays are not."""
    device = SimDevice(DeviceParams.draw("sim-01", 1), 1, T0)
    ack, changed = device.handle_command(_cmd("a1", 23.5))
    assert (ack.ok, ack.target_temp, changed) == (True, 23.5, True)
    ack, changed = device.handle_command(_cmd("a2", 99))
    assert not ack.ok and "outside" in ack.error and not changed
    ack, changed = device.handle_command(_cmd("a3", 20.25))
    assert not ack.ok and "multiple" in ack.error
    ack, changed = device.handle_command(b'{"request_id": "a4", "target_temp": "warm"}')
    assert not ack.ok and ack.request_id == "a4" and "target_temp" in ack.error
    assert device.handle_command(b"not json") == (None, False)
    device.handle_command(_cmd("a5", 19.0))
    replay, changed = device.handle_command(_cmd("a1", 23.5))
    assert (replay.request_id, replay.ok, replay.target_temp, changed) == ("a1", True, 23.5, False)
    assert device.thermostat.target == 19.0
    assert [c.request_id for c in device.changes] == ["a1", "a5"]


def test_durations_and_ids() -> None:
    """--backfill accepts 90s/30m/12h/14d; ids are zero-padded and valid device ids."""
    assert [parse_duration(x) for x in ("90s", "30m", "12h", "14d", "0", "1.5h")] == [
        90, 1800, 43200, 14 * 86400, 0, 5400]
    with pytest.raises(Exception, match="duration"):
        parse_duration("soon")
    assert device_ids(3, "sim") == ["sim-01", "sim-02", "sim-03"]
    assert device_ids(1000, "sim")[-1] == "sim-1000" and device_ids(1000, "sim")[0] == "sim-0001"
