"""The shared firmware cases (tests/firmware_cases.py) on CPython; tests/firmware/test_micropython.py runs them on
MicroPython."""

from __future__ import annotations

from pathlib import Path

import pytest

import firmware  # noqa: F401 - the board's flat module names

# isort: split
from tests import firmware_cases


@pytest.mark.parametrize("case", firmware_cases.CASES, ids=lambda f: f.__name__)
def test_firmware_case_cpython(case, tmp_path: Path) -> None:  # noqa: ANN001 - plain function from the cases
    """Each shared firmware case holds on CPython."""
    case(str(tmp_path))
