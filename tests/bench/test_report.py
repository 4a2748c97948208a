"""``make bench`` rewrites docs/performance.md's figures and keeps its hand-written sections."""

from __future__ import annotations

from bench.__main__ import report_text
from bench.common import Result

RESULTS = [Result("latency", "p99 publish -> visible", 0.5, "s", "<= 2.0", True)]
SIZES = {"latency": "5 seconds at 1,000 msg/s"}


def test_new_figures_replace_the_old_and_notes_are_kept() -> None:
    previous = ("# Performance\n\nMeasured long ago.\n\n| benchmark | metric | value | target | met | note |\n"
                "|---|---|---|---|---|---|\n| latency | p99 publish -> visible | 9.9 s | <= 2.0 | yes |  |\n\n"
                "Run one benchmark alone.\n\n## Where a target is missed\n\nBecause of the reader floor.\n")
    text = report_text(RESULTS, SIZES, 12.0, previous)
    assert "| latency | p99 publish -> visible | 0.500 s | <= 2.0 | yes |  |" in text
    assert "9.9 s" not in text and "long ago" not in text
    assert text.endswith("\n\n## Where a target is missed\n\nBecause of the reader floor.\n")
    assert text.count("# Performance") == 1


def test_without_notes_only_the_generated_part_is_written() -> None:
    text = report_text(RESULTS, SIZES, 12.0, "")
    assert "the last run took 12 s" in text and "| latency |" in text and "5 seconds at 1,000 msg/s |" in text
    assert "\n## " not in text
