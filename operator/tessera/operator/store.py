"""The operator's only Redis access: zone heartbeats (through the shared reader
in tessera.common.store) and the matchmaker's instance requests in, the zone map
and scaling events out (world keys in tessera.common.store.WorldKeys).

Instance requests: the stream ``tessera:{mm}:instances:<world>`` (written by the
matchmaker), read through the consumer group ``tessera-operator`` with one fixed
consumer name, so an operator replica elected after another one reads the
entries its predecessor left unacknowledged."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from tessera.common.store import Client, WorldKeys, instances_stream, read_heartbeats
from tessera.v1 import common_pb2, zone_pb2

EVENTS_MAXLEN = 1000
INSTANCES_GROUP = "tessera-operator"
INSTANCES_CONSUMER = "operator"
# Entries read per XREADGROUP call; pending ones are paged through up to PENDING_MAX.
INSTANCES_PAGE = 500
PENDING_MAX = 20000

Entry = tuple[str, dict[bytes, bytes]]

# Replace the zone map only if it still holds what the caller read (ARGV[1], ''
# for none) with ARGV[2]: 1 if replaced, or found replaced already (this call run
# before, its answer lost and the command retried). A script rather than
# WATCH/MULTI: a cluster client runs each command of a transaction on a thread.
_SWAP_MAP = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur == ARGV[2] then return 1 end
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def _bytes(data: bytes | str) -> bytes:
    return data if isinstance(data, bytes) else data.encode()


class OperatorStore:
    """Reads zone statuses, publishes zone maps, appends scaling events."""

    def __init__(self, redis: Client) -> None:
        self.redis = redis
        self._swap_map = redis.register_script(_SWAP_MAP)

    async def zone_statuses(
        self, world: str, zones: Sequence[str]
    ) -> dict[str, zone_pb2.ZoneStatus]:
        """The latest heartbeat of each zone that has a live one (TTL not expired).
        A heartbeat that does not parse is left out, as if missing."""
        return await read_heartbeats(self.redis, world, zones)

    async def zone_map(self, world: str) -> zone_pb2.ZoneMap | None:
        data = await self.redis.get(WorldKeys(world).zone_map)
        return None if data is None else zone_pb2.ZoneMap.FromString(_bytes(data))

    async def publish_zone_map(
        self,
        world: str,
        world_bounds: common_pb2.Bounds,
        entries: Iterable[zone_pb2.ZoneMapEntry],
    ) -> int:
        """Store the zone map if it differs from the stored one, with the next
        version, and announce it on ``zone_map_changed``. Returns the version now
        in Redis. Optimistic: a concurrent writer makes it read again and retry.
        The announcement follows the write."""
        keys = WorldKeys(world)
        wanted = sorted(entries, key=lambda e: e.zone)
        while True:
            data = await self.redis.get(keys.zone_map)
            current = zone_pb2.ZoneMap.FromString(_bytes(data)) if data else None
            if (
                current is not None
                and current.world_bounds == world_bounds
                and list(current.zones) == wanted
            ):
                return int(current.version)
            version = (current.version if current else 0) + 1
            new = zone_pb2.ZoneMap(
                world=world, version=version, world_bounds=world_bounds, zones=wanted
            )
            swapped = await self._swap_map(
                keys=[keys.zone_map], args=[data or b"", new.SerializeToString()]
            )
            if swapped:
                await self.redis.publish(keys.zone_map_changed, str(version))
                return version

    async def append_event(self, world: str, fields: Mapping[str, str]) -> None:
        """Add a scaling event to the world's capped event stream."""
        entry: dict[FieldT, EncodableT] = {k: v for k, v in fields.items()}
        await self.redis.xadd(
            WorldKeys(world).events, entry, maxlen=EVENTS_MAXLEN, approximate=True
        )

    async def instance_entries(self, world: str) -> list[Entry]:
        """Instance requests not yet acknowledged, oldest first: the group's
        pending entries (read before, not yet taken care of), then new ones. An
        entry trimmed from the stream while pending comes with no fields."""
        key = instances_stream(world)
        try:
            return await self._read_instances(key)
        except ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
        try:
            await self.redis.xgroup_create(key, INSTANCES_GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):  # another pass created it meanwhile
                raise
        return await self._read_instances(key)

    async def _read_instances(self, key: str) -> list[Entry]:
        out: list[Entry] = []
        after = "0"
        while len(out) < PENDING_MAX:
            page = await self._read_group(key, after)
            out += page
            if len(page) < INSTANCES_PAGE:
                break
            after = page[-1][0]
        return out + await self._read_group(key, ">")

    async def _read_group(self, key: str, after: str) -> list[Entry]:
        reply: Any = await self.redis.xreadgroup(
            INSTANCES_GROUP, INSTANCES_CONSUMER, {key: after}, count=INSTANCES_PAGE
        )
        out: list[Entry] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                out.append((_bytes(entry_id).decode(), dict(fields or {})))
        return out

    async def ack_instances(self, world: str, ids: Sequence[str]) -> None:
        """Acknowledge instance requests that have been taken care of."""
        if ids:
            await self.redis.xack(instances_stream(world), INSTANCES_GROUP, *ids)
