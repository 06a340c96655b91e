"""The zone's writes to PostgreSQL: the event log, and zone processes that load,
write back and resume player data."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tessera.common import playerdata
from tessera.common.database import Pool
from tessera.common.playerdata import PlayerData
from tessera.harness.playerdata import row_after, settled_row
from tessera.harness.redis import LocalRedis
from tessera.harness.zones import Driver, World, ZoneSpec
from tessera.v1 import zone_pb2
from tessera.wire.geometry import Rect
from tessera.zone.entities import Record
from tessera.zone.events import DIED, HIT_DEALT, HIT_TAKEN, Event
from tessera.zone.persistence import Persistence


def persistence(pool: Pool) -> Persistence:
    return Persistence(
        pool,
        world="w",
        zone="z1",
        match="m1",
        capacity=100,
        event_capacity=1000,
        interval_s=60.0,
        event_interval_s=60.0,
    )


async def test_combat_events_and_presence_are_logged(database: Pool) -> None:
    p = persistence(database)
    events = [
        Event("alice", HIT_DEALT, 42, 25.0, "ranged"),
        Event("bob", HIT_TAKEN, 7, 25.0),  # the hit dealt is the record; not logged twice
        Event("bob", DIED, 7),
    ]
    p.log(events, {"alice": (1.0, 2.0), "bob": (3.0, 4.0)})
    p.presence("join", "carol", 5.0, 6.0)
    await p.flush()
    rows = await database.fetch(
        "SELECT kind, player, other, weapon, amount, x, z, zone, match FROM game_events"
        " ORDER BY kind"
    )
    assert [tuple(r) for r in rows] == [
        ("death", "bob", 7, "", 0.0, 3.0, 4.0, "z1", "m1"),
        ("hit", "alice", 42, "ranged", 25.0, 1.0, 2.0, "z1", "m1"),
        ("join", "carol", 0, "", 0.0, 5.0, 6.0, "z1", "m1"),
    ]


async def test_saves_keep_the_newest_and_report_refusals(database: Pool) -> None:
    p = persistence(database)
    refused: list[dict[str, int]] = []
    p.refused = refused.append
    older, newer = (Record(1, player_id="a", blob=b"x", data_version=v) for v in (3, 4))
    p.save([newer, older])
    await p.flush()
    row = await playerdata.load(database, "w", "a")
    assert row is not None and (row.version, row.written_by) == (4, "z1")
    p.save([older])
    await p.flush()
    assert refused == [{"a": 4}]


# --- zone processes ---------------------------------------------------------------

AREA = Rect(-200, -200, 200, 200)


def world_env(database_url: str, persist_s: str) -> dict[str, str]:
    return {
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_PERSIST_S": persist_s,
        "TESSERA_MAX_SPEED_MPS": "20",
        "TESSERA_ACCEL_MPS2": "200",
    }


@pytest.fixture
async def world(
    redis_server: LocalRedis, redis: Redis, database: Pool, database_url: str
) -> AsyncIterator[World]:
    w = World(redis, redis_server.url, env=world_env(database_url, "0.2"))
    await w.start_all([ZoneSpec("solo", AREA)])
    yield w
    w.stop()


@pytest.mark.integration
async def test_join_move_leave_then_resume_after_redis_is_flushed(
    world: World, database: Pool
) -> None:
    # A game back end gave the player an inventory (and stats) before the first join.
    stats = {"kills": 3, "deaths": 1, "hits_dealt": 20, "hits_taken": 10}
    offline = PlayerData(
        "w", "alice", (10.0, 0.0, 10.0), 0.0, 100.0, b"sword", 0, 0, 0, "api", **stats
    )
    assert await playerdata.put(database, offline, 0, now=time.time()) is not None
    joined = await world.join("solo", "alice")
    assert joined.restored and (joined.position.x, joined.position.z) == (10.0, 10.0)
    driver = Driver(world)
    try:
        driver.zone_of["alice"] = "solo"
        driver.entity["alice"] = joined.entity_id
        link = await driver.link("solo")
        link.up.put_nowait(zone_pb2.ZoneLinkUp(attach=zone_pb2.Attach(player_id="alice")))
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            driver.move("alice", math.pi / 2)
            await asyncio.sleep(1 / 30)
        written = await row_after(database, "w", "alice", 1)  # the write-behind while playing
        await world.leave("solo", "alice")
        saved = await settled_row(database, "w", "alice", written.version)
    finally:
        await driver.close()
    assert saved.blob == b"sword" and saved.written_by == "solo"
    # The stats were loaded with the player and written back with it.
    assert (saved.kills, saved.deaths, saved.hits_dealt, saved.hits_taken) == (3, 1, 20, 10)
    assert math.dist((saved.position[0], saved.position[2]), (10.0, 10.0)) > 3.0

    # A late write of an old zone (an older version) is refused; the row stays.
    old = PlayerData("w", "alice", (0.0, 0.0, 0.0), 0.0, 1.0, b"", 0, 0, saved.version, "old")
    stale = await playerdata.save_newer(database, [old], now=time.time())
    assert stale == {("w", "alice"): saved.version}
    assert await playerdata.load(database, "w", "alice") == saved

    # Redis lost entirely: no checkpoint, no route; the zone restarts.
    world.kill("solo")
    await world.redis.flushall()
    await world.publish_map()
    await world.start("solo", AREA)
    again = await world.join("solo", "alice")
    assert again.restored
    assert (
        math.dist((again.position.x, again.position.z), (saved.position[0], saved.position[2]))
        < 0.01
    )
    await world.leave("solo", "alice")
    resumed = await row_after(database, "w", "alice", saved.version)
    assert resumed.blob == b"sword" and resumed.kills == 3 and resumed.hits_taken == 10


@pytest.mark.integration
async def test_a_stopping_zone_writes_its_players_before_it_exits(
    redis_server: LocalRedis, redis: Redis, database: Pool, database_url: str
) -> None:
    # A write-behind interval longer than the test: only the stop writes.
    w = World(redis, redis_server.url, env=world_env(database_url, "600"))
    try:
        await w.start_all([ZoneSpec("solo", AREA)])
        await w.join("solo", "bob")
        assert await playerdata.load(database, "w", "bob") is None
        assert await asyncio.to_thread(w.procs["solo"].terminate) == 0
    finally:
        w.stop()
    row = await playerdata.load(database, "w", "bob")
    assert row is not None and (row.version, row.written_by) == (1, "solo")
    assert (row.position[0], row.position[2]) == (0.0, 0.0)


@pytest.mark.integration
async def test_the_version_travels_with_a_handoff_and_fences_the_old_zone(
    redis_server: LocalRedis, redis: Redis, database: Pool, database_url: str
) -> None:
    w = World(redis, redis_server.url, env=world_env(database_url, "0.2"))
    driver = Driver(w)
    try:
        await w.start_all(
            [ZoneSpec("west", Rect(-200, -200, 0, 200)), ZoneSpec("east", Rect(0, -200, 200, 200))]
        )
        await driver.join("cara", "west", -10.0, 0.0)
        in_west = await row_after(database, "w", "cara", 0)
        assert in_west.written_by == "west"
        deadline = time.monotonic() + 20.0
        while driver.zone_of["cara"] != "east":
            assert time.monotonic() < deadline, driver.position("cara")
            await driver.pace(["cara"], (10.0, 20.0), 0.2)
        driver.move("cara", 0.0, forward=0.0)
        # The east zone continues from the version the entity carried.
        in_east = await row_after(database, "w", "cara", in_west.version)
        while in_east.written_by != "east":
            in_east = await row_after(database, "w", "cara", in_east.version)
        # The west zone's last version is older: a late write of it is refused.
        late = dataclasses.replace(in_west, written_by="west", position=(-50.0, 0.0, 0.0))
        stale = await playerdata.save_newer(database, [late], now=time.time())
        assert stale[("w", "cara")] >= in_east.version
        stored = await playerdata.load(database, "w", "cara")
        assert stored is not None and stored.written_by == "east"
    finally:
        await driver.close()
        w.stop()
