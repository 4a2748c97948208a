"""tests/waiting.py: the one wait-until helper every test uses."""

from __future__ import annotations

import socket
import threading

import pytest

from tests.waiting import WaitTimeout, port_accepts, wait_for_port, wait_until


def test_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, [], ["row"]])
    assert wait_until(lambda: next(values), timeout=5, interval=0.001) == ["row"]


def test_fails_naming_what_and_the_last_value_and_detail() -> None:
    with pytest.raises(WaitTimeout) as failure:
        wait_until(lambda: [], timeout=0.05, what="readings in DuckDB", interval=0.01, detail=lambda: "worker log")
    assert "readings in DuckDB" in str(failure.value)
    assert "last: []" in str(failure.value) and "worker log" in str(failure.value)
    assert isinstance(failure.value, AssertionError) and isinstance(failure.value, TimeoutError)


def test_retry_on_counts_as_not_yet() -> None:
    calls = iter([LookupError("not created yet"), LookupError("locked"), "ready"])

    def check() -> str:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_until(check, timeout=5, interval=0.001, retry_on=(LookupError,)) == "ready"
    with pytest.raises(ValueError):
        wait_until(lambda: int("x"), timeout=5, retry_on=(LookupError,))  # anything else propagates at once


def test_with_a_condition_it_wakes_on_notify_instead_of_polling() -> None:
    """The condition is evaluated once at the start and once per notify, never on a polling interval."""
    changed = threading.Condition()
    items: list[int] = []
    calls: list[int] = []

    def check() -> list[int]:
        calls.append(len(items))
        return items if len(items) >= 3 else []

    def produce() -> None:
        for i in range(3):
            with changed:
                items.append(i)
                changed.notify_all()

    producer = threading.Timer(0.05, produce)
    producer.start()
    assert wait_until(check, timeout=30, changed=changed, interval=0.001) == [0, 1, 2]
    producer.join()
    assert len(calls) <= 4, calls  # 1 initial + at most one per notify; polling at 1 ms would call it ~50 times


def test_wait_for_port() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert port_accepts("127.0.0.1", port)
        wait_for_port("127.0.0.1", port, timeout=5)
    with pytest.raises(WaitTimeout, match=f"127.0.0.1:{port}"):
        wait_for_port("127.0.0.1", port, timeout=0.1)
