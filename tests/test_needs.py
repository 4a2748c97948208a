"""Markers say what a test needs (tests/needs.py): derived from fixtures, enforced where a service starts,
registered in pyproject.toml and documented in docs/testing.md."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests import conftest, needs

ROOT = Path(__file__).resolve().parent.parent


def registered_markers() -> set[str]:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in options["addopts"]
    return {line.split(":", 1)[0] for line in options["markers"]}


def test_a_test_without_the_marker_fails_where_it_starts_the_service() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"not marked 'broker'.*@pytest\.mark\.broker"):
        needs.require("broker", "a private Mosquitto")


@pytest.mark.broker
def test_a_marked_test_passes_the_check() -> None:
    needs.require("broker", "a private Mosquitto")  # raises if the check ignored the marker


class FakeItem:
    def __init__(self, fixturenames: list[str]) -> None:
        self.fixturenames = fixturenames
        self.markers: list[str] = []

    def add_marker(self, marker: str) -> None:
        self.markers.append(marker)


def test_fixtures_give_their_markers_at_collection() -> None:
    broker_user = FakeItem(["tmp_path", "thermolog_env", "system_broker"])
    history_user = FakeItem(["simulated_history", "roomy_broker"])
    plain = FakeItem(["tmp_path"])
    conftest.pytest_collection_modifyitems([broker_user, history_user, plain])  # type: ignore[list-item]
    assert broker_user.markers == ["broker"]
    assert sorted(history_user.markers) == ["broker", "slow"]
    assert plain.markers == []


def test_markers_are_registered_documented_and_used_by_the_fast_loop() -> None:
    markers = registered_markers()
    assert set(needs.FIXTURE_NEEDS.values()) <= markers
    fast = re.search(r'^FAST_MARKERS := (.+)$', (ROOT / "Makefile").read_text(), re.M).group(1)
    assert set(re.findall(r"not (\w+)", fast)) <= markers
    guide = (ROOT / "docs" / "testing.md").read_text()
    for marker in markers:
        assert f"| `{marker}` |" in guide, f"docs/testing.md does not describe the {marker!r} marker"
