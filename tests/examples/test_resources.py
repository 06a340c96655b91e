"""The resource-node example: collecting, the drop action, and its persisted
counter through a handoff between two real zone processes and a zone restart;
a client dropping resources over UDP through a real relay."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tessera.client.actions import ActionError
from tessera.client.client import GameClient
from tessera.client.login import connect_token, guest_login
from tessera.client.transport import UdpTransport
from tessera.common import playerdata
from tessera.common.database import Pool
from tessera.common.playerdata import PlayerData
from tessera.common.store import Client
from tessera.examples.resources import COOLDOWN_S, GAME, SPACING
from tessera.game.testing import GameTest
from tessera.harness.playerdata import settled_row
from tessera.harness.redis import LocalRedis
from tessera.harness.relays import metric
from tessera.harness.stack import Stack
from tessera.harness.zones import World, ZoneSpec
from tessera.v1 import relay_pb2, zone_pb2
from tessera.wire.geometry import Rect
from tessera.zone.store import ZoneStore

NODE = SPACING / 2  # a node's centre


def test_a_player_at_a_node_collects_once_per_cooldown() -> None:
    g = GameTest(GAME)
    g.add_player("at", NODE + 1.0, NODE)
    g.add_player("away", NODE + 5.0, NODE)
    hz = g.cfg.tick_hz
    g.step(int(3 * COOLDOWN_S * hz))
    assert g.component("at", "resources") == 3
    assert g.component("away", "resources") == 0
    assert [e.amount for e in g.sent("at", "collected")] == [1, 2, 3]


def test_dead_players_and_npcs_collect_nothing() -> None:
    g = GameTest(GAME)
    g.add_player("dead", NODE, NODE)
    g.sim.ents.flags[0] |= 1
    g.sim.ents.respawn_at[0] = 1e9
    g.sim.ents.add(99, 2, (NODE, 0.0, NODE))
    g.step(10)
    assert g.column("resources").tolist() == [0, 0]


def test_drop_gives_resources_away_down_to_zero() -> None:
    g = GameTest(GAME)
    g.add_player("a", NODE, NODE)
    g.step()
    assert g.component("a", "resources") == 1
    assert g.act("a", 1, 5) is None
    g.step()
    assert g.component("a", "resources") == 0
    assert [e.amount for e in g.sent("a", "dropped")] == [0]
    assert g.act("a", 1, 0) == "arguments"


WEST, EAST = Rect(-200, -200, 0, 200), Rect(0, -200, 200, 200)


@pytest.fixture
async def world(redis_url: str, redis: Client) -> AsyncIterator[World]:
    w = World(redis, redis_url, env={"TESSERA_GAME_MODULE": "tessera.examples.resources"})
    yield w
    w.stop()


async def counter(world: World, player: str, zone: str, at_least: float) -> float:
    """The player's checkpointed counter once ``zone`` wrote it at ``at_least`` or more."""
    store = ZoneStore(world.redis, world=world.world, zone=zone)
    async with asyncio.timeout(30):
        while True:
            state = (await store.load_checkpoints([player])).get(player)
            if state is not None and state.zone == zone:
                value = state.components["resources"]
                if value >= at_least:
                    return value
            await asyncio.sleep(0.05)


@pytest.mark.integration
async def test_the_counter_survives_a_handoff_and_a_restart(world: World) -> None:
    await world.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
    assert any(r.get("game_module") == "resources" for r in world.procs["west"].records())
    await world.join("west", "p", x=-NODE, z=NODE)  # on the node at (-20, 20)
    before = await counter(world, "p", "west", at_least=3)
    # Move the border west of the player: the west hands it to the east.
    await world.set_bounds("east", Rect(-100, -200, 200, 200))
    await world.set_bounds("west", Rect(-200, -200, -100, 200))
    moved = await counter(world, "p", "east", at_least=before)
    # A crash: the restarted east restores the player from its checkpoint, counter
    # included. It keeps collecting; had it restarted the counter from 0, its first
    # checkpoints (5 a second) would show less than the value at the crash.
    world.kill("east")
    store = ZoneStore(world.redis, world=world.world, zone="east")
    at_crash = (await store.load_checkpoints(["p"]))["p"].components["resources"]
    assert at_crash >= moved >= before >= 3
    await world.start("east", world.bounds["east"])
    seen: list[float] = []
    async with asyncio.timeout(30):
        while not seen or seen[-1] <= at_crash:
            seen.append((await store.load_checkpoints(["p"]))["p"].components["resources"])
            await asyncio.sleep(0.02)
    assert min(seen) >= at_crash, seen


