"""The relay's Redis reads and the routes_changed subscription, on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tessera.common.store import Client, WorldKeys
from tessera.relay.routing import Route
from tessera.relay.store import RelayStore
from tessera.v1 import common_pb2, zone_pb2

pytestmark = pytest.mark.redis_cluster

KEYS = WorldKeys("w")


async def test_routes_and_addresses(redis: Client) -> None:
    store = RelayStore(redis, "w")
    await redis.hset(KEYS.routes, mapping={"alice": "zone-a|3", "bob": "garbage"})
    assert await store.route("alice") == Route("zone-a", 3)
    assert await store.route("bob") is None
    assert await store.routes(["alice", "bob", "carol"]) == {"alice": Route("zone-a", 3)}
    zone_map = zone_pb2.ZoneMap(
        world="w", version=1, zones=[zone_pb2.ZoneMapEntry(zone="zone-b", address="h:2")]
    )
    await redis.set(KEYS.zone_map, zone_map.SerializeToString())
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="w", zone="zone-a"),
        address="h:1",
        state=zone_pb2.ZONE_STATE_ACTIVE,
    )
    await redis.sadd(KEYS.zones, "zone-a", "zone-gone")
    await redis.set(KEYS.zone_status("zone-a"), status.SerializeToString())
    assert await store.zone_address("zone-a") == "h:1"
    assert await store.zone_address("zone-b") == "h:2"
    assert await store.zone_address("zone-c") is None
    assert set(await store.zone_statuses()) == {"zone-a"}
    assert (await store.zone_map()) == zone_map


async def test_watch_routes_delivers_changes(redis: Client) -> None:
    store = RelayStore(redis, "w")
    seen: list[tuple[str, Route | None, str]] = []
    ready = asyncio.Event()
    task = asyncio.create_task(store.watch_routes(lambda p, r, t: seen.append((p, r, t)), ready))
    await asyncio.wait_for(ready.wait(), 5)
    await redis.publish(KEYS.routes_changed, "alice|zone-b|4|00-traced-01")
    await redis.publish(KEYS.routes_changed, "alice||0")  # removal: delivered as None
    await redis.publish(KEYS.routes_changed, "nonsense")  # malformed: ignored
    await redis.publish(KEYS.routes_changed, "bob|zone-a|1")
    for _ in range(100):
        if len(seen) >= 3:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert seen == [
        ("alice", Route("zone-b", 4), "00-traced-01"),
        ("alice", None, ""),
        ("bob", Route("zone-a", 1), ""),
    ]
