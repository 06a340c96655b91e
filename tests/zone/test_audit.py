"""The invariant scan against a real zone process and Redis: a scan in which a
player's route changed, or a player is still in transit, does not count as settled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tessera.common.store import Client, WorldKeys
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import World, ZoneSpec
from tessera.v1 import zone_pb2
from tessera.wire.geometry import Rect
from tessera.zone import audit

pytestmark = pytest.mark.integration


@pytest.fixture
async def world(redis_url: str, redis: Client) -> AsyncIterator[World]:
    w = World(redis, redis_url)
    yield w
    w.stop()


async def test_settle_waits_for_a_scan_in_which_nobody_moved(world: World) -> None:
    await world.start_all([ZoneSpec("a", Rect(-100, -100, 100, 100))])
    await world.join("a", "p")
    routes = WorldKeys(world.world).routes

    async def churn() -> None:  # another player's route rewritten every 5 ms for 1 s
        for epoch in range(200):
            await world.redis.hset(routes, "x", f"a|{epoch + 1}")
            await asyncio.sleep(0.005)
        await world.redis.hdel(routes, "x")

    task = asyncio.create_task(churn())
    await asyncio.sleep(0.05)
    report = await audit.settle(
        world.redis, world.world, world.addresses(), {"p"}, channel=LOCAL.channel
    )
    await task
    assert report.ok and report.moved == [] and report.players == 1, report


async def test_a_player_whose_commit_is_never_taken_is_lost_once_settle_gives_up(
    world: World,
) -> None:
    await world.start_all([ZoneSpec("a", Rect(-100, -100, 100, 100))])
    keys = WorldKeys(world.world)
    # q is committed to zone "b", whose inbox no process reads ("b" is asked at a's
    # address, which owns nothing), so q's COMMIT stays queued.
    state = zone_pb2.EntityState(entity_id=99, player_id="q", zone="b", epoch=2)
    commit = zone_pb2.HandoffCommit(entity_id=99, epoch=2, entity=state)
    await world.redis.xadd(
        keys.zone_inbox("b"), {"m": zone_pb2.InboxMessage(commit=commit).SerializeToString()}
    )
    await world.redis.hset(keys.routes, "q", "b|2")
    addresses = {"a": world.addresses()["a"], "b": world.addresses()["a"]}
    scan = await audit.scan(world.redis, world.world, addresses, {"q"}, channel=LOCAL.channel)
    assert scan.ok and scan.in_transit == ["q"] and scan.lost == []
    report = await audit.settle(
        world.redis, world.world, addresses, {"q"}, channel=LOCAL.channel, timeout_s=0.5
    )
    assert report.lost == ["q"] and not report.ok
