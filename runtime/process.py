"""Process helpers shared by the supervisor and the processes it starts."""

from __future__ import annotations

import ctypes
import functools
import signal
import sys

_PR_SET_PDEATHSIG = 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


def prepare_die_with_parent() -> None:
    """Load libc in the parent, so the child's preexec hook only makes one system call (no dlopen after fork)."""
    _libc()


def die_with_parent() -> None:
    """In a child, before exec: ask Linux to send SIGTERM when the parent dies, so no orphan outlives `serve`.

    (A no-op elsewhere; the supervisor's own shutdown path stops its children in any case.)
    """
    libc = _libc()
    if libc is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
