"""A bounded in-memory buffer written to the system of record in batches, off the
caller's path: the zone's player-data write-behind and event log, and the audit log.

Writers only append (never wait on PostgreSQL); what does not fit is dropped and
counted. One asyncio task drains it. A failed batch goes back to the front (as much
as fits) and is retried at the next interval; so does a batch cut short by a stop,
for the final flush (its items may then arrive twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class SpoolMetrics:
    """The metric children one spool counts into."""

    written: Counter
    dropped: Counter
    errors: Counter
    batch: Histogram


class Spool(Generic[T]):
    """A bounded buffer of items written in batches by :meth:`run`."""

    def __init__(
        self,
        name: str,
        write: Callable[[list[T]], Awaitable[None]],
        *,
        capacity: int,
        batch: int,
        interval_s: float,
        metrics: SpoolMetrics,
    ) -> None:
        self.name = name
        self.write = write
        self.capacity = capacity
        self.batch = batch
        self.interval_s = interval_s
        self.metrics = metrics
        self.items: deque[T] = deque()
        self._wake = asyncio.Event()

    def offer(self, items: Iterable[T], *, now: bool = False) -> int:
        """Queue what fits; returns how many items were dropped (and counts them).
        ``now`` has :meth:`run` write them at once instead of at its next interval."""
        dropped = 0
        for item in items:
            if len(self.items) < self.capacity:
                self.items.append(item)
            else:
                dropped += 1
        if dropped:
            self.metrics.dropped.inc(dropped)
        if now or len(self.items) >= self.batch:
            self._wake.set()
        return dropped

    async def flush(self) -> bool:
        """Write everything queued now, batch by batch; a failed batch is requeued and
        the flush stops. True when the spool was emptied."""
        while self.items:
            n = min(self.batch, len(self.items))
            batch = [self.items.popleft() for _ in range(n)]
            began = time.perf_counter()
            try:
                await self.write(batch)
            except asyncio.CancelledError:
                self._requeue(batch)  # a stop during a write: the final flush retries it
                raise
            except Exception:
                self.metrics.errors.inc()
                log.exception("write failed", extra={"spool": self.name, "items": n})
                self._requeue(batch)
                return False
            self.metrics.batch.observe(time.perf_counter() - began)
            self.metrics.written.inc(n)
        return True

    def _requeue(self, batch: list[T]) -> None:
        room = self.capacity - len(self.items)
        self.items.extendleft(reversed(batch[:room]))
        if len(batch) > room:
            self.metrics.dropped.inc(len(batch) - room)

    async def run(self) -> None:
        """Flush every ``interval_s``, or as soon as a full batch (or an offer made
        ``now``) waits."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            await self.flush()
