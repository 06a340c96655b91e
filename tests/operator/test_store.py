"""The operator's Redis adapter against a real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from tessera.common.store import WorldKeys
from tessera.operator.store import OperatorStore
from tessera.v1 import common_pb2, zone_pb2

WORLD = common_pb2.Bounds(min_x=0, min_z=0, max_x=100, max_z=100)


def entry(zone: str, max_x: float) -> zone_pb2.ZoneMapEntry:
    return zone_pb2.ZoneMapEntry(
        zone=zone, address="h:1", bounds=common_pb2.Bounds(max_x=max_x, max_z=100)
    )


async def test_zone_map_versions_only_change_with_content(redis: Redis) -> None:
    store = OperatorStore(redis)
    pubsub = redis.pubsub()
    await pubsub.subscribe(WorldKeys("earth").zone_map_changed)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    assert await store.publish_zone_map("earth", WORLD, [entry("b", 100), entry("a", 50)]) == 1
    assert await store.publish_zone_map("earth", WORLD, [entry("a", 50), entry("b", 100)]) == 1
    assert await store.publish_zone_map("earth", WORLD, [entry("a", 100)]) == 2
    stored = await store.zone_map("earth")
    assert stored is not None and stored.version == 2 and stored.world == "earth"
    assert [e.zone for e in stored.zones] == ["a"] and stored.world_bounds == WORLD
    messages = []
    for _ in range(2):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        assert message is not None
        messages.append(message["data"])
    assert messages == [b"1", b"2"]
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_concurrent_publishers_never_reuse_a_version(redis: Redis) -> None:
    store = OperatorStore(redis)
    versions = await asyncio.gather(
        *(store.publish_zone_map("earth", WORLD, [entry("a", float(i + 1))]) for i in range(10))
    )
    assert sorted(versions) == list(range(1, 11))


async def test_zone_statuses_skip_missing_and_garbage(redis: Redis) -> None:
    keys = WorldKeys("earth")
    status = zone_pb2.ZoneStatus(players=3, state=zone_pb2.ZONE_STATE_ACTIVE)
    await redis.set(keys.zone_status("a"), status.SerializeToString())
    await redis.set(keys.zone_status("b"), b"\xff\xff not a protobuf")
    store = OperatorStore(redis)
    assert await store.zone_statuses("earth", ["a", "b", "c"]) == {"a": status}
    assert await store.zone_statuses("earth", []) == {}


async def test_events_are_appended_to_a_capped_stream(redis: Redis) -> None:
    store = OperatorStore(redis)
    await store.append_event("earth", {"decision": "Split", "zone": "earth-0", "reason": "r"})
    entries: Any = await redis.xrange(WorldKeys("earth").events)
    assert [fields for _, fields in entries] == [
        {b"decision": b"Split", b"zone": b"earth-0", b"reason": b"r"}
    ]
