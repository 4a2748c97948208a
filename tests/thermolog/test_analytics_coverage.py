"""The Insights intervals are honest: on a fixed set of simulated rooms and window lengths, the interval of every
constant shown as a number holds the simulator's true value in at least 90 % of cases, and windows too short to
identify the model show no numbers at all (the full study: ``python -m bench.insights_coverage``)."""

from __future__ import annotations

import pytest

from bench.insights_coverage import report, study
from thermolog.analytics.uncertainty import CONSTANTS

pytestmark = pytest.mark.slow  # seconds per test: outside the fast loop (docs/testing.md)

SEEDS = [1, 2, 3]
WINDOWS_D = (0.25, 1.0, 3.0)


def test_shown_numbers_hold_the_truth_in_90_percent_of_cases() -> None:
    """Pooled over constants and windows, >= 90 % coverage; each constant >= 80 % on its own; a six-hour window
    shows nothing, and three-day windows show most constants (so the rule is not "never show a number")."""
    tally = study(SEEDS, WINDOWS_D)
    table = report(tally, WINDOWS_D)
    print(table)
    assert tally.coverage >= 0.90, table
    for name in CONSTANTS:
        shown = sum(tally.shown[(w, name)] for w in WINDOWS_D)
        covered = sum(tally.covered[(w, name)] for w in WINDOWS_D)
        assert shown and covered / shown >= 0.80, (name, table)
    assert tally.shown_share(0.25) == 0.0, table
    assert tally.shown_share(3.0) >= 0.8, table
