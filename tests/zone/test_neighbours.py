"""The ghost exchange in-process over a real Redis: ghosts shown and dropped, the aura
published, hits forwarded to a ghost's owner and checked when they come back."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
from redis.asyncio import Redis

from tessera.common.config import Env
from tessera.common.store import WorldKeys
from tessera.v1 import common_pb2, zone_pb2
from tessera.wire.geometry import Rect
from tessera.zone import combat, ghosts
from tessera.zone.config import ZoneConfig
from tessera.zone.entities import DEAD, GHOST, NPC
from tessera.zone.neighbours import Neighbours
from tessera.zone.simulation import Simulation
from tessera.zone.store import ZoneStore
from tessera.zone.territory import Territory
from tessera.zone.topology import Topology, ZoneArea

WORLD = Rect(-200, -200, 200, 200)
WEST, EAST = Rect(-200, -200, 0, 200), Rect(0, -200, 200, 200)


def west(redis: Redis) -> tuple[Simulation, Neighbours]:
    env = {"TESSERA_WORLD": "w", "TESSERA_ZONE": "west", "TESSERA_ZONE_BOUNDS": WEST.text()}
    cfg = ZoneConfig.from_env(Env({**env, "TESSERA_WORLD_BOUNDS": WORLD.text()}))
    sim = Simulation(cfg, area=WEST)
    territory = Territory("west", WORLD, WEST, zone_pb2.ZONE_STATE_ACTIVE)
    territory.adopt(Topology(2, WORLD, (ZoneArea("west", "", WEST), ZoneArea("east", "", EAST))))
    store = ZoneStore(redis, world="w", zone="west")
    return sim, Neighbours(cfg=cfg, store=store, sim=sim, territory=territory)


def batch(ids: list[int], x: float) -> bytes:
    n = len(ids)
    return ghosts.encode(
        ids=np.array(ids, np.uint64),
        pos=np.tile([x, 0.0, 0.0], (n, 1)),
        vel=np.zeros((n, 3)),
        yaw=np.zeros(n),
        health=np.full(n, 70.0),
        team=np.zeros(n, np.int32),
        kind=np.full(n, NPC, np.int32),
        flags=np.zeros(n, np.int32),
        map_version=2,
        sent_ms=0.0,
    )


async def test_ghosts_are_shown_refreshed_faded_and_expired(redis: Redis) -> None:
    sim, nb = west(redis)
    half = nb.cfg.ghost_ttl_s / 2
    sim.add_player(entity_id=1, player_id="a", pos=(-5.0, 0.0, 0.0), team=0)
    assert nb.apply("east", batch([10, 11, 1], 5.0), now=1.0) == 2  # 1 is ours: left alone
    assert nb.is_ghost(10) and not nb.is_ghost(1)
    assert sim.ents.flags[sim.ents.index[10]] & GHOST and sim.ents.health[0] == 100.0
    assert nb.apply("east", batch([11], 6.0), now=1.2) == 1  # 10 no longer sent: it fades
    assert nb.apply("east", batch([11], 6.0), now=1.2 + half - 0.01) == 1  # not kept longer
    nb.expire(now=1.2 + half - 0.005)
    row = sim.ents.index[10]
    assert nb.is_ghost(10) and sim.ents.pos[row, 0] == 5.0  # kept, unmoved
    assert not sim.ents.vel[row].any()
    nb.expire(now=1.2 + half + 0.01)
    assert set(nb.ghosts) == {11} and 10 not in sim.ents.index
    assert nb.apply("east", batch([12], 500.0), now=1.3) == 0  # too far to matter
    assert nb.apply("east", b"junk", now=1.3) == 0
    twice = batch([13, 13], 7.0)[:-44] + batch([13], 8.0)[24:]  # id 13 twice: the last row counts
    assert nb.apply("east", twice, now=1.3) == 1
    assert sim.ents.pos[sim.ents.index[13], 0] == 8.0 and set(nb.ghosts) == {11, 13}
    nb.expire(now=1.3 + nb.cfg.ghost_ttl_s + 0.01)
    assert nb.ghosts == {} and sim.ents.n == 1


async def test_an_entity_handed_between_two_neighbours_never_blinks_out(redis: Redis) -> None:
    """East hands entity 10 to north; east's batch without it may come first or last."""
    for east_first in (True, False):
        sim, nb = west(redis)
        half = nb.cfg.ghost_ttl_s / 2
        nb.apply("east", batch([10], 5.0), now=1.0)
        order = [("east", []), ("north", [10])]
        for k, (sender, ids) in enumerate(order if east_first else order[::-1]):
            nb.apply(sender, batch(ids, 6.0), now=1.1 + 0.05 * k)
            assert nb.is_ghost(10)  # shown throughout
        assert nb.ghosts[10][0] == "north" and sim.ents.pos[sim.ents.index[10], 0] == 6.0
        nb.apply("east", batch([], 6.0), now=1.2)  # east's later batches leave it alone
        nb.expire(now=1.2 + half + 0.01)
        assert nb.ghosts[10][0] == "north"


async def test_the_aura_holds_owned_entities_near_a_neighbour(redis: Redis) -> None:
    sim, nb = west(redis)
    sim.add_player(entity_id=1, player_id="a", pos=(-5.0, 0.0, 0.0), team=0)
    sim.add_player(entity_id=2, player_id="b", pos=(-150.0, 0.0, 0.0), team=0)
    nb.apply("east", batch([10], 5.0), now=1.0)
    payload, count = nb.batch()
    version, _sent, rows = ghosts.decode(payload)
    assert (version, count, rows["id"].tolist()) == (2, 1, [1])


