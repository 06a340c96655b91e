"""Fixed-rate, drift-free tick scheduling and tick-duration statistics.

Tick ``n`` is due at ``start + n * period`` on the monotonic clock, so a late
tick never shifts later ones; when the loop falls more than a whole period
behind, the missed slots are skipped (and counted) instead of run back to back.
A late step waits ``IO_SHARE`` of a period all the same, so a zone whose steps
run over their period still reads its inbox, answers calls, sends its heartbeat
and serves its links.

:class:`Beat` counts what the zone's other loops follow (ticks, zone-map
notices): they wait on it rather than poll.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

IO_SHARE = 0.1  # of a period: what the event loop gets before a late step


def schedule(start: float, period: float, n: int, now: float) -> tuple[int, float, int]:
    """The next tick after tick ``n``: (index, due time, slots skipped)."""
    nxt = n + 1
    due = start + nxt * period
    skipped = 0
    if now - due >= period:
        skipped = math.floor((now - due) / period)
        nxt += skipped
        due = start + nxt * period
    return nxt, due, skipped


class TickStats:
    """Rolling window of tick durations with percentiles and the overload signal."""

    def __init__(self, budget_s: float, window: int = 300) -> None:
        self.budget_s = budget_s
        self.durations: deque[float] = deque(maxlen=window)

    def add(self, seconds: float) -> None:
        self.durations.append(seconds)

    def percentile(self, q: float) -> float:
        """Duration percentile in seconds (0 with no samples)."""
        if not self.durations:
            return 0.0
        return float(np.percentile(np.fromiter(self.durations, float), q))

    @property
    def overloaded(self) -> bool:
        """True when the p99 tick exceeds the budget (one period)."""
        return self.percentile(99) > self.budget_s


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Beat:
    """A count of events that tasks wait to see move past what they saw. Cheaper
    than ``wait_for(event.wait(), timeout)``, which starts a task each wait and
    raises into it on a timeout: a wait here is one future and one timer."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[asyncio.Future[None]] = []

    def bump(self) -> None:
        self.count += 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _wake(waiter)

    async def past(self, seen: int, timeout_s: float) -> int:
        """The count once it is past ``seen``, or after ``timeout_s`` at the latest."""
        if self.count != seen:
            return self.count
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(timeout_s, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if waiter in self._waiters:  # timed out or cancelled: not left behind
                self._waiters.remove(waiter)
        return self.count


class Ticker:
    """Runs ``step`` at ``hz`` until stopped; a failing step is logged, never fatal."""

    def __init__(self, hz: int, step: Callable[[], None]) -> None:
        self.period = 1.0 / hz
        self.step = step
        self.stats = TickStats(self.period)
        self.skipped = 0
        self.errors = 0
        self.on_skip: Callable[[int], None] = lambda _n: None
        self.on_error: Callable[[], None] = lambda: None
        self._stop = asyncio.Event()
        self._sleep: asyncio.Future[None] | None = None
        self._start = 0.0
        self._n = 0

    def stop(self) -> None:
        self._stop.set()
        if self._sleep is not None:
            _wake(self._sleep)

    def next_due(self, now: float) -> float:
        """When (monotonic) the next step will run, as :meth:`run` will wait for it:
        its slot, or a late step's share of a period from ``now``."""
        _n, due, _skipped = schedule(self._start, self.period, self._n, now)
        return due if due > now else now + IO_SHARE * self.period

    async def run(self) -> None:
        self._start = time.monotonic()
        self._n = 0
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            self._n, due, skipped = schedule(self._start, self.period, self._n, time.monotonic())
            if skipped:
                self.skipped += skipped
                self.on_skip(skipped)
            delay = due - time.monotonic()
            if delay <= 0:  # late: steps that never await would starve every other task
                delay = IO_SHARE * self.period
            self._sleep = loop.create_future()
            timer = loop.call_later(delay, _wake, self._sleep)
            try:
                await self._sleep
            finally:
                timer.cancel()
                self._sleep = None
            if self._stop.is_set():
                break
            began = time.perf_counter()
            try:
                self.step()
            except Exception:
                self.errors += 1
                self.on_error()
                log.exception("tick failed")
            self.stats.add(time.perf_counter() - began)
