"""The zone's writes to PostgreSQL: the event log, and zone processes that load,
write back and resume player data; and the whole round trip through auth and
the relay (register, play, log out, Redis flushed, services restarted, resume)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from tessera.authclient.bearer import bearer_metadata
from tessera.client.bot import Arms, Bot, BotState, Vec, waypoints
from tessera.client.client import GameClient, Intent
from tessera.client.login import connect_token
from tessera.client.transport import UdpTransport
from tessera.common import playerdata
from tessera.common.database import Pool
from tessera.common.playerdata import PlayerData
from tessera.common.store import WorldKeys
from tessera.harness.playerdata import row_after, settled_row
from tessera.harness.redis import LocalRedis
from tessera.harness.stack import Stack
from tessera.harness.zones import Driver, World, ZoneSpec
from tessera.v1 import auth_pb2, auth_pb2_grpc, common_pb2, zone_pb2
from tessera.wire.geometry import Rect
from tessera.zone.entities import Record
from tessera.zone.events import DIED, HIT_DEALT, HIT_TAKEN, Event
from tessera.zone.persistence import Persistence


def persistence(pool: Pool, persisted: frozenset[str] = frozenset()) -> Persistence:
    return Persistence(
        pool,
        world="w",
        zone="z1",
        match="m1",
        capacity=100,
        event_capacity=1000,
        interval_s=60.0,
        event_interval_s=60.0,
        persisted=persisted,
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


async def test_only_persisted_components_are_saved(database: Pool) -> None:
    p = persistence(database, frozenset({"gold"}))
    p.save([Record(1, player_id="a", data_version=1, components={"gold": 7.0, "timer": 0.5})])
    await p.flush()
    row = await playerdata.load(database, "w", "a")
    assert row is not None and row.components == {"gold": 7.0}


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
    stats: dict[str, Any] = {"kills": 3, "deaths": 1, "hits_dealt": 20, "hits_taken": 10}
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


# --- through auth and the relay -------------------------------------------------

PASSWORD = "persistence test password"
BACKEND = "backend-0123456789-secret"
SPOT = (15.0, -10.0)


def stand(state: BotState, position: Vec, others: Sequence[Vec]) -> Intent:
    return Intent()


async def join_through_the_relay(stack: Stack, session: auth_pb2.Session) -> GameClient:
    """Connect with a connect token for ``session``; returns once a snapshot shows
    the player's own entity."""
    client = GameClient(UdpTransport())
    await client.connect(await connect_token(stack.auth.grpc_address, session.access_token))
    deadline = time.monotonic() + 15.0
    while client.world is None or client.world.own_position() is None:
        assert time.monotonic() < deadline, "no snapshot of the player's own entity"
        await asyncio.sleep(0.05)
    return client


def hits_dealt(client: GameClient) -> int:
    kind = zone_pb2.PlayerEvent.HIT_DEALT
    return sum(1 for m in client.events if m.event.kind == kind)


