"""The zone's Redis adapter: the only code of the zone that talks to Redis.

Keys (tessera.common.store.WorldKeys, docs/ARCHITECTURE.md "Redis keys"):
registration and heartbeat (``zones`` set, ``zone:<z>:status`` with a TTL),
routes (``routes`` hash ``player -> <zone>|<epoch>``, changes published on
``routes:changed`` as ``<player>|<zone>|<epoch>``; a removal publishes
``<player>||0``), checkpoints (``checkpoints`` hash ``player -> EntityState``)
and entity ids (``entity-ids`` counter, handed out in blocks).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from tessera.common.store import WorldKeys
from tessera.v1 import zone_pb2
from tessera.zone.snapshot import ID_LIMIT

# Compare-and-set a route: only if it still holds the value the caller read.
_CLAIM = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[1] .. '|' .. ARGV[3])
return 1
"""

# Delete a route only if it names this zone.
_RELEASE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur or string.sub(cur, 1, #ARGV[2] + 1) ~= ARGV[2] .. '|' then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[1] .. '||0')
return 1
"""


@dataclass(frozen=True)
class Route:
    """One routing-table entry."""

    zone: str
    epoch: int
    raw: str


def parse_route(raw: str) -> Route | None:
    """``<zone>|<epoch>``, or None if malformed."""
    zone, sep, epoch = raw.partition("|")
    if not sep or not epoch.isdigit():
        return None
    return Route(zone, int(epoch), raw)


class ZoneStore:
    """Registration, routes, checkpoints and entity ids of one zone."""

    def __init__(self, redis: Redis, *, world: str, zone: str, id_block: int = 1024) -> None:
        self.redis = redis
        self.keys = WorldKeys(world)
        self.zone = zone
        self.id_block = id_block
        self._ids: list[int] = []
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    async def heartbeat(self, status: zone_pb2.ZoneStatus, ttl_s: float) -> None:
        """Register the zone and store its status with a TTL (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self.keys.zones, self.zone)
            pipe.set(
                self.keys.zone_status(self.zone),
                status.SerializeToString(),
                px=max(1, int(ttl_s * 1000)),
            )
            await pipe.execute()

    async def zone_alive(self, zone: str) -> bool:
        """True while the zone's heartbeat key exists."""
        return bool(await self.redis.exists(self.keys.zone_status(zone)))

    async def route(self, player_id: str) -> Route | None:
        raw = await self.redis.hget(self.keys.routes, player_id)
        return None if raw is None else parse_route(_text(raw))

    async def claim_route(self, player_id: str, expected: str, epoch: int) -> bool:
        """Point the player's route at this zone if it still reads ``expected`` ('' = none)."""
        value = f"{self.zone}|{epoch}"
        done = await self._claim(
            keys=[self.keys.routes, self.keys.routes_changed], args=[player_id, expected, value]
        )
        return bool(done)

    async def release_route(self, player_id: str) -> bool:
        """Delete the player's route if it names this zone."""
        done = await self._release(
            keys=[self.keys.routes, self.keys.routes_changed], args=[player_id, self.zone]
        )
        return bool(done)

    async def routes_here(self) -> dict[str, int]:
        """Players routed to this zone, with their epochs."""
        found: dict[str, int] = {}
        async for key, raw in self.redis.hscan_iter(self.keys.routes, count=1000):
            route = parse_route(_text(raw))
            if route is not None and route.zone == self.zone:
                found[_text(key)] = route.epoch
        return found

    async def load_checkpoints(self, players: list[str]) -> dict[str, zone_pb2.EntityState]:
        """The last checkpoint of each player that has one."""
        if not players:
            return {}
        raws = await self.redis.hmget(self.keys.checkpoints, players)
        return {
            p: zone_pb2.EntityState.FromString(_raw(raw))
            for p, raw in zip(players, raws, strict=True)
            if raw is not None
        }

    async def save_checkpoints(self, states: list[zone_pb2.EntityState]) -> None:
        """Write many checkpoints in one command."""
        if states:
            await self.redis.hset(
                self.keys.checkpoints,
                mapping={s.player_id: s.SerializeToString() for s in states},
            )

    async def next_ids(self, count: int) -> list[int]:
        """``count`` world-unique entity ids, drawn from blocks of the shared counter."""
        while len(self._ids) < count:
            block = max(self.id_block, count - len(self._ids))
            end = int(await self.redis.incrby(self.keys.entity_ids, block))
            if end >= ID_LIMIT:
                raise RuntimeError("entity id space exhausted")
            self._ids.extend(range(end - block + 1, end + 1))
        out, self._ids = self._ids[:count], self._ids[count:]
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