async def test_the_aura_is_published_once_a_tick_and_kept_alive_between(
    redis: Redis,
) -> None:
    """Between ticks nothing moves: a zone whose ticks are slower than ``ghost_hz``
    (15 a second) publishes once per tick, and without ticks only every half ghost
    lifetime (0.25 s), so the neighbours' copies never expire."""
    sim, nb = west(redis)
    sim.add_player(entity_id=1, player_id="a", pos=(-5.0, 0.0, 0.0), team=0)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(WorldKeys("w").zone_ghosts("west"))

    async def count(seconds: float) -> int:
        n, end = 0, asyncio.get_running_loop().time() + seconds
        while (left := end - asyncio.get_running_loop().time()) > 0:
            n += await pubsub.get_message(timeout=left) is not None
        return n

    publishing = asyncio.create_task(nb.run_out())
    try:
        idle = await count(1.0)  # no tick: the first batch, then a keep-alive per 0.25 s
        assert 1 <= idle <= 6  # 15 a second before
        ticked = 0
        for _ in range(5):
            sim.step()
            nb.beat.bump()  # as the zone's tick does
            ticked += await count(0.15)
        assert ticked >= 3  # a batch per tick (a busy machine may merge two ticks)
    finally:
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        await pubsub.aclose()


async def test_an_empty_aura_is_published_once_until_an_entity_comes(redis: Redis) -> None:
    """The neighbours' copies fade on the first empty batch; more empty batches
    would tell them nothing."""
    sim, nb = west(redis)
    pubsub = redis.pubsub()
    await pubsub.subscribe(WorldKeys("w").zone_ghosts("west"))
    confirmed = await pubsub.get_message(timeout=5.0)  # the server has subscribed us
    assert confirmed is not None and confirmed["type"] == "subscribe"
    got: list[int] = []

    async def tick_for(seconds: float) -> None:
        end = asyncio.get_running_loop().time() + seconds
        while (left := end - asyncio.get_running_loop().time()) > 0:
            sim.step()
            nb.beat.bump()
            msg = await pubsub.get_message(timeout=min(left, 0.05))
            if msg is not None:
                got.append(ghosts.decode(msg["data"])[2].size)

    publishing = asyncio.create_task(nb.run_out())
    try:
        await tick_for(1.0)
        assert got == [0]  # twenty ticks, one batch
        sim.add_player(entity_id=1, player_id="a", pos=(-5.0, 0.0, 0.0), team=0)
        await tick_for(0.5)
        assert len(got) >= 3 and got[1:] == [1] * (len(got) - 1)
        sim.remove_player("a")
        await tick_for(0.5)
        assert got[-1] == 0 and got.count(0) == 2  # the one empty batch after the entity's
    finally:
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        await pubsub.aclose()


async def test_hits_on_ghosts_go_to_their_owner_and_are_checked_there(redis: Redis) -> None:
    sim, nb = west(redis)
    sim.add_player(entity_id=1, player_id="a", pos=(-1.0, 0.0, 0.0), team=0)
    nb.apply("east", batch([10], 1.0), now=1.0)
    sim.forwarded = [
        combat.Forwarded(10, 1, combat.MELEE, 25.0, -1.0, 0.0),
        combat.Forwarded(99, 1, combat.MELEE, 25.0, -1.0, 0.0),  # no such ghost
    ]
    await nb.forward_hits()
    east = ZoneStore(redis, world="w", zone="east")
    [(_entry, msg)] = await east.receive(block_ms=1)
    assert msg is not None and msg.hit.target_id == 10 and msg.hit.attacker_position.x == -1.0
    at = common_pb2.Vec3(x=1.0, z=0.0)
    hit = zone_pb2.ForwardedHit(
        attacker_id=10, target_id=1, damage=25.0, attack=combat.MELEE, attacker_position=at
    )
    nb.on_hit(hit)
    assert sim.ents.health[0] == 75.0
    hit.damage = 500.0  # more than a melee hit does
    nb.on_hit(hit)
    hit.target_id = 10  # a ghost here: its owner applies hits
    nb.on_hit(hit)
    assert sim.ents.health[0] == 75.0 and not sim.ents.flags[0] & DEAD


async def test_a_hit_on_an_entity_handed_away_is_passed_on_to_where_it_went(
    redis: Redis,
) -> None:
    """A neighbour's ghost of an entity handed from here to east still names this
    zone as its owner for a while (it fades): its hits are passed on to east, for
    a ghost lifetime."""
    sim, nb = west(redis)
    sim.add_player(entity_id=1, player_id="a", pos=(-1.0, 0.0, 0.0), team=0)
    nb.handed_away(10, "east", now=1.0)
    at = common_pb2.Vec3(x=1.0, z=0.0)
    hit = zone_pb2.ForwardedHit(
        attacker_id=7, target_id=10, damage=25.0, attack=combat.MELEE, attacker_position=at
    )
    nb.on_hit(hit)
    await nb.forward_hits()
    east = ZoneStore(redis, world="w", zone="east")
    [(_entry, msg)] = await east.receive(block_ms=1)
    assert msg is not None and msg.hit == hit
    nb.expire(now=1.0 + nb.cfg.ghost_ttl_s + 0.01)
    nb.on_hit(hit)  # forgotten: gone, as for an entity never here
    hit.target_id = 1  # one of ours: applied here, never passed on
    nb.on_hit(hit)
    assert nb.passing == [] and sim.ents.health[0] == 75.0
