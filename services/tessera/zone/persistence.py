"""The zone's writes to the system of record, off the tick: player data
(write-behind) and the game event log.

Both go through a :class:`tessera.common.spool.Spool`: the tick only appends, and a
batch written twice after a stop is harmless (player data is fenced by version, an
event may repeat).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from tessera.common import eventlog, playerdata
from tessera.common.database import Pool
from tessera.common.playerdata import PlayerData
from tessera.common.spool import Spool
from tessera.zone import metrics
from tessera.zone.entities import Record
from tessera.zone.events import DIED, HIT_DEALT, Event

# The event log's kind of each logged tick event (game_events.kind).
_KINDS = {HIT_DEALT: "hit", DIED: "death"}


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
        persisted: frozenset[str] = frozenset(),
    ) -> None:
        self.pool = pool
        self.persisted = persisted  # the game module's components kept in player data
        self.world, self.zone, self.match = world, zone, match
        self.refused: Callable[[dict[str, int]], None] = lambda _stale: None
        self.saves = Spool(
            "player_data",
            self._save,
            capacity=capacity,
            batch=500,
            interval_s=interval_s,
            metrics=metrics.spool("player_data"),
        )
        self.events = Spool(
            "events",
            self._append,
            capacity=event_capacity,
            batch=1000,
            interval_s=event_interval_s,
            metrics=metrics.spool("events"),
        )

    async def load(self, player: str) -> PlayerData | None:
        return await playerdata.load(self.pool, self.world, player)

    def save(self, records: Iterable[Record], *, now: bool = False) -> None:
        """Queue the player data of ``records`` (each already carries its new version);
        ``now`` writes them without waiting for the write-behind interval."""
        self.saves.offer((self._data(r) for r in records), now=now)

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
            kills=r.kills,
            deaths=r.deaths,
            hits_dealt=r.hits_dealt,
            hits_taken=r.hits_taken,
            components={k: v for k, v in r.components.items() if k in self.persisted},
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
