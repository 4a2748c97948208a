"""The one way to wait for the DuckDB file while another connection holds it.

DuckDB lets one process write a file, and while it holds it nobody else may open it; readers hold it for one query,
the writer for one flush. Everything that opens the file (reader, sink, checkpoint store, worker start) retries
through :func:`retry_while_locked` with a short exponential back-off.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def is_lock_conflict(exc: BaseException) -> bool:
    """Whether a DuckDB error means another connection holds the file (so waiting a moment helps)."""
    text = str(exc).lower()
    # "file handle conflict" / "different configuration": the writer is a connection of this same process
    # (an in-process ingest worker in tests, or the demo).
    return any(word in text for word in ("lock", "conflict", "being used", "different configuration"))


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def retry_while_locked(action: Callable[[], T], window_s: float, *,
                       locked: Callable[[BaseException], bool] = is_lock_conflict,
                       delay_s: float = 0.005, max_delay_s: float = 0.1,
                       wait: Callable[[float], bool] = _sleep) -> T:
    """Return ``action()``, calling it again while it raises an exception for which ``locked`` is true.

    Waits ``delay_s`` after the first conflict, doubling up to ``max_delay_s``, for at most ``window_s`` seconds
    (``math.inf``: until it succeeds). ``wait(seconds)`` does the waiting and returns True to give up early (a stop
    flag). Giving up re-raises the last conflict; any other exception passes through at once.
    """
    deadline = time.monotonic() + window_s if math.isfinite(window_s) else math.inf
    delay = delay_s
    while True:
        try:
            return action()
        except Exception as exc:
            if not locked(exc) or time.monotonic() >= deadline:
                raise
            if wait(min(delay, max(0.0, deadline - time.monotonic()))):
                raise
            delay = min(delay * 2, max_delay_s)
