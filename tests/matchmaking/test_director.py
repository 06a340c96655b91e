"""The matching loop in-process against real Redis: assignments, destinations, backfill, expiry."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from tessera.common.database import Pool
from tessera.common.store import WorldKeys, connect, instances_stream
from tessera.matchmaking import matching
from tessera.matchmaking.director import Director
from tessera.matchmaking.matching import Proposal, Seat
from tessera.matchmaking.modes import DEFAULT_MODES, INSTANCE, Curve, Mode
from tessera.matchmaking.records import RatingRecords
from tessera.matchmaking.store import Store
from tessera.v1 import auth_pb2, common_pb2, zone_pb2
from tessera.v1 import matchmaking_pb2 as pb

DUEL = Mode(name="duel", world="main", zone_capacity=10)
ARENA = Mode(name="arena", team_size=2, max_party=2, destination=INSTANCE, world="arenas")
FIVES = Mode(name="5v5", team_size=5, max_party=5, skill_window=Curve(((0.0, 100.0),)))


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time() * 1000))

    def __call__(self) -> float:
        return self.now


class Issuer:
    """Signs nothing: records which players got a token and hands back a marked one."""

    def __init__(self) -> None:
        self.players: list[str] = []
        self.sessions: list[str] = []
        self.destinations: list[tuple[str, str]] = []
        self.matches: dict[str, tuple[str, int, str]] = {}
        self.batches: list[int] = []

    async def issue_many(
        self, requests: Sequence[auth_pb2.ConnectTokenRequest]
    ) -> list[auth_pb2.ConnectToken | Exception]:
        self.batches.append(len(requests))
        out: list[auth_pb2.ConnectToken | Exception] = []
        for r in requests:
            self.players.append(r.player_id)
            self.sessions.append(r.session_id)
            self.destinations.append((r.world, r.zone))
            self.matches[r.player_id] = (r.match_id, r.team, r.role)
            token = f"{r.player_id}@{r.region}".encode()
            out.append(auth_pb2.ConnectToken(token=token, player_id=r.player_id))
        return out


def make_ticket(mode: str, *players: str, clock: Clock, rating_region: str = "eu") -> pb.Ticket:
    return pb.Ticket(
        id=uuid.uuid4().hex,
        mode=mode,
        players=[pb.TicketPlayer(player_id=p) for p in players],
        regions=[pb.RegionLatency(region=rating_region, latency_ms=10)],
        created_at_ms=clock.now,
    )


async def add_zone(
    redis: Redis,
    world: str,
    zone: str,
    players: int,
    active: bool = True,
    *,
    updated_at_ms: float = 0.0,
    instance: str = "",
) -> None:
    keys = WorldKeys(world)
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world=world, zone=zone),
        state=zone_pb2.ZONE_STATE_ACTIVE if active else zone_pb2.ZONE_STATE_DRAINING,
        players=players,
        updated_at_ms=updated_at_ms,
        instance=instance,
    )
    await redis.sadd(keys.zones, zone)
    await redis.set(keys.zone_status(zone), status.SerializeToString())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis: Redis, database: Pool) -> Store:
    return Store(redis, RatingRecords(database), ticket_ttl_s=10.0, retention_s=60.0)


async def test_duel_goes_to_least_loaded_zone_with_tokens(
    store: Store, redis: Redis, clock: Clock
) -> None:
    await add_zone(redis, "main", "busy", 5)
    await add_zone(redis, "main", "quiet", 1)
    await add_zone(redis, "main", "draining", 0, active=False)
    await add_zone(redis, "main", "inst-empty", 0, instance="0123abcd")
    issuer = Issuer()
    director = Director(store, {"duel": DUEL}, issuer=issuer, clock=clock)
    a = await store.create(make_ticket("duel", "alice", clock=clock), clock.now, "alice-sid")
    b = await store.create(make_ticket("duel", "bob", clock=clock), clock.now)
    result = await director.tick()
    assert (result.matches, result.assigned, result.conflicts) == (1, 2, 0)
    assert dict(zip(issuer.players, issuer.sessions, strict=True)) == {
        "alice": "alice-sid",
        "bob": "",
    }
    got_a, got_b = await store.get_many([a.id, b.id], clock.now)
    assert got_a is not None and got_b is not None
    assert got_a.state == got_b.state == pb.TICKET_STATE_ASSIGNED
    assert got_a.assignment.match_id == got_b.assignment.match_id
    destination = got_a.assignment.destination
    assert (destination.kind, destination.world, destination.zone, destination.region) == (
        pb.DESTINATION_KIND_OPEN_WORLD,
        "main",
        "quiet",
        "eu",
    )
    # Each ticket carries only its own players' tokens.
    (player,) = got_a.assignment.players
    assert player.player_id == "alice" and player.connect_token.token == b"alice@eu"
    assert {got_a.assignment.players[0].team, got_b.assignment.players[0].team} == {0, 1}
    assert sorted(issuer.players) == ["alice", "bob"]
    assert issuer.destinations == [("main", "quiet")] * 2
    assert issuer.batches == [2]
    # Each token asks for the player's match context: the match and their seat.
    match = got_a.assignment.match_id
    assert issuer.matches == {
        "alice": (match, got_a.assignment.players[0].team, ""),
        "bob": (match, got_b.assignment.players[0].team, ""),
    }


async def test_zone_capacity_counts_players_sent_since_heartbeat(
    store: Store, redis: Redis, clock: Clock
) -> None:
    await add_zone(redis, "main", "z1", 6)
    director = Director(store, {"duel": DUEL}, clock=clock)
    for i in range(6):
        await store.create(make_ticket("duel", f"p{i}", clock=clock), clock.now)
    result = await director.tick()
    # Room for 4 more players under capacity 10: two duels, the third waits.
    assert (result.matches, result.no_destination) == (2, 1)
    again = await director.tick()
    assert (again.matches, again.no_destination) == (0, 1)
    # Another replica counts them too.
    other = Director(store, {"duel": DUEL}, clock=clock, rotate_ms=0)
    late = await other.tick()
    assert (late.matches, late.no_destination) == (0, 1)
    # A newer heartbeat counts players from then on (here: the zone emptied).
    clock.now += 1.0
    await add_zone(redis, "main", "z1", 0, updated_at_ms=clock.now)
    assert (await other.tick()).matches == 1


async def test_modes_of_one_tick_see_each_others_bookings(
    store: Store, redis: Redis, clock: Clock
) -> None:
    await add_zone(redis, "main", "z1", 6)
    issuer = Issuer()
    other_duel = replace(DUEL, name="duel-2")
    director = Director(store, {"duel": DUEL, "duel-2": other_duel}, issuer=issuer, clock=clock)
    for i in range(4):
        await store.create(make_ticket("duel", f"a{i}", clock=clock), clock.now)
        await store.create(make_ticket("duel-2", f"b{i}", clock=clock), clock.now)
    result = await director.tick()
    # Room for 4 under capacity 10: the first mode fills it; the second mode knows
    # before asking auth for tokens (none are issued for matches that cannot fit).
    assert (result.matches, result.no_destination) == (2, 2)
    assert sorted(issuer.players) == ["a0", "a1", "a2", "a3"]


async def test_racing_directors_never_overfill_a_zone(
    store: Store, redis: Redis, redis_url: str, clock: Clock
) -> None:
    """Two replicas with their own connections and disjoint ticket shares both read the
    zone's load, then both claim: the claim script admits a match only while the zone
    has room, whoever placed it (each replica alone would fill it)."""
    await add_zone(redis, "main", "z", 4, updated_at_ms=clock.now - 1.0)
    other = Store(connect(redis_url), store.records, ticket_ttl_s=10.0)
    # A fixed dealing (tickets never rotate): each replica matches its own half.
    directors = [Director(s, {"duel": DUEL}, clock=clock, rotate_ms=1e9) for s in (store, other)]
    try:
        for _ in range(2):  # both register, then both see two replicas
            await asyncio.gather(*(d.tick() for d in directors))
            clock.now += 600.0
        ids = []
        for i in range(24):
            ticket = make_ticket("duel", f"p{i}", clock=clock)
            ids.append((await store.create(ticket, clock.now)).id)
        matched = refused = 0
        for _ in range(3):
            results = await asyncio.gather(*(d.tick() for d in directors))
            matched += sum(r.matches for r in results)
            refused += sum(r.no_destination for r in results)
            assert sum(r.conflicts for r in results) == 0  # disjoint shares
            clock.now += 50.0
    finally:
        await other.redis.aclose()
    tickets = [t for t in await store.get_many(ids, clock.now) if t is not None]
    sent = sum(len(t.assignment.players) for t in tickets if t.state == pb.TICKET_STATE_ASSIGNED)
    assert sent == 2 * matched == 6  # capacity 10, 4 there: room for three duels exactly
    assert refused > 0
    assert all(t.assignment.destination.zone == "z" for t in tickets if t.assignment.match_id)


async def test_instance_mode_names_a_zone_and_requests_it(
    store: Store, redis: Redis, clock: Clock
) -> None:
    director = Director(store, {"arena": ARENA}, clock=clock)
    party = await store.create(make_ticket("arena", "a", "b", clock=clock), clock.now)
    c = await store.create(make_ticket("arena", "c", clock=clock), clock.now)
    d = await store.create(make_ticket("arena", "d", clock=clock), clock.now)
    result = await director.tick()
    assert result.matches == 1
    tickets = await store.get_many([party.id, c.id, d.id], clock.now)
    destinations = {t.assignment.destination.zone for t in tickets if t is not None}
    (zone,) = destinations
    assert zone.startswith("inst-")
    got_party = tickets[0]
    assert got_party is not None
    assert len({p.team for p in got_party.assignment.players}) == 1
    entries: Any = await redis.xrange(instances_stream("arenas"))
    ((_, fields),) = entries
    assert (fields[b"kind"], fields[b"zone"], fields[b"at_ms"]) == (
        b"create",
        zone.encode(),
        str(int(clock.now)).encode(),
    )
    assert fields[b"mode"] == got_party.mode.encode()
    request = pb.Assignment.FromString(fields[b"request"])
    assert fields[b"match"].decode() == request.match_id == got_party.assignment.match_id
    assert request.destination.zone == zone and request.destination.world == "arenas"
    assert sorted(p.player_id for p in request.players) == ["a", "b", "c", "d"]
    assert not any(p.HasField("connect_token") for p in request.players)


async def test_backfill_refills_running_match_first(
    store: Store, redis: Redis, clock: Clock
) -> None:
    destination = pb.Destination(
        kind=pb.DESTINATION_KIND_INSTANCE, world="w", zone="inst-x", region="eu"
    )
    await store.create_backfill(
        pb.Backfill(
            id="bf",
            match_id="running",
            mode="5v5",
            region="eu",
            open_slots={1: 2},
            destination=destination,
            created_at_ms=clock.now,
        )
    )
    director = Director(store, {"5v5": FIVES}, clock=clock)
    a = await store.create(make_ticket("5v5", "a", clock=clock), clock.now)
    b = await store.create(make_ticket("5v5", "b", clock=clock), clock.now)
    c = await store.create(make_ticket("5v5", "c", clock=clock), clock.now)
    result = await director.tick()
    assert result.matches == 1 and result.assigned == 2
    got = [t for t in await store.get_many([a.id, b.id, c.id], clock.now) if t is not None]
    filled = [t for t in got if t.state == pb.TICKET_STATE_ASSIGNED]
    assert len(filled) == 2
    for t in filled:
        assert t.assignment.match_id == "running"
        assert t.assignment.destination == destination
        assert t.assignment.players[0].team == 1
    backfill = await store.get_backfill("bf")
    assert backfill is not None and dict(backfill.open_slots) == {1: 0}
    # The running match's instance exists already: no new one is requested.
    assert await redis.xlen(instances_stream("w")) == 0


async def test_expired_tickets_are_reaped(store: Store, clock: Clock) -> None:
    director = Director(store, {"duel": DUEL}, clock=clock)
    t = await store.create(make_ticket("duel", "alone", clock=clock), clock.now)
    await director.tick()
    clock.now += 11_000
    result = await director.tick()
    assert result.expired == 1
    got = await store.get(t.id, clock.now)
    assert got is not None and got.state == pb.TICKET_STATE_EXPIRED


async def test_racing_directors_never_share_a_ticket(
    store: Store, redis: Redis, clock: Clock
) -> None:
    await add_zone(redis, "main", "z", 0)
    big = Mode(name="duel", zone_capacity=10_000)
    # rotate_ms=0: no dealing, every director sees every ticket.
    directors = [Director(store, {"duel": big}, clock=clock, rotate_ms=0) for _ in range(3)]
    ids: list[str] = []
    matched = 0
    for round_ in range(10):
        for i in range(12):
            ticket = make_ticket("duel", f"p{round_}-{i}", clock=clock)
            ids.append((await store.create(ticket, clock.now)).id)
        # Ticks interleave at every await; claims decide who gets each ticket.
        results = await asyncio.gather(*(d.tick() for d in directors))
        matched += sum(r.matches for r in results)
        clock.now += 100.0
    for _ in range(5):
        clock.now += 300.0
        results = await asyncio.gather(*(d.tick() for d in directors))
        matched += sum(r.matches for r in results)
    assert matched == 60
    tickets = await store.get_many(ids, clock.now)
    matches: dict[str, int] = {}
    for t in tickets:
        assert t is not None and t.state == pb.TICKET_STATE_ASSIGNED
        matches[t.assignment.match_id] = matches.get(t.assignment.match_id, 0) + 1
    assert set(matches.values()) == {2}


def _steal_everything(tickets: Any, now_ms: float, mode: Mode) -> list[Proposal]:
    """A broken match function: seats a player that is not on the ticket."""
    return [
        Proposal(mode.name, "eu", (t.id,), (Seat(t.id, "somebody-else", 0),), 0.0) for t in tickets
    ]


async def test_invalid_proposals_of_a_custom_function_are_refused(
    store: Store, redis: Redis, clock: Clock
) -> None:
    await add_zone(redis, "main", "z", 0)
    matching.register("steal-everything", _steal_everything)
    mode = Mode(name="duel", match_function="steal-everything")
    director = Director(store, {"duel": mode}, clock=clock)
    t = await store.create(make_ticket("duel", "alice", clock=clock), clock.now)
    result = await director.tick()
    assert (result.refused, result.matches) == (1, 0)
    got = await store.get(t.id, clock.now)
    assert got is not None and got.state == pb.TICKET_STATE_SEARCHING


async def test_open_world_solo_is_placed_at_once(store: Store, redis: Redis, clock: Clock) -> None:
    await add_zone(redis, "main", "z", 0)
    (open_world,) = [m for m in DEFAULT_MODES if m.name == "open-world"]
    director = Director(store, {"open-world": open_world}, clock=clock)
    t = await store.create(make_ticket("open-world", "wanderer", clock=clock), clock.now)
    assert (await director.tick()).matches == 1
    got = await store.get(t.id, clock.now)
    assert got is not None and got.assignment.destination.zone == "z"


async def test_tokens_per_tick_spreads_issuance_over_ticks(
    store: Store, redis: Redis, clock: Clock
) -> None:
    await add_zone(redis, "main", "z", 0)
    issuer = Issuer()
    director = Director(
        store, {"duel": Mode(name="duel")}, issuer=issuer, clock=clock, tokens_per_tick=3
    )
    for i in range(6):
        await store.create(make_ticket("duel", f"p{i}", clock=clock), clock.now)
    assert (await director.tick()).matches == 1
    assert len(issuer.players) == 2
    assert (await director.tick()).matches == 1
    assert (await director.tick()).matches == 1
    assert len(issuer.players) == 6
    assert issuer.batches == [2, 2, 2]
