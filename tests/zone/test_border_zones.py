"""Handoffs between real zone processes over a real Redis: crossing, corners,
split, merge, drain and kill -9 mid-handoff, with an invariant scan after every step
(the crowd crossing also on a real Redis Cluster)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest

from tessera.common.store import Client
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import Driver, World, ZoneSpec
from tessera.v1 import common_pb2, zone_pb2
from tessera.wire.geometry import Rect
from tessera.zone import audit, invariants

pytestmark = pytest.mark.integration

FAST = {"TESSERA_MAX_SPEED_MPS": "20", "TESSERA_ACCEL_MPS2": "200"}
WEST, EAST = Rect(-200, -200, 0, 200), Rect(0, -200, 200, 200)


@pytest.fixture
async def world(redis_url: str, redis: Client) -> AsyncIterator[World]:
    w = World(redis, redis_url, env=FAST)
    yield w
    w.stop()


async def settled(world: World, players: set[str]) -> invariants.Report:
    report = await audit.settle(
        world.redis, world.world, world.addresses(), players, channel=LOCAL.channel
    )
    assert report.ok, report
    assert report.players == len(players)
    return report


async def test_walkers_cross_back_and_forth_and_see_across(world: World) -> None:
    await world.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
    driver = Driver(world)
    try:
        players = [f"p{i}" for i in range(8)]
        for i, p in enumerate(players):
            await driver.join(p, "west", -20.0 + i, 4.0 * i)
        watcher = "watch"
        await driver.join(watcher, "west", -15.0, 0.0)
        await settled(world, {*players, watcher})
        await driver.pace(players, (-25.0, 25.0), 5.0)
        assert driver.handovers >= len(players), driver.handovers
        report = await settled(world, {*players, watcher})
        assert report.duplicates == [] and report.lost == []
        east = await world.status("east", entities=True)
        west = await world.status("west", entities=True)
        assert east.players + west.players == len(players) + 1
        # Every walker kept receiving snapshots wherever it went (no long stall).
        assert driver.max_gap_s < 1.0, driver.max_gap_s
        # A walker standing just across the border is seen from the other side:
        # walk it into the east (however long a loaded machine takes), stop it there;
        # the west then holds a ghost of every east entity (all within the aura) and
        # the watcher sees the walker in its snapshots.
        mover = players[0]
        deadline = asyncio.get_running_loop().time() + 10.0
        while not (
            driver.zone_of[mover] == "east" and (pos := driver.position(mover)) and pos[0] >= 6.0
        ):
            assert asyncio.get_running_loop().time() < deadline, driver.position(mover)
            await driver.pace([mover], (8.0, 12.0), 0.2)
        driver.move(mover, yaw=math.pi / 2, forward=0.0)
        deadline = asyncio.get_running_loop().time() + 3.0
        while True:
            west = await world.status("west")
            east = await world.status("east", entities=True)
            if (
                driver.entity[mover] in east.entity_ids
                and west.ghosts == len(east.entity_ids)
                and driver.sees(watcher, driver.entity[mover])
            ):
                break
            assert asyncio.get_running_loop().time() < deadline, (west.ghosts, east.entity_ids)
            await asyncio.sleep(0.05)
    finally:
        await driver.close()


@pytest.mark.redis_cluster
async def test_a_crowd_crosses_at_once(world: World) -> None:
    await world.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
    driver = Driver(world)
    try:
        crowd = [f"m{i}" for i in range(40)]
        for i, p in enumerate(crowd):
            await driver.join(p, "west", -15.0 + (i % 5), -20.0 + i)
        # Everyone east at 20 m/s: 2.5 s is enough on a quiet machine; on a
        # loaded one keep walking until the whole crowd is east (at most 20 s).
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() < start + 2.5 or (
            loop.time() < start + 20 and any(driver.zone_of[p] != "east" for p in crowd)
        ):
            for p in crowd:
                driver.move(p, yaw=math.pi / 2)
            await asyncio.sleep(1 / 30)
        report = await settled(world, set(crowd))
        east = await world.status("east", entities=True)
        assert east.players == len(crowd) and report.entities == len(crowd)
        assert all(driver.zone_of[p] == "east" for p in crowd)
    finally:
        await driver.close()


async def test_four_zone_corner(world: World) -> None:
    quads = [
        ZoneSpec("sw", Rect(-200, -200, 0, 0)),
        ZoneSpec("se", Rect(0, -200, 200, 0)),
        ZoneSpec("nw", Rect(-200, 0, 0, 200)),
        ZoneSpec("ne", Rect(0, 0, 200, 200)),
    ]
    await world.start_all(quads)
    driver = Driver(world)
    try:
        players = [f"c{i}" for i in range(12)]
        for i, p in enumerate(players):
            await driver.join(p, "sw", -3.0 - (i % 3), -3.0 - (i // 3))
        end = asyncio.get_running_loop().time() + 4.0
        step = 0
        while asyncio.get_running_loop().time() < end:
            for i, p in enumerate(players):  # circles of ~12 m around the corner
                driver.move(p, yaw=(step / 15.0 + i) % (2 * math.pi))
            step += 1
            await asyncio.sleep(1 / 30)
        report = await settled(world, set(players))
        zones_used = {driver.zone_of[p] for p in players}
        assert len(zones_used) >= 2, zones_used
        assert report.entities == len(players)
    finally:
        await driver.close()


async def test_zones_read_a_new_map_on_its_notice_not_at_their_poll(
    redis_url: str, redis: Client
) -> None:
    """The operator announces each map version on ``map:changed``: a zone reads
    the map then, long before its (here minute-long) poll would."""
    world = World(redis, redis_url, env={**FAST, "TESSERA_MAP_POLL_S": "60"})
    try:
        await world.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
        for version in (2, 3):
            await asyncio.sleep(0.5)  # the zones' subscriptions to the notices hold by now
            assert await world.publish_map() == version
            deadline = asyncio.get_running_loop().time() + 3.0
            while {(await world.status(z)).map_version for z in ("west", "east")} != {version}:
                assert asyncio.get_running_loop().time() < deadline, version
                await asyncio.sleep(0.05)
    finally:
        world.stop()


async def test_split_then_merge_under_load(world: World) -> None:
    whole = Rect(-200, -200, 200, 200)
    await world.start_all([ZoneSpec("a", whole)])
    driver = Driver(world)
    try:
        players = [f"s{i}" for i in range(20)]
        for i, p in enumerate(players):
            await driver.join(p, "a", -30.0 + 3 * i, 2.0 * (i % 5))
        walk = asyncio.create_task(driver.pace(players, (-30.0, 30.0), 60.0))
        # Split: a keeps the west half, a standby zone b gets the east half.
        world.bounds["b"] = EAST
        await world.start("b", None)
        await world.publish_map()
        channel, stub = world.stub("b")
        async with channel:
            await stub.SetBounds(
                zone_pb2.SetBoundsRequest(
                    bounds=common_pb2.Bounds(min_x=0, min_z=-200, max_x=200, max_z=200),
                    map_version=world.version,
                )
            )
        await world.set_bounds("a", WEST)
        await asyncio.sleep(1.5)
        for _ in range(100):  # pacers cross into b within 1.5 s unless starved
            if any(driver.zone_of[p] == "b" for p in players):
                break
            await asyncio.sleep(0.1)
        report = await settled(world, set(players))
        b = await world.status("b", entities=True)
        assert b.players > 0 and report.players == len(players)
        # Merge: a grows back to the whole world, b drains into it.
        await world.set_bounds("a", whole)
        await world.drain("b")
        deadline = asyncio.get_running_loop().time() + 20
        while asyncio.get_running_loop().time() < deadline:
            if (await world.status("b")).state == 5:  # DRAINED
                break
            await asyncio.sleep(0.05)
        b = await world.status("b", entities=True)
        assert b.state == 5 and b.players == 0 and not b.entity_ids
        report = await settled(world, set(players))
        assert (await world.status("a")).players == len(players)
        walk.cancel()
        assert driver.max_gap_s < 1.5, driver.max_gap_s
    finally:
        await driver.close()


async def test_drain_deadline_forces_handoffs_to_a_named_target(world: World) -> None:
    await world.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
    driver = Driver(world)
    try:
        players = [f"d{i}" for i in range(30)]
        for i, p in enumerate(players):
            await driver.join(p, "east", 10.0 + i, 0.0)
        channel, stub = world.stub("east")
        async with channel:
            resp = await stub.Drain(
                zone_pb2.DrainRequest(
                    deadline_s=0.01, target=common_pb2.ZoneRef(world=world.world, zone="west")
                )
            )
            assert resp.remaining == len(players)
            with pytest.raises(Exception, match="cannot drain into itself"):
                await stub.Drain(
                    zone_pb2.DrainRequest(target=common_pb2.ZoneRef(world=world.world, zone="east"))
                )
            # Joins are refused while draining.
            with pytest.raises(Exception, match="does not accept joins"):
                await stub.Join(zone_pb2.JoinRequest(player_id="late"))
        for _ in range(100):
            status = await world.status("east")
            if status.state == 5:
                break
            await asyncio.sleep(0.05)
        assert status.state == 5 and status.drain_remaining == 0
        await settled(world, set(players))
        assert (await world.status("west")).players == len(players)
    finally:
        await driver.close()


@pytest.mark.parametrize("victim", ["west", "east"])
async def test_kill_9_mid_handoff(world: World, victim: str) -> None:
    await world.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
    driver = Driver(world)
    try:
        players = [f"k{i}" for i in range(16)]
        for i, p in enumerate(players):
            await driver.join(p, "west" if i % 2 else "east", -8.0 + i, 3.0 * i)
        walk = asyncio.create_task(driver.pace(players, (-12.0, 12.0), 60.0))
        await asyncio.sleep(1.5)
        assert driver.handovers > 0
        world.kill(victim)  # in the middle of continuous handoffs
        await asyncio.sleep(0.3)
        await world.start(victim, world.bounds[victim])
        await world.publish_map()
        await driver.resync()
        await asyncio.sleep(1.0)
        await driver.resync()
        report = await settled(world, set(players))
        assert report.entities == len(players)
        walk.cancel()
    finally:
        await driver.close()