@pytest.mark.integration
async def test_the_counter_is_loaded_from_and_written_to_player_data(
    redis_server: LocalRedis, redis: Client, database: Pool, database_url: str
) -> None:
    # Between two nodes: the counter only travels, it does not grow.
    offline = PlayerData("w", "p", (0.0, 0.0, 0.0), 0.0, 100.0, b"", 0, 0, 0, "api")
    offline = dataclasses.replace(offline, components={"resources": 7.0, "retired": 1.0})
    assert await playerdata.put(database, offline, 0, now=time.time()) is not None
    world = World(
        redis,
        redis_server.url,
        env={
            "TESSERA_GAME_MODULE": "tessera.examples.resources",
            "TESSERA_DATABASE_URL": database_url,
            "TESSERA_PERSIST_S": "0.2",
        },
    )
    try:
        await world.start_all([ZoneSpec("solo", WEST)])
        assert (await world.join("solo", "p")).restored
        assert await counter(world, "p", "solo", at_least=7) == 7
        await world.leave("solo", "p")
        saved = await settled_row(database, "w", "p", 1)
    finally:
        world.stop()
    # The persisted component came back; a name the module does not declare is gone.
    assert saved.components == {"resources": 7.0}


async def game_event(client: GameClient, name: str) -> float:
    """The amount of the first game event ``name`` the client received (waits for it)."""
    async with asyncio.timeout(15):
        while True:
            for m in client.events:
                if m.event.kind == zone_pb2.PlayerEvent.GAME and m.event.detail == name:
                    return m.event.amount
            await asyncio.sleep(0.02)


async def replicated(client: GameClient, name: str, want: float) -> None:
    """Wait until the client's snapshots carry ``want`` as its own ``name``."""
    assert client.world is not None and client.accepted is not None
    async with asyncio.timeout(15):
        while True:
            own = client.world.entity(client.accepted.entity_id)
            if own is not None and own.components.get(name) == want:
                return
            await asyncio.sleep(0.02)


@pytest.mark.integration
async def test_a_client_drops_resources_through_the_relay(
    redis_server: LocalRedis, redis: Client, database: Pool, database_url: str, tmp_path: Path
) -> None:
    """The SDK's act() over UDP, through a real relay, into a real zone running the
    example: the action runs as the session's player; a bad one is refused before
    sending, or (sent raw) dropped and counted by the zone, the session unharmed.
    The replicated ``resources`` reach the client in its snapshots, before and
    after the drop, decoded by the schema announced in Accepted.game."""
    module = "tessera.examples.resources"
    env = {"TESSERA_GAME_MODULE": module, "TESSERA_DATABASE_URL": database_url}
    world = World(redis, redis_server.url, env=env)
    stack = Stack(world, database_url, tmp_path)
    client = GameClient(UdpTransport())
    try:
        await stack.start([ZoneSpec("solo", WEST)])
        session = await guest_login(stack.auth.grpc_address, "resource-dropper-0001")
        # Away from any node, holding 5 (loaded from the player data on join).
        data = PlayerData("w", session.account_id, (-10.0, 0.0, -10.0), 0.0, 100.0, b"", 0, 0, 0)
        data = dataclasses.replace(data, components={"resources": 5.0})
        assert await playerdata.put(database, data, 0, now=time.time()) is not None
        await client.connect(await connect_token(stack.auth.grpc_address, session.access_token))
        assert client.accepted is not None
        game = client.accepted.game
        assert game.module == "resources" and [a.name for a in game.actions] == ["drop"]
        assert [
            (c.name, c.dtype, c.step, c.bits, list(c.tiers), c.column) for c in game.components
        ] == [("resources", "uint32", 1.0, 16, ["near"], 0)]
        await replicated(client, "resources", 5.0)
        with pytest.raises(ActionError, match="want a whole number in"):
            client.act("drop", amount=0)
        unknown = relay_pb2.ClientMessage(action=relay_pb2.GameAction(id=99, args=[1.0]))
        client.transport.send(unknown)
        client.act("drop", amount=2)
        assert await game_event(client, "dropped") == 3
        await replicated(client, "resources", 3.0)
        zone, name = world.procs["solo"], "tessera_zone_game_actions_total"
        for _ in range(200):  # the tick's counts reach /metrics after it
            if metric(zone, name, outcome="unknown_action") >= 1:
                break
            await asyncio.sleep(0.05)
        assert metric(zone, name, outcome="unknown_action") == 1
        assert metric(zone, name, outcome="accepted") == 1
        assert client.connected
    finally:
        await client.close()
        stack.kill()
