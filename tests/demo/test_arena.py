"""The whole system through the demo's stack (real redis-server, auth, relay,
matchmaking, the operator's local runtime and its zones): an arena match moves
two players from the open world into their match's instance zone and, once the
result is reported, back, without a disconnect; the instance zone then goes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tessera.common.store import WorldKeys
from tessera.demo.arena import Arena
from tessera.demo.stack import WORLD, Stack
from tessera.demo.world import DemoSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(DemoSettings(bots=4, duration_s=30, world_m=1000), tmp_path / "stack")
    s.start()
    try:
        yield s
    finally:
        s.stop()


async def test_an_arena_match_plays_in_its_instance_zone_and_returns_to_the_open_world(
    stack: Stack,
) -> None:
    record = await Arena.for_stack(stack, play_s=1.0).play("test")

    assert record.instance.startswith("inst-") and record.match_id.startswith(record.instance[5:])
    assert record.same_entities
    assert record.disconnects == 0
    redis = Redis.from_url(stack.redis.url, decode_responses=True)
    keys = WorldKeys(WORLD)
    try:
        deadline = time.monotonic() + 30
        while await redis.exists(keys.zone_status(record.instance)):
            assert time.monotonic() < deadline, f"{record.instance} still heartbeats"
            await asyncio.sleep(0.2)
        events: Any = await redis.xrange(keys.events)
        decisions = {(fields["decision"], fields["zone"]) for _, fields in events}
        assert {("Instance", record.instance), ("InstanceEnd", record.instance)} <= decisions
    finally:
        await redis.aclose()
