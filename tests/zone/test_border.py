"""The border in-process, two zones over a real Redis: a handoff from departure to
commit as decisions (a Release on the owner side, a Receipt on the target side),
refused offers, drain bookkeeping and the movement area."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from redis.asyncio import Redis

from tessera.common.config import Env
from tessera.v1 import zone_pb2
from tessera.wire.bounds import to_bounds
from tessera.wire.geometry import Rect
from tessera.zone import inputs
from tessera.zone.border import Border, Inbox, Receipt, Release
from tessera.zone.config import ZoneConfig
from tessera.zone.neighbours import Neighbours
from tessera.zone.simulation import Simulation
from tessera.zone.store import ZoneStore, write_zone_map
from tessera.zone.territory import Territory
from tessera.zone.topology import Topology, ZoneArea

WORLD = Rect(-200, -200, 200, 200)
WEST, EAST = Rect(-200, -200, 0, 200), Rect(0, -200, 200, 200)
ACTIVE = zone_pb2.ZONE_STATE_ACTIVE


@dataclass
class Zone:
    store: ZoneStore
    sim: Simulation
    territory: Territory
    border: Border
    handled: list[str] = field(default_factory=list)  # acknowledged with the next read


def zone(redis: Redis, name: str, bounds: Rect) -> Zone:
    cfg = ZoneConfig.from_env(
        Env(
            {
                "TESSERA_WORLD": "w",
                "TESSERA_ZONE": name,
                "TESSERA_ZONE_BOUNDS": bounds.text(),
                "TESSERA_WORLD_BOUNDS": WORLD.text(),
            }
        )
    )
    store = ZoneStore(redis, world="w", zone=name)
    sim = Simulation(cfg, area=bounds)
    territory = Territory(name, WORLD, bounds, ACTIVE)
    neighbours = Neighbours(cfg=cfg, store=store, sim=sim, territory=territory)
    border = Border(cfg=cfg, store=store, sim=sim, territory=territory, neighbours=neighbours)
    return Zone(store, sim, territory, border)


async def two_zones(redis: Redis) -> tuple[Zone, Zone]:
    zone_map = zone_pb2.ZoneMap(world="w", version=3, world_bounds=to_bounds(WORLD))
    for name, r in (("west", WEST), ("east", EAST)):
        zone_map.zones.append(zone_pb2.ZoneMapEntry(zone=name, bounds=to_bounds(r)))
    await write_zone_map(redis, zone_map)
    west, east = zone(redis, "west", WEST), zone(redis, "east", EAST)
    for z in (west, east):
        assert await z.border.refresh_map()
        assert not await z.border.refresh_map()  # nothing newer
    return west, east


def cross(z: Zone, x: float) -> None:
    """What a tick does to entity row 0: it moves to ``x`` (the border judges where
    entities are once per tick)."""
    z.sim.ents.pos[0, 0] = x
    z.sim.tick += 1


async def inbox(z: Zone) -> Inbox:
    entries = await z.store.receive(block_ms=1, done=z.handled)
    z.handled = [e for e, _m in entries]
    return z.border.take([m for _e, m in entries if m is not None])


async def test_a_handoff_is_decided_on_both_sides(redis: Redis) -> None:
    west, east = await two_zones(redis)
    west.sim.add_player(entity_id=1, player_id="p", pos=(-10.0, 0.0, 0.0), team=0)
    west.sim.ents.extra[1].epoch = 1
    assert await west.store.claim_route("p", "", 1)
    assert await west.border.scan() == [] and await inbox(east) == Inbox()  # not past the border
    cross(west, 20.0)
    assert await west.border.scan() == []  # PREPARE sent
    offered = await inbox(east)
    assert [t for t, _m in offered.answers] == ["west"] and 1 in east.border.flight.incoming
    assert await east.border.reply(offered) == []  # the ACK
    accepted = await inbox(west)
    assert accepted.acked and accepted.receipts == []
    assert await west.border.reply(accepted) == [Release("p", "east", 2)]
    assert "p" not in west.sim.ents.players and not west.border.flight.outgoing
    assert west.border.neighbours.handed[1][0] == "east"  # hits on it are passed on
    assert east.border.received == 0
    committed = await inbox(east)
    assert committed.receipts == [Receipt("p")]
    assert (east.border.received, west.border.received) == (1, 0)  # heartbeat's handoffs_received
    assert east.sim.ents.extra[1].epoch == 2 and east.sim.ents.pos[0, 0] == 20.0
    route = await east.store.route("p")
    assert route is not None and (route.zone, route.epoch) == ("east", 2)
    replay = zone_pb2.InboxMessage(commit=zone_pb2.HandoffCommit(entity_id=1, epoch=2))
    assert east.border.take([replay]).receipts == []  # delivered twice, applied once
    assert east.border.received == 1


async def accepted_offer(redis: Redis) -> tuple[Zone, Zone, Inbox]:
    """West and east with player p (entity 1) past the border and its offer acked."""
    west, east = await two_zones(redis)
    west.sim.add_player(entity_id=1, player_id="p", pos=(-10.0, 0.0, 0.0), team=0)
    west.sim.ents.extra[1].epoch = 1
    assert await west.store.claim_route("p", "", 1)
    assert await west.border.scan() == []
    cross(west, 20.0)
    assert await west.border.scan() == []
    assert await east.border.reply(await inbox(east)) == []
    accepted = await inbox(west)
    assert [out.entity_id for out in accepted.acked] == [1]
    return west, east, accepted


async def test_a_committing_player_s_inputs_are_left_to_the_new_zone(redis: Redis) -> None:
    west, east, accepted = await accepted_offer(redis)
    attack = inputs.Input("p", 5, actions=inputs.ACTION_MELEE)
    assert west.sim.submit(attack, 1.0) is None
    assert accepted.answers == []
    commit = asyncio.create_task(west.border.commit(accepted.acked))
    await asyncio.sleep(0)  # exported, the commit script in flight: a tick could run now
    assert west.sim.ents.leaving[0] and west.sim.ents.queued[0] == 0  # the new zone's attack
    assert west.sim.submit(attack._replace(sequence=6), 1.01) == inputs.HANDOFF
    assert await commit == [Release("p", "east", 2)]
    assert (await inbox(east)).receipts == [Receipt("p")]
    assert east.sim.submit(attack._replace(sequence=6), 1.02) is None  # the client's repeat


async def test_an_aborted_commit_takes_the_player_s_inputs_again(redis: Redis) -> None:
    west, east, accepted = await accepted_offer(redis)
    assert await east.store.claim_route("p", "west|1", 7)  # the route moved meanwhile
    assert await west.border.reply(accepted) == []
    assert "p" in west.sim.ents.players
    assert west.sim.submit(inputs.Input("p", 5), 1.0) is None


async def test_departures_are_judged_once_a_tick_and_leave_out_ghosts(redis: Redis) -> None:
    """Between ticks nothing moves, so the border works out who departs once per
    tick and territory; an entity that became a ghost since (handed away and shown
    back by its new owner) is not handed off again."""
    west, east = await two_zones(redis)
    west.sim.add_player(entity_id=1, player_id="p", pos=(-10.0, 0.0, 0.0), team=0)
    west.sim.add_player(entity_id=2, player_id="q", pos=(-10.0, 0.0, 0.0), team=0)
    assert west.border.departures() == []
    west.sim.ents.pos[1, 0] = 20.0
    west.sim.tick += 1  # q moved in this tick
    assert west.border.departures() == [(2, "east")]
    west.sim.ents.pos[0, 0] = 20.0  # not a tick: judged after the next one
    assert west.border.departures() == [(2, "east")]
    west.sim.tick += 1
    assert west.border.departures() == [(1, "east"), (2, "east")]
    west.sim.ents.extra[1].epoch += 1  # handed away and back since: judged after a tick
    assert west.border.departures() == [(2, "east")]
    west.sim.remove_entity(2)  # handed to the east, which shows it back as a ghost
    east.sim.add_player(entity_id=2, player_id="q", pos=(20.0, 0.0, 0.0), team=0)
    aura, _count = east.border.neighbours.batch()
    assert west.border.neighbours.apply("east", aura, now=1.0) == 1
    assert west.border.departures() == []
    west.sim.tick += 1
    assert west.border.departures() == [(1, "east")]
    west.territory.bounds = Rect(-200, -200, 30, 200)  # new bounds: judged at once
    west.border.rebound()
    assert west.border.departures() == []


async def test_a_drained_target_is_no_target_until_a_newer_map(redis: Redis) -> None:
    """A commit refused because its target has drained (closed its inbox) keeps the
    entity here; that zone is no target any more (a drain into it drains by
    position instead) until a newer zone map."""
    west, east, accepted = await accepted_offer(redis)
    await east.store.close_inbox()
    assert await west.border.reply(accepted) == []
    assert "p" in west.sim.ents.players and set(west.border.closed) == {"east"}
    assert west.border.departures() == []  # still past the border: nowhere to go
    west.border.drain("east", 5.0)
    assert west.border.departures() == [] and west.border.drain_target == ""
    areas = (ZoneArea("west", "", WEST), ZoneArea("east", "", EAST))
    assert west.territory.adopt(Topology(4, WORLD, areas))
    assert west.border.departures() == [(1, "east")] and not west.border.closed


async def test_offers_are_refused_while_not_active_and_for_present_entities(redis: Redis) -> None:
    west, east = await two_zones(redis)
    west.sim.add_player(entity_id=1, player_id="p", pos=(0.0, 0.0, 0.0), team=0)
    west.sim.ents.pos[0, 0] = 20.0
    east.sim.add_player(entity_id=2, player_id="p", pos=(20.0, 0.0, 0.0), team=0)
    await west.border.scan()
    offered = await inbox(east)
    _target, answer = offered.answers[0]
    assert not answer.ack.accepted and answer.ack.reason == "present"
    east.territory.state = zone_pb2.ZONE_STATE_DRAINING
    west.border.flight.outgoing.clear()
    west.border.flight.resting.clear()
    await west.border.scan()
    _target, answer = (await inbox(east)).answers[0]
    assert answer.ack.reason == "not-active"


async def test_drained_once_nothing_is_left_to_hand_away(redis: Redis) -> None:
    west, _east = await two_zones(redis)
    west.territory.state = zone_pb2.ZONE_STATE_DRAINING
    assert west.border.drained()
    west.sim.spawn_npcs([7])
    assert not west.border.drained()  # the east can take the NPC
    west.border.drain("east", 5.0)
    assert [(eid, t) for eid, t in west.border.departures()] == [(7, "east")]


async def test_movement_reaches_past_the_border_only_towards_neighbours(redis: Redis) -> None:
    west, _east = await two_zones(redis)
    assert west.border.movement_area() == Rect(-200, -200, 15, 200)
    lonely = zone(redis, "north", Rect(-200, 0, 200, 200))
    assert lonely.border.movement_area() == Rect(-200, 0, 200, 200)
    lonely.territory.bounds = None
    assert lonely.border.movement_area() is None
