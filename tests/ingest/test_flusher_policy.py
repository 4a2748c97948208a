"""When the flusher flushes: every interval, and early once a stream goes quiet, at most twice per interval."""

from __future__ import annotations

import pytest

from ingest.flusher import FlushPolicy


def _run(policy: FlushPolicy, looks: list[tuple[float, int]]) -> list[float]:
    """Feed (time, journal bytes waiting) looks to the policy; return the times it said to flush."""
    flushed = []
    for now, waiting in looks:
        if policy.should_flush(now, waiting):
            flushed.append(now)
    return flushed


def test_a_steady_stream_is_flushed_once_per_interval() -> None:
    policy = FlushPolicy(interval=0.5, quiet=0.05, now=0.0)
    looks = [(round(0.05 * i, 2), 1000 * i) for i in range(1, 41)]  # new bytes at every look: never quiet
    assert _run(policy, looks) == [0.5, 1.0, 1.5, 2.0]


def test_waiting_records_are_flushed_once_nothing_new_arrived_between_two_looks() -> None:
    policy = FlushPolicy(interval=10.0, quiet=0.05, now=0.0)
    assert _run(policy, [(0.05, 300), (0.10, 300)]) == [0.10]


def test_nothing_waiting_is_never_a_reason_to_flush_early() -> None:
    policy = FlushPolicy(interval=10.0, quiet=0.05, now=0.0)
    assert _run(policy, [(0.05 * i, 0) for i in range(1, 100)]) == []


def test_after_an_early_flush_the_next_waits_for_the_interval() -> None:
    """A stream with a pause after every message would otherwise flush after every message."""
    policy = FlushPolicy(interval=1.0, quiet=0.05, now=0.0)
    looks = [(0.05, 10), (0.10, 10),  # quiet: early flush
             (0.15, 20), (0.20, 20), (0.25, 20),  # quiet again, but the last flush was early: wait
             (0.30, 30), (1.10, 30),  # the interval since the early flush has passed
             (1.15, 40), (1.20, 40)]  # the last flush was a regular one: early flushing is allowed again
    assert _run(policy, looks) == [0.10, 1.10, 1.20]


def test_quiet_zero_flushes_on_the_interval_only() -> None:
    policy = FlushPolicy(interval=0.5, quiet=0.0, now=0.0)
    assert _run(policy, [(0.1, 5), (0.2, 5), (0.3, 5), (0.5, 5)]) == [0.5]


def test_the_wait_until_the_next_look_is_the_quiet_time_capped_by_the_interval() -> None:
    policy = FlushPolicy(interval=0.5, quiet=0.05, now=0.0)
    assert policy.wait(0.0) == 0.05
    assert policy.wait(0.48) == pytest.approx(0.02)
    assert FlushPolicy(interval=0.5, quiet=0.0, now=0.0).wait(0.1) == 0.4
