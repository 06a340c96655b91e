"""The invariant scan against a real zone process and Redis: a scan in which a
player's route changed does not count as settled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tessera.common.store import Client, WorldKeys
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import World, ZoneSpec
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
