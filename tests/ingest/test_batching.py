"""The flusher's batch sizer: halving isolates a record DuckDB refuses; a lone record is given up on its 2nd failure."""

from __future__ import annotations

from ingest.batching import BatchSizer
from ingest.journal import Position, Record


def _records(*offsets: int) -> list[Record]:
    return [Record(source="mqtt", topic="t/x/telemetry", received_ns=0, payload=b"{}", meta=None,
                   end=Position(1, n + 1)) for n in offsets]


def test_a_failed_batch_is_halved_until_the_breaking_record_stands_alone() -> None:
    sizer = BatchSizer(8)
    assert sizer.give_up(_records(*range(8))) is False
    assert sizer.limit == 4
    assert sizer.give_up(_records(0, 1, 2, 3)) is False
    assert sizer.give_up(_records(0, 1)) is False
    assert sizer.limit == 1


def test_a_lone_record_is_retried_once_then_given_up() -> None:
    sizer = BatchSizer(8)
    lone = _records(5)
    assert sizer.give_up(lone) is False  # could be a passing disk error
    assert sizer.give_up(lone) is True
    assert sizer.give_up(_records(6)) is False  # another record gets its own second chance


def test_successes_double_the_limit_back_to_the_maximum() -> None:
    sizer = BatchSizer(8)
    sizer.give_up(_records(*range(8)))
    sizer.give_up(_records(0, 1, 2, 3))
    assert sizer.limit == 2
    sizer.succeeded()
    assert sizer.limit == 4
    sizer.succeeded()
    sizer.succeeded()
    assert sizer.limit == 8
