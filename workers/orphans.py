"""Child processes that do not outlive their parent (Linux PR_SET_PDEATHSIG)."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def signal_when_orphaned(sig: int = signal.SIGTERM) -> None:
    """In a child: receive `sig` when the parent dies, even by SIGKILL (no-op off Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, sig)
