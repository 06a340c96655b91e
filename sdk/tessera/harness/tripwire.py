"""A process that grows past a memory limit aborts, with every thread's stack.

A runaway allocation in a test process (pytest once grew about 700 MB/s inside
gRPC core's threads until the kernel killed it, and other processes with it)
ends here instead: a daemon thread reads the resident size from /proc every
``every_s`` and calls :func:`os.abort` above ``limit_bytes``. :mod:`faulthandler`
(pytest enables it) then prints every Python thread's stack, this watcher's
among them, and the run fails at once with a trace rather than an OOM kill.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

_STATM = Path("/proc/self/statm")


def resident_bytes() -> int:
    """This process's resident set size (Linux)."""
    return int(_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def abort_above(limit_bytes: int, *, every_s: float = 0.1) -> threading.Thread:
    """Start the watcher (a daemon thread) and return it."""
    watcher = threading.Thread(
        target=_watch, args=(limit_bytes, every_s), name="rss-tripwire", daemon=True
    )
    watcher.start()
    return watcher


def _watch(limit_bytes: int, every_s: float) -> None:
    while resident_bytes() <= limit_bytes:
        time.sleep(every_s)
    os.abort()
