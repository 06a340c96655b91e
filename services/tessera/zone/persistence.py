"""The zone's writes to the system of record, off the tick: player data
(write-behind) and the game event log.

Both go through a :class:`Spool`, a bounded in-memory buffer drained in batches by
one asyncio task; the tick only appends to it (never waits on PostgreSQL), and
what does not fit is dropped and counted. A failed batch goes back to the front
of its spool (as much as fits) and is retried at the next interval; so does a
batch cut short by a stop, for the final flush (its rows may then arrive twice:
player data is fenced by version, an event may repeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Generic, TypeVar

from tessera.common import eventlog, playerdata
from tessera.common.database import Pool
from tessera.common.playerdata import PlayerData
from tessera.zone import metrics
from tessera.zone.entities import Record
from tessera.zone.events import DIED, HIT_DEALT, Event

log = logging.getLogger(__name__)
T = TypeVar("T")
# The event log's kind of each logged tick event (game_events.kind).
_KINDS = {HIT_DEALT: "hit", DIED: "death"}


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
    ) -> None:
        self.name = name
        self.write = write
        self.capacity = capacity
        self.batch = batch
        self.interval_s = interval_s
        self.items: deque[T] = deque()
        self._wake = asyncio.Event()

    def offer(self, items: Iterable[T]) -> int:
        """Queue what fits; returns how many items were dropped (and counts them)."""
        dropped = 0
        for item in items:
            if len(self.items) < self.capacity:
                self.items.append(item)
            else:
                dropped += 1
        if dropped:
            metrics.SPOOL_DROPPED.labels(self.name).inc(dropped)
        if len(self.items) >= self.batch:
            self._wake.set()
        return dropped

    async def flush(self) -> None:
        """Write everything queued now, batch by batch; a failed batch is requeued and
        the flush stops."""
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
                metrics.SPOOL_ERRORS.labels(self.name).inc()
                log.exception("write failed", extra={"spool": self.name, "items": n})
                self._requeue(batch)
                return
            metrics.SPOOL_BATCH.labels(self.name).observe(time.perf_counter() - began)
            metrics.SPOOL_WRITTEN.labels(self.name).inc(n)

    def _requeue(self, batch: list[T]) -> None:
        room = self.capacity - len(self.items)
        self.items.extendleft(reversed(batch[:room]))
        if len(batch) > room:
            metrics.SPOOL_DROPPED.labels(self.name).inc(len(batch) - room)

    async def run(self) -> None:
        """Flush every ``interval_s``, or as soon as a full batch waits."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            await self.flush()


class Persistence:
    """One zone's player-data write-behind and event log over a PostgreSQL pool.

    ``refused`` is told which saves lost to a newer row version (player id -> the
    stored version), so the zone can adopt it for players it still holds.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        world: str,
        zone: str,
        match: str,
        capacity: int,
        event_capacity: int,
        interval_s: float,
        event_interval_s: float,
    ) -> None:
        self.pool = pool
        self.world, self.zone, self.match = world, zone, match
        self.refused: Callable[[dict[str, int]], None] = lambda _stale: None
        self.saves = Spool(
            "player_data", self._save, capacity=capacity, batch=500, interval_s=interval_s
        )
        self.events = Spool(
            "events", self._append, capacity=event_capacity, batch=1000, interval_s=event_interval_s
        )

    async def load(self, player: str) -> PlayerData | None:
        return await playerdata.load(self.pool, self.world, player)

    def save(self, records: Iterable[Record]) -> None:
        """Queue the player data of ``records`` (each already carries its new version)."""
        self.saves.offer(self._data(r) for r in records)

    def _data(self, r: Record) -> PlayerData:
        return PlayerData(
            world=self.world,
            player=r.player_id,
            position=r.position,
            yaw=r.yaw,
            health=r.health,
            blob=r.blob,
            speed_clamps=r.speed_clamps,
            teleports=r.teleports,
            version=r.data_version,
            written_by=self.zone,
        )

    def log(self, events: Iterable[Event], positions: dict[str, tuple[float, float]]) -> None:
        """Queue the combat events of one tick (hits dealt, deaths); ``positions`` are
        the acting players' (x, z)."""
        at = datetime.now(UTC)
        rows = [
            (
                at,
                self.world,
                self.zone,
                self.match,
                _KINDS[e.kind],
                e.player_id,
                e.other,
                e.detail,
                e.amount,
                *positions.get(e.player_id, (0.0, 0.0)),
            )
            for e in events
            if e.kind in _KINDS
        ]
        if rows:
            self.events.offer(rows)

    def presence(self, kind: str, player: str, x: float, z: float) -> None:
        """Queue a join or leave of this zone (match events in instance zones)."""
        row = (datetime.now(UTC), self.world, self.zone, self.match, kind, player, 0, "", 0.0, x, z)
        self.events.offer([row])

    async def run(self) -> None:
        await asyncio.gather(self.saves.run(), self.events.run())

    async def flush(self) -> None:
        await asyncio.gather(self.saves.flush(), self.events.flush())

    async def _save(self, batch: list[PlayerData]) -> None:
        # The newest of each player's queued saves only (one row per statement).
        newest: dict[str, PlayerData] = {}
        for d in batch:
            if d.player not in newest or newest[d.player].version < d.version:
                newest[d.player] = d
        stale = await playerdata.save_newer(self.pool, list(newest.values()), now=time.time())
        metrics.DATA_STALE.inc(len(stale))
        if stale:
            self.refused({player: version for (_world, player), version in stale.items()})

    async def _append(self, rows: list[eventlog.EventRow]) -> None:
        await eventlog.append(self.pool, rows)
