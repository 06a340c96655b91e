"""An instance zone as a real process next to open-world zones: outside the zone map,
it hands nothing over and shows no ghosts until it drains; then every player goes to
the open-world zone owning its position (or the nearest), none lost or duplicated."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import grpc
import pytest

from tessera.common.errors import detail_of
from tessera.common.store import Client, WorldKeys
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import Driver, World, ZoneSpec
from tessera.v1 import common_pb2, zone_pb2
from tessera.wire.geometry import Rect
from tessera.zone import audit
from tessera.zone.store import read_routes

pytestmark = pytest.mark.integration

FAST = {"TESSERA_MAX_SPEED_MPS": "20", "TESSERA_ACCEL_MPS2": "200"}
# The map covers the middle of the world only, so some points have no owner.
WEST, EAST = Rect(-200, -200, 0, 200), Rect(0, -200, 200, 200)
MATCH = "0123456789abcdef0123456789abcdef"
INSTANCE = "inst-0123456789abcdef01234567"


@pytest.fixture
async def world(redis_server: LocalRedis, redis: Client) -> AsyncIterator[World]:
    w = World(redis, redis_server.url, env=FAST)
    w.world_bounds = Rect(-300, -300, 300, 300)
    await w.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
    await w.start_instance(INSTANCE, MATCH, {"TESSERA_NPCS": "4"})
    yield w
    w.stop()


async def heartbeat(redis: Client, world: str, zone: str) -> zone_pb2.ZoneStatus:
    raw = await redis.get(WorldKeys(world).zone_status(zone))
    assert isinstance(raw, bytes), zone
    return zone_pb2.ZoneStatus.FromString(raw)


async def test_instance_stays_apart_then_drains_into_the_open_world(world: World) -> None:
    assert (await heartbeat(world.redis, world.world, INSTANCE)).instance == MATCH
    assert (await heartbeat(world.redis, world.world, "west")).instance == ""
    status = await world.status(INSTANCE)
    assert status.instance == MATCH and status.state == zone_pb2.ZONE_STATE_ACTIVE
    assert (status.bounds.min_x, status.bounds.max_x) == (-300, 300)
    driver = Driver(world)
    try:
        # Walkers west of the map's west/east border, one far east with no map
        # owner, one at the world's edge; a west player stands near the border.
        walkers = {f"w{i}": (-12.0 + i, 4.0 * i) for i in range(8)}
        spots = {"far": (250.0, 250.0), "edge": (295.0, 0.0), **walkers}
        for player, (x, z) in spots.items():
            await driver.join(player, INSTANCE, x, z)
        await driver.join("local", "west", -5.0, 0.0)
        everyone = {*spots, "local"}

        def crossed() -> bool:
            xs = [pos[0] for p in walkers if (pos := driver.position(p)) is not None]
            return len(xs) == len(walkers) and min(xs) > 1.0

        # Walkers east across x = 0: 1.2 s on a quiet machine, at most 20 s when starved.
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() < start + 1.2 or (loop.time() < start + 20 and not crossed()):
            for player in walkers:
                driver.move(player, yaw=math.pi / 2)
            driver.move("edge", yaw=math.pi / 2)  # into the world's edge
            await asyncio.sleep(1 / 30)
        for player in [*walkers, "edge"]:
            driver.move(player, yaw=0.0, forward=0.0)
        await asyncio.sleep(0.3)
        # Nothing crossed the map border out of the instance, nothing came in.
        assert driver.handovers == 0
        inst = await world.status(INSTANCE, entities=True)
        assert inst.players == len(spots) and inst.npcs == 4 and inst.ghosts == 0
        assert sorted(p for p in inst.entity_players if p) == sorted(spots)
        assert max(inst.sample_x) <= 300.0
        edge = driver.position("edge")
        assert edge is not None and 280.0 < edge[0] <= 300.0, edge
        xs = [pos[0] for p in walkers if (pos := driver.position(p)) is not None]
        assert len(xs) == len(walkers) and min(xs) > 1.0, xs  # all across the map border
        # The instance is nobody's neighbour: west shows no ghost of the walkers near
        # its border, east only the west player.
        assert (await world.status("west")).ghosts == 0
        assert (await world.status("east")).ghosts == 1
        report = await audit.settle(
            world.redis, world.world, world.addresses(), everyone, channel=LOCAL.channel
        )
        assert report.ok, report
        # A player owned by a live open-world zone joins the instance only after
        # leaving there; it keeps its entity.
        channel, stub = world.stub(INSTANCE)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Join(zone_pb2.JoinRequest(player_id="local", relay_id="testbed"))
            assert detail_of(err.value).reason == "ROUTED_ELSEWHERE"
        west_channel, west = world.stub("west")
        async with west_channel:
            await west.Leave(zone_pb2.LeaveRequest(player_id="local"))
        entity = driver.entity["local"]
        assert await driver.join("local", INSTANCE, 0.0, 0.0) == entity
        assert (await world.status("west")).players == 0
        # Even new, smaller bounds hand nothing to the open world before the end
        # (the walkers now stand outside them, inside east).
        channel, stub = world.stub(INSTANCE)
        async with channel:
            await stub.SetBounds(
                zone_pb2.SetBoundsRequest(
                    bounds=common_pb2.Bounds(min_x=-240, min_z=-240, max_x=0, max_z=240),
                    map_version=world.version,
                )
            )
        await asyncio.sleep(0.3)
        assert driver.handovers == 0
        assert (await world.status(INSTANCE)).players == len(everyone)
        # The match ends: drain with no target.
        positions = {p: driver.position(p) for p in spots}
        await world.drain(INSTANCE)
        done = await world.wait_status(
            INSTANCE, lambda s: s.state == zone_pb2.ZONE_STATE_DRAINED, 15.0
        )
        assert done.players == 0 and done.drain_remaining == 0
        report = await audit.settle(
            world.redis, world.world, world.addresses(), everyone, channel=LOCAL.channel
        )
        assert report.ok, report
        assert report.players == len(everyone) and not report.duplicates and not report.lost
        west_status = await world.status("west", entities=True)
        east_status = await world.status("east", entities=True)
        # Players only: the instance's NPCs ended with it.
        assert west_status.npcs == 0 and east_status.npcs == 0
        assert west_status.players + east_status.players == len(everyone)
        routes = await read_routes(world.redis, world.world)
        for player, pos in positions.items():
            assert pos is not None
            # The owner of its position, or the nearest zone (far, edge); a point on
            # the border may have been quantized across it.
            expected = {"west"} if pos[0] < -0.5 else {"east"} if pos[0] > 0.5 else {"west", "east"}
            assert routes[player].zone in expected, (player, pos, routes[player])
        assert routes["local"].zone in ("west", "east")
        # The relay followed every handover and snapshots keep coming from the new owner.
        assert driver.handovers == len(everyone)
        await asyncio.sleep(0.3)
        assert all(driver.position(p) is not None for p in everyone)
    finally:
        await driver.close()
