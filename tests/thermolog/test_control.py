"""The control logic passes the shared cases under CPython (MicroPython: tests/firmware/test_micropython.py)."""

from __future__ import annotations

import pytest

from tests import control_cases
from thermolog.control import Thermostat


@pytest.mark.parametrize("case", control_cases.CASES, ids=lambda f: f.__name__)
def test_control_case_cpython(case) -> None:  # noqa: ANN001 - plain function from the shared cases
    """Each shared control case holds on CPython."""
    case(Thermostat)
