"""One read-only attachment per database file per process, shared by the reads that overlap.

DuckDB guards its file with POSIX record locks, and POSIX drops every lock a process holds on a file as soon as the
process closes any descriptor of it. Two attachments of one file in one process therefore protect nothing: once
the first is detached, the writer may open the file and change it under the second (wrong results, or a crash in
DuckDB's decompression, as the dashboard had under ten concurrent sessions). So the reads of a process share one
attachment per file, detached when the last of them ends.

Shared without limit, overlapping reads would keep the writer out for as long as they keep coming. A read joins
an attachment only while it is younger than ``share_s``; later reads wait until it is released and then leave the
writer ``writer_gap_s`` to take its turn (its open retries every 50 ms at most). A read that has waited its whole
window joins whatever is open rather than fail.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SHARE_S = 0.25
"""Chart queries take milliseconds: a quarter second lets the reads of one page (and of other sessions) share."""
WRITER_GAP_S = 0.1
"""Two of the writer's retries (``DuckDBSink.connect`` backs off up to 50 ms)."""


@dataclass
class _Attachment:
    alias: str
    users: int = 1
    opened: float | None = None  # None while the first reader attaches it
    draining: bool = False  # too old to join: a reader is waiting for it to be released
    detaching: bool = False


class SharedAttachments:
    """The attachments of one process, by file; ``attach(alias, file, window_s)`` and ``detach(alias)`` do the work
    (``attach`` raises when the file cannot be opened within the window)."""

    def __init__(self, attach: Callable[[str, str, float], None], detach: Callable[[str], None], *,
                 share_s: float = SHARE_S, writer_gap_s: float = WRITER_GAP_S) -> None:
        self._attach, self._detach = attach, detach
        self.share_s, self.writer_gap_s = share_s, writer_gap_s
        self._open: dict[str, _Attachment] = {}
        self._writer_turn_until: dict[str, float] = {}
        self._changed = threading.Condition()
        self._names = itertools.count()

    @contextmanager
    def use(self, file: str, window_s: float) -> Iterator[str]:
        """The alias under which ``file`` is attached for the ``with`` block."""
        alias = self._enter(file, window_s)
        try:
            yield alias
        finally:
            self._leave(file)

    def _enter(self, file: str, window_s: float) -> str:
        deadline = time.monotonic() + window_s
        with self._changed:
            while True:
                now = time.monotonic()
                late = now >= deadline
                current = self._open.get(file)
                wake: float | None  # when to look again without being notified; None: only when notified
                if current is None:
                    turn_ends = self._writer_turn_until.get(file, 0.0)
                    if late or now >= turn_ends:
                        self._writer_turn_until.pop(file, None)
                        current = self._open[file] = _Attachment(f"thermolog_{next(self._names)}")
                        break
                    wake = turn_ends
                elif current.opened is not None and not current.detaching:
                    if now - current.opened < self.share_s or late:
                        current.users += 1
                        return current.alias
                    current.draining = True
                    wake = deadline
                else:  # being attached or detached by another read: wait for its outcome, which notifies
                    wake = None
                self._changed.wait(None if wake is None else max(0.0, wake - now))
        try:
            self._attach(current.alias, file, max(0.0, deadline - time.monotonic()))
        except BaseException:
            with self._changed:
                del self._open[file]
                self._changed.notify_all()
            raise
        with self._changed:
            current.opened = time.monotonic()
            self._changed.notify_all()
        return current.alias

    def _leave(self, file: str) -> None:
        with self._changed:
            current = self._open[file]
            current.users -= 1
            if current.users:
                return
            current.detaching = True
        try:
            self._detach(current.alias)
        finally:
            with self._changed:
                del self._open[file]
                if current.draining:
                    self._writer_turn_until[file] = time.monotonic() + self.writer_gap_s
                self._changed.notify_all()
