"""The zone's Redis adapter against a real redis-server."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from tessera.common.store import WorldKeys
from tessera.v1 import common_pb2, zone_pb2
from tessera.zone.store import ZoneStore, parse_route


async def test_routes_are_compare_and_set_and_published(redis: Redis) -> None:
    store = ZoneStore(redis, world="w", zone="z1")
    keys = WorldKeys("w")
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.routes_changed)
    await pubsub.get_message(timeout=1)  # subscribe confirmation
    assert await store.claim_route("p", "", 1)
    assert not await store.claim_route("p", "", 2)  # someone claimed it already
    assert await store.claim_route("p", "z1|1", 2)
    route = await store.route("p")
    assert route is not None and (route.zone, route.epoch) == ("z1", 2)
    await redis.hset(keys.routes, "q", "z2|7")
    assert await store.routes_here() == {"p": 2}
    assert not await store.release_route("q")  # not ours
    assert await store.release_route("p")
    messages = []
    for _ in range(3):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if msg:
            messages.append(msg["data"])
    assert messages == [b"p|z1|1", b"p|z1|2", b"p||0"]
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert parse_route("bad") is None


async def test_checkpoints_ids_and_heartbeat(redis: Redis) -> None:
    a = ZoneStore(redis, world="w", zone="z1", id_block=3)
    b = ZoneStore(redis, world="w", zone="z2", id_block=3)
    ids = await a.next_ids(2) + await b.next_ids(2) + await a.next_ids(4)
    assert len(set(ids)) == len(ids) and min(ids) >= 1
    states = [
        zone_pb2.EntityState(entity_id=i, player_id=f"p{i}", position=common_pb2.Vec3(x=i))
        for i in range(3)
    ]
    await a.save_checkpoints(states)
    loaded = await a.load_checkpoints(["p1", "p2", "nobody"])
    assert sorted(loaded) == ["p1", "p2"] and loaded["p2"].position.x == 2
    status = zone_pb2.ZoneStatus(players=5)
    await a.heartbeat(status, ttl_s=0.2)
    keys = WorldKeys("w")
    assert await redis.smembers(keys.zones) == {b"z1"}
    raw = await redis.get(keys.zone_status("z1"))
    assert isinstance(raw, bytes) and zone_pb2.ZoneStatus.FromString(raw).players == 5
    assert await b.zone_alive("z1")
    await asyncio.sleep(0.3)
    assert not await b.zone_alive("z1")
