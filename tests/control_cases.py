"""Control-logic cases shared by CPython and real MicroPython (tests/thermolog/test_control.py runs both).

Plain functions with asserts, no pytest: ``run_all(Thermostat)`` returns the names of the cases that passed.
Written in the subset MicroPython supports.
"""


def case_heats_below_band(Thermostat):
    t = Thermostat(target=21.0, hysteresis=1.0, min_on_s=0, min_off_s=0)
    assert t.update(0, 20.4) is True
    assert t.heating is True


def case_holds_state_inside_band(Thermostat):
    t = Thermostat(target=21.0, hysteresis=1.0, min_on_s=0, min_off_s=0)
    assert t.update(0, 21.0) is False
    t.update(1, 20.5)
    assert t.update(2, 21.2) is True


def case_stops_above_band(Thermostat):
    t = Thermostat(target=21.0, hysteresis=1.0, min_on_s=0, min_off_s=0)
    t.update(0, 20.0)
    assert t.update(1, 21.5) is False


def case_minimum_on_time(Thermostat):
    t = Thermostat(target=21.0, hysteresis=1.0, min_on_s=60, min_off_s=0)
    t.update(0, 20.0)
    assert t.update(30, 22.0) is True
    assert t.reason == "minimum on time"
    assert t.update(61, 22.0) is False


def case_minimum_off_time(Thermostat):
    t = Thermostat(target=21.0, hysteresis=1.0, min_on_s=0, min_off_s=60)
    t.update(0, 20.0)
    t.update(10, 22.0)
    assert t.update(20, 19.0) is False
    assert t.reason == "minimum off time"
    assert t.update(71, 19.0) is True


def case_missing_reading_forces_off(Thermostat):
    t = Thermostat(target=21.0, hysteresis=1.0, min_on_s=600, min_off_s=0)
    t.update(0, 18.0)
    assert t.update(5, None) is False
    assert t.reason == "no sensor reading"


def case_stale_reading_forces_off(Thermostat):
    t = Thermostat(target=21.0, hysteresis=1.0, min_on_s=600, min_off_s=0, stale_after_s=120)
    t.update(0, 18.0, 0)
    assert t.update(100, 18.0, 0) is True
    assert t.update(121, 18.0, 0) is False
    assert t.reason == "sensor reading stale"


def case_target_range_and_step(Thermostat):
    t = Thermostat(target=21.0)
    for bad in (4.5, 35.5, 21.3, "22", True, float("nan")):
        try:
            t.set_target(bad)
        except ValueError:
            pass
        else:
            raise AssertionError("accepted bad target %r" % (bad,))
    assert t.target == 21.0
    assert t.set_target(22.5) == 22.5


def case_new_target_takes_effect(Thermostat):
    t = Thermostat(target=20.0, hysteresis=0.5, min_on_s=0, min_off_s=0)
    assert t.update(0, 20.5) is False
    t.set_target(23.0)
    assert t.update(1, 20.5) is True


def case_force_off_ignores_minimum_on_time(Thermostat):
    t = Thermostat(target=21.0, hysteresis=1.0, min_on_s=600, min_off_s=60)
    t.update(0, 18.0)
    assert t.force_off(5) is False
    assert t.heating is False and t.reason == "mode off"
    assert t.update(30, 18.0) is False  # the minimum off time still protects the relay afterwards
    assert t.update(66, 18.0) is True


CASES = [
    case_heats_below_band,
    case_holds_state_inside_band,
    case_stops_above_band,
    case_minimum_on_time,
    case_minimum_off_time,
    case_missing_reading_forces_off,
    case_stale_reading_forces_off,
    case_target_range_and_step,
    case_new_target_takes_effect,
    case_force_off_ignores_minimum_on_time,
]


def run_all(Thermostat):
    passed = []
    for case in CASES:
        case(Thermostat)
        passed.append(case.__name__)
    return passed
