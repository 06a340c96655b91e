"""The store against a real redis-server: tickets, claims, expiry, ratings, backfills, events."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from tessera.common.store import WorldKeys
from tessera.matchmaking.store import Claim, PlayerBusy, Snapshot, Store
from tessera.v1 import common_pb2, zone_pb2
from tessera.v1 import matchmaking_pb2 as pb

NOW = float(int(time.time() * 1000))


def make_ticket(*players: str, mode: str = "duel") -> pb.Ticket:
    return pb.Ticket(
        id=uuid.uuid4().hex,
        mode=mode,
        players=[pb.TicketPlayer(player_id=p) for p in players],
        regions=[pb.RegionLatency(region="eu", latency_ms=10)],
        created_at_ms=NOW,
    )


def assignment(match_id: str, player: str) -> bytes:
    return pb.Assignment(
        match_id=match_id, players=[pb.PlayerAssignment(player_id=player)]
    ).SerializeToString()


@pytest.fixture
def store(redis: Redis) -> Store:
    return Store(redis, ticket_ttl_s=10.0, retention_s=60.0)


async def test_create_get_and_one_active_ticket_per_player(store: Store) -> None:
    t = await store.create(make_ticket("alice"), NOW)
    assert t.state == pb.TICKET_STATE_SEARCHING
    assert t.expires_at_ms == NOW + 10_000
    got = await store.get(t.id, NOW)
    assert got is not None and got.players[0].player_id == "alice"
    with pytest.raises(PlayerBusy) as err:
        await store.create(make_ticket("bob", "alice"), NOW)
    assert err.value.player == "alice" and err.value.ticket_id == t.id
    # Nothing of the refused party ticket was written.
    assert await store.create(make_ticket("bob"), NOW)


async def test_player_is_free_again_once_ticket_ends(store: Store) -> None:
    t = await store.create(make_ticket("alice"), NOW)
    await store.cancel(t, NOW)
    again = await store.create(make_ticket("alice"), NOW)
    # A ticket past its expiry (not yet reaped) does not block either.
    assert await store.create(make_ticket("alice"), NOW + 20_000)
    reaped = await store.get(again.id, NOW + 20_000)
    assert reaped is not None and reaped.state == pb.TICKET_STATE_EXPIRED


async def test_heartbeat_extends_and_expiry_reaps(store: Store, redis: Redis) -> None:
    t = await store.create(make_ticket("alice"), NOW)
    beat = await store.heartbeat(t, NOW + 8_000)
    assert beat is not None and beat.expires_at_ms == NOW + 18_000
    assert await store.expire("duel", NOW + 12_000) == 0
    messages = asyncio.Queue[tuple[int, list[str]]]()

    async def listen() -> None:
        async for event in store.events():
            await messages.put(event)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.1)
    assert await store.expire("duel", NOW + 19_000) == 1
    state, ids = await asyncio.wait_for(messages.get(), 5)
    listener.cancel()
    assert (state, ids) == (pb.TICKET_STATE_EXPIRED, [t.id])
    got = await store.get(t.id, NOW + 19_000)
    assert got is not None and got.state == pb.TICKET_STATE_EXPIRED
    assert await redis.zcard(store.pool_key("duel")) == 0
    assert await redis.exists(store.player_key("alice")) == 0
    # Heartbeating an expired ticket changes nothing.
    late = await store.heartbeat(t, NOW + 20_000)
    assert late is not None and late.state == pb.TICKET_STATE_EXPIRED


async def test_cancel_only_searching(store: Store) -> None:
    t = await store.create(make_ticket("alice"), NOW)
    cancelled = await store.cancel(t, NOW)
    assert cancelled is not None and cancelled.state == pb.TICKET_STATE_CANCELLED
    (result,) = await store.claim("duel", [Claim("m", [(t.id, assignment("m", "alice"))])], NOW)
    assert result == t.id


async def test_claim_is_all_or_nothing(store: Store, redis: Redis) -> None:
    a = await store.create(make_ticket("a"), NOW)
    b = await store.create(make_ticket("b"), NOW)
    c = await store.create(make_ticket("c"), NOW)
    await store.cancel(c, NOW)
    results = await store.claim(
        "duel",
        [
            Claim("m1", [(a.id, assignment("m1", "a")), (c.id, assignment("m1", "c"))]),
            Claim("m2", [(a.id, assignment("m2", "a")), (b.id, assignment("m2", "b"))]),
            Claim("m3", [(b.id, assignment("m3", "b"))]),
        ],
        NOW,
    )
    assert results == [c.id, None, b.id]
    got_a, got_b = await store.get_many([a.id, b.id], NOW)
    assert got_a is not None and got_b is not None
    assert got_a.state == got_b.state == pb.TICKET_STATE_ASSIGNED
    assert got_a.assignment.match_id == got_b.assignment.match_id == "m2"
    assert await redis.exists(store.player_key("a"), store.player_key("b")) == 0
    # The players may queue again.
    assert await store.create(make_ticket("a"), NOW)


async def test_claim_refuses_expired_tickets(store: Store) -> None:
    a = await store.create(make_ticket("a"), NOW)
    (result,) = await store.claim(
        "duel", [Claim("m", [(a.id, assignment("m", "a"))])], NOW + 11_000
    )
    assert result == a.id


async def test_concurrent_claims_never_double_assign(store: Store, redis: Redis) -> None:
    tickets = [await store.create(make_ticket(f"p{i}"), NOW) for i in range(40)]
    ids = [t.id for t in tickets]

    def claims(offset: int) -> list[Claim]:
        rotated = ids[offset:] + ids[:offset]
        return [
            Claim(f"m{offset}-{i}", [(x, assignment("m", "p")) for x in rotated[i : i + 2]])
            for i in range(0, 40, 2)
        ]

    other = Store(
        Redis.from_url(f"redis://127.0.0.1:{redis.connection_pool.connection_kwargs['port']}/0")
    )
    results = await asyncio.gather(
        *(s.claim("duel", claims(k), NOW) for s, k in ((store, 0), (other, 1), (store, 3)))
    )
    await other.redis.aclose()
    winners: dict[str, str] = {}
    for batch, outcome in zip((claims(0), claims(1), claims(3)), results, strict=True):
        for claim, result in zip(batch, outcome, strict=True):
            if result is None:
                for ticket_id, _ in claim.tickets:
                    assert ticket_id not in winners
                    winners[ticket_id] = claim.match_id
    stored = await store.get_many(ids, NOW)
    for ticket in stored:
        assert ticket is not None
        if ticket.id in winners:
            assert ticket.state == pb.TICKET_STATE_ASSIGNED
        else:
            assert ticket.state == pb.TICKET_STATE_SEARCHING


async def test_searching_reads_new_tickets_once(store: Store) -> None:
    snapshot = Snapshot("duel")
    a = await store.create(make_ticket("a"), NOW)
    (first,) = await store.searching(snapshot, NOW)
    assert first.id == a.id and first.ratings == (25.0,)
    b = await store.create(make_ticket("b"), NOW)
    both = await store.searching(snapshot, NOW)
    assert {c.id for c in both} == {a.id, b.id}
    assert first in both and any(c is first for c in both)
    await store.cancel(a, NOW)
    assert [c.id for c in await store.searching(snapshot, NOW)] == [b.id]
    assert await store.searching(snapshot, NOW + 11_000) == []


async def test_ratings_applied_once_per_match(store: Store) -> None:
    assert await store.apply_result("m1", "duel", [["a"], ["b"]], [0, 1])
    assert not await store.apply_result("m1", "duel", [["a"], ["b"]], [1, 0])
    (a, b) = await store.ratings("duel", ["a", "b"])
    assert a[0] > 25.0 > b[0]
    assert (await store.ratings("5v5", ["a"]))[0] == (25.0, 25.0 / 3)
    # Concurrent results for different matches of the same players both land.
    await asyncio.gather(
        store.apply_result("m2", "duel", [["a"], ["b"]], [0, 1]),
        store.apply_result("m3", "duel", [["a"], ["b"]], [0, 1]),
    )
    (a3, _) = await store.ratings("duel", ["a", "b"])
    assert a3[1] < a[1]
    new = (await store.create(make_ticket("a"), NOW)).id
    snapshot = Snapshot("duel")
    (c,) = await store.searching(snapshot, NOW)
    assert c.id == new and c.ratings == (a3[0],)


async def test_backfill_slots_are_claimed_atomically(store: Store, redis: Redis) -> None:
    backfill = pb.Backfill(
        id="bf1",
        match_id="m0",
        mode="5v5",
        region="eu",
        open_slots={0: 1, 1: 1},
        created_at_ms=NOW,
    )
    await store.create_backfill(backfill)
    (open_one,) = await store.open_backfills("5v5")
    assert dict(open_one.open_slots) == {0: 1, 1: 1}
    a = await store.create(make_ticket("a", mode="5v5"), NOW)
    b = await store.create(make_ticket("b", mode="5v5"), NOW)
    c = await store.create(make_ticket("c", mode="5v5"), NOW)
    results = await store.claim(
        "5v5",
        [
            Claim("m0", [(a.id, b"")], backfill_id="bf1", slots={0: 1}),
            Claim("m0", [(b.id, b"")], backfill_id="bf1", slots={0: 1}),
            Claim("m0", [(c.id, b"")], backfill_id="bf1", slots={1: 1}),
        ],
        NOW,
    )
    assert results == [None, "backfill:bf1", None]
    got = await store.get_backfill("bf1")
    assert got is not None
    assert dict(got.open_slots) == {0: 0, 1: 0}
    assert list(got.ticket_ids) == [a.id, c.id]
    assert await store.open_backfills("5v5") == []


async def test_instance_request_is_streamed(store: Store, redis: Redis) -> None:
    a = await store.create(make_ticket("a"), NOW)
    request = pb.Assignment(match_id="m9").SerializeToString()
    assert await store.claim(
        "duel", [Claim("m9", [(a.id, b"")], instance_request=request)], NOW
    ) == [None]
    entries: Any = await redis.xrange(store.instances_key)
    ((_, fields),) = entries
    assert fields == {b"match": b"m9", b"request": request}


async def test_zone_loads_from_registry(store: Store, redis: Redis) -> None:
    keys = WorldKeys("main")
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="main", zone="z1"),
        state=zone_pb2.ZONE_STATE_ACTIVE,
        players=12,
    )
    await redis.sadd(keys.zones, "z1", "z2")
    await redis.set(keys.zone_status("z1"), status.SerializeToString())
    (load,) = await store.zone_loads("main")
    assert (load.zone, load.active, load.players) == ("z1", True, 12)
    assert await store.zone_loads("empty") == []


async def test_create_many_stores_each_ticket_atomically(store: Store, redis: Redis) -> None:
    await redis.hset(store.ratings_key("duel"), "b", "31.5:4.0")
    first = make_ticket("a")
    results = await store.create_many(
        [first, make_ticket("b"), make_ticket("c", "a"), make_ticket("d")], NOW
    )
    assert [type(r).__name__ for r in results] == ["Ticket", "Ticket", "PlayerBusy", "Ticket"]
    busy = results[2]
    assert isinstance(busy, PlayerBusy) and busy.ticket_id == first.id
    assert await redis.exists(store.player_key("c")) == 0
    mus = {c.players[0]: c.ratings for c in await store.searching(Snapshot("duel"), NOW)}
    assert mus == {"a": (25.0,), "b": (31.5,), "d": (25.0,)}


async def test_match_players_are_recorded_for_results(store: Store) -> None:
    a = await store.create(make_ticket("a"), NOW)
    b = await store.create(make_ticket("b", "c"), NOW)
    claim = Claim("m7", [(a.id, assignment("m7", "a")), (b.id, assignment("m7", "b"))])
    assert await store.claim("duel", [claim], NOW) == [None]
    assert await store.outsiders("m7", ["a", "b", "c"]) == []
    assert await store.outsiders("m7", ["a", "mallory"]) == ["mallory"]
    assert await store.outsiders("made-elsewhere", ["anyone"]) == []
