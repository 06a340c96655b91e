"""The whole system through the demo's stack (real redis-server, PostgreSQL, auth,
relay, matchmaking, the operator's local runtime and its zones): an arena match
moves two players from the open world into their match's instance zone, which
runs the arena module; the players fight, the zone ends the match by its rules and
reports the result itself (the script holds no service credentials), matchmaking
rates it, and the players go back without a disconnect; the instance zone then goes."""

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
    # A 10 s arena time limit (a quarter of the run): the match ends by kills or time.
    s = Stack(DemoSettings(bots=4, duration_s=40, world_m=1000), tmp_path / "stack")
    s.start()
    try:
        yield s
    finally:
        s.stop()


async def test_an_arena_match_plays_in_its_instance_zone_and_returns_to_the_open_world(
    stack: Stack,
) -> None:
    arena = Arena.for_stack(stack)
    assert arena.time_limit_s == 10
    record = await arena.play("test")

    assert record.instance.startswith("inst-") and record.match_id.startswith(record.instance[5:])
    assert record.same_entities
    assert record.disconnects == 0
    # The zone reported (its audit record's actor is its service client, which
    # only instance zones hold), and matchmaking rated both players by it.
    assert record.reporter == "zone"
    assert sorted(record.outcomes) in (["draw", "draw"], ["loss", "win"])
    assert record.rated  # a draw of equals moves sigma only
    assert record.ended_by in ("score", "time") and len(record.scores) == 2
    if record.ended_by == "score":
        assert max(record.scores) == 3
    wins = [o == "win" for o in record.outcomes]
    if any(wins):  # the winner is the team with the higher score the zone told
        assert record.scores[wins.index(True)] > min(record.scores)
    else:
        assert record.scores[0] == record.scores[1]
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


def test_a_match_starts_only_if_its_time_limit_ends_within_the_run() -> None:
    arena = Arena("a", "m", "redis://r", "", WORLD, time_limit_s=10)
    assert arena.fits(100.0, None)
    assert arena.fits(100.0, 125.0) and not arena.fits(100.1, 125.0)  # 10 s + 15 s
