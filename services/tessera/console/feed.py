"""The live feed: one aggregation per interval, shared by every viewer.

:class:`Aggregator` reads the world (Redis and the relays) and builds a frame;
:class:`Feed` runs it every interval, computes the delta from the previous
frame once, encodes it once as a Server-Sent Event and queues the same bytes for
every viewer. A new viewer first gets the full frame; a viewer too slow to take
its queue is reset to the full frame instead of growing a backlog.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tessera.console import frame, metrics
from tessera.console.frame import Frame, Rate, RelayRow, World
from tessera.console.store import ConsoleStore

log = logging.getLogger(__name__)

QUEUE = 8  # frames a viewer may fall behind before it is reset to a full frame


def event(kind: str, data: Any) -> bytes:
    """One Server-Sent Event (``event: kind``, compact JSON data)."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Aggregator:
    """Builds frames of one world; remembers heartbeat counts for handoff rates."""

    def __init__(
        self,
        store: ConsoleStore,
        relays: Callable[[], Awaitable[list[RelayRow]]],
        *,
        cells: int,
        aura_m: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.relays = relays
        self.cells = cells
        self.aura_m = aura_m
        self.clock = clock
        self.rates: dict[str, Rate] = {}

    async def frame(self) -> Frame:
        snap, relays = await asyncio.gather(self.store.snapshot(), self.relays())
        self.rates = frame.handoff_rates(snap.zones, self.rates)
        world = World(
            name=self.store.world,
            bounds=snap.zone_map.bounds,
            map_version=snap.zone_map.version,
            map_zones=snap.zone_map.zones,
            zones=snap.zones,
            events=snap.events,
            relays=relays,
            matches=snap.matches,
            now_ms=self.clock() * 1000.0,
        )
        return frame.build(world, self.rates, cells=self.cells, aura_m=self.aura_m)


class Feed:
    """Runs ``produce`` every ``interval_s`` and fans the deltas out to viewers."""

    def __init__(self, produce: Callable[[], Awaitable[Frame]], interval_s: float) -> None:
        self.produce = produce
        self.interval_s = interval_s
        self.frame: Frame = {}
        self._full: bytes | None = None
        self._viewers: set[asyncio.Queue[bytes]] = set()

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def full(self) -> bytes:
        """The current frame as one ``full`` event (encoded once per frame)."""
        if self._full is None:
            self._full = event("full", self.frame)
            metrics.FRAME_BYTES.labels("full").observe(len(self._full))
        return self._full

    async def step(self) -> bytes:
        """Aggregate once, queue the delta for every viewer; the encoded delta."""
        started = time.perf_counter()
        current = await self.produce()
        change = frame.delta(self.frame, current)
        self.frame, self._full = current, None
        data = event("delta", change)
        metrics.FRAME_SECONDS.observe(time.perf_counter() - started)
        metrics.FRAME_BYTES.labels("delta").observe(len(data))
        for queue in self._viewers:
            if queue.full():
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(self.full())
            else:
                queue.put_nowait(data)
        return data

    async def run(self) -> None:
        """Step every interval until cancelled; a failed step is logged and retried."""
        while True:
            started = time.monotonic()
            try:
                await self.step()
            except Exception:
                log.exception("console frame failed")
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def subscribe(self) -> asyncio.Queue[bytes]:
        """A viewer's queue, starting with the full frame."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE)
        queue.put_nowait(self.full())
        self._viewers.add(queue)
        metrics.VIEWERS.set(len(self._viewers))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes]) -> None:
        self._viewers.discard(queue)
        metrics.VIEWERS.set(len(self._viewers))

    def close(self) -> None:
        """End every viewer's stream (an empty chunk tells the handler to return)."""
        for queue in self._viewers:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(b"")
