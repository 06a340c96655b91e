"""A zone process whose game module cannot load, or an instance zone whose module's
rules have nowhere to report, never reports ready (one that loads serves:
tests/examples/test_resources.py, tests/zone/test_results.py); one that serves has
loaded its kernels without scipy."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.common.store import Client, read_heartbeats
from tessera.harness.zones import World
from tessera.wire.geometry import Rect

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("studio_missing_game", "game module 'studio_missing_game' failed to import"),
        ("tessera.game.view", "game module 'tessera.game.view' has no GAME"),
    ],
)
async def test_a_zone_without_its_game_never_serves(
    redis_url: str, redis: Client, module: str, message: str
) -> None:
    world = World(redis, redis_url, env={"TESSERA_GAME_MODULE": module})
    with pytest.raises(RuntimeError, match="did not start") as err:
        await world.start("z", Rect(-100, -100, 100, 100))
    assert message in str(err.value)
    assert await read_heartbeats(redis, world.world, ["z"]) == {}


async def test_an_instance_zone_with_rules_needs_where_to_report(
    redis_url: str, redis: Client
) -> None:
    world = World(redis, redis_url, env={"TESSERA_GAME_MODULE": "tessera.examples.arena"})
    with pytest.raises(RuntimeError, match="did not start") as err:
        await world.start_instance("inst-m1", "m1")
    assert "TESSERA_MATCHMAKING_ADDRESS" in str(err.value)
    assert await read_heartbeats(redis, world.world, ["inst-m1"]) == {}


def mapped_files(pid: int) -> str:
    """The memory map of a process: every shared object it has loaded."""
    return Path(f"/proc/{pid}/maps").read_text()


async def test_a_serving_zone_has_loaded_numba_but_not_scipy(redis_url: str, redis: Client) -> None:
    world = World(redis, redis_url)
    try:
        proc = await world.start("z", Rect(-100, -100, 100, 100))
        mapped = mapped_files(proc.pid)
    finally:
        world.stop()
    assert "/llvmlite/" in mapped  # the kernels were loaded before it served
    assert "/scipy/" not in mapped and "/scipy.libs/" not in mapped
