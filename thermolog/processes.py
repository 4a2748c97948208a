"""Child processes that must not outlive their parent."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGKILL, parent_pid: int | None = None) -> None:
    """In a child: ask the kernel to send ``sig`` when the parent dies (Linux ``PR_SET_PDEATHSIG``).

    With ``parent_pid``, exit at once when the parent is already gone (it may die before prctl takes effect);
    on other systems the caller's own check of ``os.getppid()`` has to cover it.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
        except (OSError, AttributeError):
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