@pytest.mark.integration
async def test_register_play_log_out_flush_redis_restart_then_resume(
    redis_server: LocalRedis, redis: Redis, database: Pool, database_url: str, tmp_path: Path
) -> None:
    """The issue's round trip through the real path: accounts registered at auth, a
    game back end's inventory written through the player-data API, play over UDP
    through the relay (walk to a spot, shoot another player), log out; then Redis
    flushed and auth, the zone and the relay restarted on the same database: the
    player logs in again and resumes where they left, with the same data."""
    world = World(redis, redis_server.url, env=world_env(database_url, "600"))
    stack = Stack(
        world,
        database_url,
        tmp_path,
        auth_env={
            "TESSERA_AUTH_SERVICE_CLIENTS": f"backend={BACKEND}",
            "TESSERA_AUTH_ARGON2_TIME_COST": "1",
            "TESSERA_AUTH_ARGON2_MEMORY_KIB": "64",
        },
    )
    clients: list[GameClient] = []
    try:
        await stack.start([ZoneSpec("solo", AREA)])
        async with grpc.aio.insecure_channel(stack.auth.grpc_address) as channel:
            auth: Any = auth_pb2_grpc.AuthStub(channel)
            for name in ("alice", "bob"):
                await auth.Register(auth_pb2.RegisterRequest(username=name, password=PASSWORD))
            login = auth_pb2.LoginRequest(username="alice", password=PASSWORD)
            alice = await auth.Login(login)
            bob = await auth.Login(auth_pb2.LoginRequest(username="bob", password=PASSWORD))
            backend = await auth.ServiceLogin(
                auth_pb2.ServiceLoginRequest(client_id="backend", client_secret=BACKEND)
            )
            inventory = auth_pb2.PlayerData(
                world="w",
                player_id=alice.account_id,
                position=common_pb2.Vec3(x=5.0, z=5.0),
                health=100.0,
                blob=b"sword",
                kills=3,
                hits_dealt=20,
            )
            put = auth_pb2.PutPlayerDataRequest(data=inventory, expected_version=0)
            given = await auth.PutPlayerData(put, metadata=bearer_metadata(backend.access_token))
            assert given.version == 1

            # Play: alice starts where the back end put her, walks to SPOT and shoots bob.
            clients.append(await join_through_the_relay(stack, bob))
            player = await join_through_the_relay(stack, alice)
            clients.append(player)
            assert player.world is not None
            start = player.world.own_position()
            assert start is not None and math.dist((start[0], start[2]), (5.0, 5.0)) < 0.05
            bot = Bot(player, waypoints([SPOT]), arms=Arms(duty=1.0))
            bot.start()

            def there() -> bool:
                own = player.world.own_position() if player.world else None
                return own is not None and math.dist((own[0], own[2]), SPOT) < 0.5

            deadline = time.monotonic() + 20.0
            while not (there() and hits_dealt(player) >= 3):
                assert time.monotonic() < deadline, (player.world.own_position(), player.events)
                await asyncio.sleep(0.05)
            bot.arms, bot.pattern = None, stand
            seen = -1  # the last hits' events are still on their way: wait for a quiet second
            while seen != hits_dealt(player):
                seen = hits_dealt(player)
                await asyncio.sleep(1.0)
            assert player.connected, player.disconnected
            await player.close()  # the goodbye: the relay makes the zone Leave, which writes
            logout = auth_pb2.LogoutRequest()
            await auth.Logout(logout, metadata=bearer_metadata(alice.access_token))

        saved = await row_after(database, "w", alice.account_id, given.version)
        # One write: the leave's (no write-behind within 600 s).
        assert (saved.version, saved.written_by, saved.blob) == (2, "solo", b"sword")
        assert math.dist((saved.position[0], saved.position[2]), SPOT) < 1.0
        await clients[0].close()
        shot = await row_after(database, "w", bob.account_id, 0)
        # Every hit alice was told of is counted on both sides (bob may have died of them).
        assert (saved.hits_dealt, shot.hits_taken) == (20 + seen, seen)
        assert saved.kills == 3 + shot.deaths

        # Redis lost entirely; auth, the zone and the relay restart on the same database.
        stack.stop()
        await redis.flushall()
        await stack.start([ZoneSpec("solo", AREA)])
        async with grpc.aio.insecure_channel(stack.auth.grpc_address) as channel:
            auth = auth_pb2_grpc.AuthStub(channel)
            again = await auth.Login(login)
        assert again.account_id == alice.account_id  # the account lives in PostgreSQL
        player = await join_through_the_relay(stack, again)
        clients.append(player)
        assert player.world is not None
        here = player.world.own_position()
        assert here is not None
        step = player.world.quant.position_step_m
        assert abs(here[0] - saved.position[0]) <= step, (here, saved.position)
        assert abs(here[2] - saved.position[2]) <= step, (here, saved.position)
        # The zone holds the saved data: its checkpoint of the entity carries it.
        raw = await redis.hget(WorldKeys("w").checkpoints, alice.account_id)
        assert isinstance(raw, bytes)
        held = zone_pb2.EntityState.FromString(raw)
        assert (held.data_version, held.blob) == (saved.version, b"sword")
        assert (held.kills, held.hits_dealt) == (saved.kills, saved.hits_dealt)
    finally:
        for client in clients:
            await client.close()
        stack.kill()
