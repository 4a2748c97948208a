"""Waiting in tests: return as soon as a condition holds, fail naming what never happened.

Every test and stand-in waits through ``wait_until``. Where a producer signals changes (an MQTT callback appending to
a list under a ``threading.Condition``), pass that condition as ``changed`` and the wait wakes on each notify;
only state that nothing signals (a database file, a port, a process's output) is polled every ``interval`` seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """A wait ran out: a test failure (AssertionError) that code expecting a TimeoutError also catches."""


def wait_until(condition: Callable[[], T], timeout: float, what: str = "the condition", interval: float = 0.1, *,
               changed: threading.Condition | None = None, retry_on: tuple[type[BaseException], ...] = (),
               detail: Callable[[], object] | None = None) -> T:
    """Return the first truthy value of ``condition()``; raise WaitTimeout naming ``what`` after ``timeout`` s.

    ``changed``: a Condition notified whenever the state ``condition`` reads changes; ``condition`` then runs under
    its lock and the wait sleeps until the next notify instead of polling. ``retry_on``: exception types that mean
    "not yet" (a database still being created). ``detail``: called at the deadline for context in the message.
    """
    deadline = time.monotonic() + timeout
    pause = changed.wait if changed is not None else time.sleep
    with changed if changed is not None else nullcontext():
        while True:
            try:
                value = condition()
            except retry_on as exc:
                value = exc  # type: ignore[assignment]
            if value and not isinstance(value, BaseException):
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                extra = f"\n{detail()}" if detail is not None else ""
                raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what} (last: {_short(value)}){extra}")
            pause(left if changed is not None else min(interval, left))


def _short(value: object, limit: int = 300) -> str:
    """``repr(value)``, cut so that a long message list does not bury the failure."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def port_accepts(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts connections on host:port (a listening socket gives no other signal)."""
    wait_until(lambda: port_accepts(host, port), timeout, f"something listening on {host}:{port}", interval=0.05)
