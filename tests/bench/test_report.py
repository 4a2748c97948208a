"""``make bench`` rewrites docs/performance.md's figures and keeps its hand-written sections."""

from __future__ import annotations

import argparse

from bench.__main__ import report_text
from bench.common import Result

RESULTS = [Result("latency", "p99 publish -> visible", 0.5, "s", "<= 2.0", True)]
ARGS = argparse.Namespace(quick=True)


def test_new_figures_replace_the_old_and_notes_are_kept() -> None:
    previous = ("# Performance\n\nMeasured long ago.\n\n| benchmark | metric |\n|---|---|\n| latency | 9.9 s |\n\n"
                "Run one benchmark alone.\n\n## Where a target is missed\n\nBecause of the reader floor.\n")
    text = report_text(RESULTS, ARGS, 12.0, previous)
    assert "| latency | p99 publish -> visible | 0.500 s | <= 2.0 | yes |  |" in text
    assert "9.9 s" not in text and "long ago" not in text
    assert text.endswith("\n\n## Where a target is missed\n\nBecause of the reader floor.\n")
    assert text.count("# Performance") == 1


def test_without_notes_only_the_generated_part_is_written() -> None:
    text = report_text(RESULTS, ARGS, 12.0, "")
    assert "quick sizes, 12 s in all" in text and "\n## " not in text
