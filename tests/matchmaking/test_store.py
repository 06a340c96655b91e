"""The store against a real redis-server (ratings recorded in a real PostgreSQL): tickets,
claims, expiry, ratings and their cache, backfills, events."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tessera.common.database import Pool
from tessera.common.store import Client, WorldKeys, connect, instances_stream
from tessera.matchmaking.destination import ARRIVAL_GRACE_MS, ZoneLoad
from tessera.matchmaking.records import RatingRecords
from tessera.matchmaking.store import (
    SENT_WINDOW_MS,
    Booking,
    Claim,
    Instance,
    PlayerBusy,
    Snapshot,
    Store,
)
from tessera.v1 import common_pb2, zone_pb2
from tessera.v1 import matchmaking_pb2 as pb

pytestmark = pytest.mark.redis_cluster


def make_ticket(*players: str, mode: str = "duel") -> pb.Ticket:
    return pb.Ticket(
        id=uuid.uuid4().hex,
        mode=mode,
        players=[pb.TicketPlayer(player_id=p) for p in players],
        regions=[pb.RegionLatency(region="eu", latency_ms=10)],
        created_at_ms=time.time() * 1000,
    )


def assignment(match_id: str, player: str) -> bytes:
    return pb.Assignment(
        match_id=match_id, players=[pb.PlayerAssignment(player_id=player)]
    ).SerializeToString()


@pytest.fixture
def now() -> float:
    """The test's clock, ms. Taken per test: the store sets real Redis expiry
    deadlines (PEXPIREAT) from it, so a clock read at collection time could lie
    in the past by the time a long suite reaches this module."""
    return float(int(time.time() * 1000))


@pytest.fixture
def store(redis: Client, database: Pool) -> Store:
    return Store(redis, RatingRecords(database), ticket_ttl_s=10.0, retention_s=60.0)


async def test_create_get_and_one_active_ticket_per_player(store: Store, now: float) -> None:
    t = await store.create(make_ticket("alice"), now)
    assert t.state == pb.TICKET_STATE_SEARCHING
    assert t.expires_at_ms == now + 10_000
    got = await store.get(t.id, now)
    assert got is not None and got.players[0].player_id == "alice"
    with pytest.raises(PlayerBusy) as err:
        await store.create(make_ticket("bob", "alice"), now)
    assert err.value.player == "alice" and err.value.ticket_id == t.id
    # Nothing of the refused party ticket was written.
    assert await store.create(make_ticket("bob"), now)


async def test_player_is_free_again_once_ticket_ends(store: Store, now: float) -> None:
    t = await store.create(make_ticket("alice"), now)
    await store.cancel(t, now)
    again = await store.create(make_ticket("alice"), now)
    # A ticket past its expiry (not yet reaped) does not block either.
    assert await store.create(make_ticket("alice"), now + 20_000)
    reaped = await store.get(again.id, now + 20_000)
    assert reaped is not None and reaped.state == pb.TICKET_STATE_EXPIRED


async def test_heartbeat_extends_and_expiry_reaps(store: Store, redis: Client, now: float) -> None:
    t = await store.create(make_ticket("alice"), now)
    beat = await store.heartbeat(t, now + 8_000)
    assert beat is not None and beat.expires_at_ms == now + 18_000
    assert await store.expire("duel", now + 12_000) == 0
    messages = asyncio.Queue[tuple[int, list[str]]]()

    async def listen() -> None:
        async for event in store.events():
            await messages.put(event)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.1)
    assert await store.expire("duel", now + 19_000) == 1
    state, ids = await asyncio.wait_for(messages.get(), 5)
    listener.cancel()
    assert (state, ids) == (pb.TICKET_STATE_EXPIRED, [t.id])
    got = await store.get(t.id, now + 19_000)
    assert got is not None and got.state == pb.TICKET_STATE_EXPIRED
    assert await redis.zcard(store.pool_key("duel")) == 0
    assert await redis.exists(store.player_key("alice")) == 0
    # Heartbeating an expired ticket changes nothing.
    late = await store.heartbeat(t, now + 20_000)
    assert late is not None and late.state == pb.TICKET_STATE_EXPIRED


async def test_cancel_only_searching(store: Store, now: float) -> None:
    t = await store.create(make_ticket("alice"), now)
    cancelled = await store.cancel(t, now)
    assert cancelled is not None and cancelled.state == pb.TICKET_STATE_CANCELLED
    (result,) = await store.claim("duel", [Claim("m", [(t.id, assignment("m", "alice"))])], now)
    assert result == t.id


async def test_claim_is_all_or_nothing(store: Store, redis: Client, now: float) -> None:
    a = await store.create(make_ticket("a"), now)
    b = await store.create(make_ticket("b"), now)
    c = await store.create(make_ticket("c"), now)
    await store.cancel(c, now)
    results = await store.claim(
        "duel",
        [
            Claim("m1", [(a.id, assignment("m1", "a")), (c.id, assignment("m1", "c"))]),
            Claim("m2", [(a.id, assignment("m2", "a")), (b.id, assignment("m2", "b"))]),
            Claim("m3", [(b.id, assignment("m3", "b"))]),
        ],
        now,
    )
    assert results == [c.id, None, b.id]
    got_a, got_b = await store.get_many([a.id, b.id], now)
    assert got_a is not None and got_b is not None
    assert got_a.state == got_b.state == pb.TICKET_STATE_ASSIGNED
    assert got_a.assignment.match_id == got_b.assignment.match_id == "m2"
    assert await redis.exists(store.player_key("a"), store.player_key("b")) == 0
    # The players may queue again.
    assert await store.create(make_ticket("a"), now)


async def test_claim_refuses_expired_tickets(store: Store, now: float) -> None:
    a = await store.create(make_ticket("a"), now)
    (result,) = await store.claim(
        "duel", [Claim("m", [(a.id, assignment("m", "a"))])], now + 11_000
    )
    assert result == a.id


async def test_concurrent_claims_never_double_assign(
    store: Store, redis_url: str, now: float
) -> None:
    tickets = [await store.create(make_ticket(f"p{i}"), now) for i in range(40)]
    ids = [t.id for t in tickets]

    def claims(offset: int) -> list[Claim]:
        rotated = ids[offset:] + ids[:offset]
        return [
            Claim(f"m{offset}-{i}", [(x, assignment("m", "p")) for x in rotated[i : i + 2]])
            for i in range(0, 40, 2)
        ]

    other = Store(connect(redis_url), store.records)
    results = await asyncio.gather(
        *(s.claim("duel", claims(k), now) for s, k in ((store, 0), (other, 1), (store, 3)))
    )
    await other.redis.aclose()
    winners: dict[str, str] = {}
    for batch, outcome in zip((claims(0), claims(1), claims(3)), results, strict=True):
        for claim, result in zip(batch, outcome, strict=True):
            if result is None:
                for ticket_id, _ in claim.tickets:
                    assert ticket_id not in winners
                    winners[ticket_id] = claim.match_id
    stored = await store.get_many(ids, now)
    for ticket in stored:
        assert ticket is not None
        if ticket.id in winners:
            assert ticket.state == pb.TICKET_STATE_ASSIGNED
        else:
            assert ticket.state == pb.TICKET_STATE_SEARCHING


async def test_searching_reads_new_tickets_once(store: Store, now: float) -> None:
    snapshot = Snapshot("duel")
    a = await store.create(make_ticket("a"), now)
    (first,) = await store.searching(snapshot, now)
    assert first.id == a.id and first.ratings == (25.0,)
    b = await store.create(make_ticket("b"), now)
    both = await store.searching(snapshot, now)
    assert {c.id for c in both} == {a.id, b.id}
    assert first in both and any(c is first for c in both)
    await store.cancel(a, now)
    assert [c.id for c in await store.searching(snapshot, now)] == [b.id]
    assert await store.searching(snapshot, now + 11_000) == []


async def test_a_ticket_keeps_the_trace_of_its_creation(store: Store, now: float) -> None:
    traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    traced = await store.create(make_ticket("a"), now, "session-a", traceparent)
    plain = await store.create(make_ticket("b"), now)
    found = {c.id: c for c in await store.searching(Snapshot("duel"), now)}
    assert found[traced.id].traceparent == traceparent
    assert found[traced.id].owner_session == "session-a"
    assert found[plain.id].traceparent == ""


async def test_ratings_applied_once_per_match(store: Store, now: float) -> None:
    assert await store.apply_result("m1", "duel", [["a"], ["b"]], [0, 1], now_ms=now)
    assert not await store.apply_result("m1", "duel", [["a"], ["b"]], [1, 0], now_ms=now)
    (a, b) = await store.ratings("duel", ["a", "b"])
    assert a[0] > 25.0 > b[0]
    assert (await store.ratings("5v5", ["a"]))[0] == (25.0, 25.0 / 3)
    # Concurrent results for different matches of the same players both land.
    await asyncio.gather(
        store.apply_result("m2", "duel", [["a"], ["b"]], [0, 1], now_ms=now),
        store.apply_result("m3", "duel", [["a"], ["b"]], [0, 1], now_ms=now),
    )
    (a3, _) = await store.ratings("duel", ["a", "b"])
    assert a3[1] < a[1]
    new = (await store.create(make_ticket("a"), now)).id
    snapshot = Snapshot("duel")
    (c,) = await store.searching(snapshot, now)
    assert c.id == new and c.ratings == (a3[0],)


async def test_backfill_slots_are_claimed_atomically(
    store: Store, redis: Client, now: float
) -> None:
    backfill = pb.Backfill(
        id="bf1",
        match_id="m0",
        mode="5v5",
        region="eu",
        open_slots={0: 1, 1: 1},
        created_at_ms=time.time() * 1000,
    )
    await store.create_backfill(backfill)
    (open_one,) = await store.open_backfills("5v5")
    assert dict(open_one.open_slots) == {0: 1, 1: 1}
    a = await store.create(make_ticket("a", mode="5v5"), now)
    b = await store.create(make_ticket("b", mode="5v5"), now)
    c = await store.create(make_ticket("c", mode="5v5"), now)
    results = await store.claim(
        "5v5",
        [
            Claim("m0", [(a.id, b"")], backfill_id="bf1", slots={0: 1}),
            Claim("m0", [(b.id, b"")], backfill_id="bf1", slots={0: 1}),
            Claim("m0", [(c.id, b"")], backfill_id="bf1", slots={1: 1}),
        ],
        now,
    )
    assert results == [None, "backfill:bf1", None]
    got = await store.get_backfill("bf1")
    assert got is not None
    assert dict(got.open_slots) == {0: 0, 1: 0}
    assert list(got.ticket_ids) == [a.id, c.id]
    assert await store.open_backfills("5v5") == []


async def test_instance_lifecycle_is_streamed_per_world(
    store: Store, redis: Client, now: float
) -> None:
    a = await store.create(make_ticket("a"), now)
    b = await store.create(make_ticket("b"), now)
    gone = await store.create(make_ticket("gone"), now)
    await store.cancel(gone, now)
    request = pb.Assignment(match_id="m9").SerializeToString()
    instance = Instance("arenas", "inst-m9", request)
    claims = [
        Claim("m9", [(a.id, b""), (b.id, b"")], instance=instance),
        Claim("m8", [(gone.id, b"")], instance=Instance("arenas", "inst-m8", request)),
    ]
    assert await store.claim("duel", claims, now) == [None, gone.id]
    entries: Any = await redis.xrange(instances_stream("arenas"))
    ((_, fields),) = entries  # nothing for the claim that failed
    assert fields == {
        b"kind": b"create",
        b"match": b"m9",
        b"zone": b"inst-m9",
        b"mode": b"duel",
        b"request": request,
        b"at_ms": str(int(now)).encode(),
    }
    assert await redis.get(store.instance_key("m9")) == b"arenas inst-m9"
    assert 86_000 < await redis.ttl(store.instance_key("m9")) <= 86_400
    assert await redis.exists(store.instance_key("m8")) == 0
    # The result ends the instance, once, in the same transaction as the ratings.
    assert await store.apply_result("m9", "duel", [["a"], ["b"]], [0, 1], now_ms=now + 5)
    assert not await store.apply_result("m9", "duel", [["a"], ["b"]], [1, 0], now_ms=now + 9)
    assert await store.apply_result("open-world-match", "duel", [["a"], ["b"]], [0, 1], now_ms=now)
    entries = await redis.xrange(instances_stream("arenas"))
    assert len(entries) == 2
    assert entries[1][1] == {
        b"kind": b"end",
        b"match": b"m9",
        b"zone": b"inst-m9",
        b"at_ms": str(int(now) + 5).encode(),
    }
    assert await redis.keys("tessera:{mm}:instances:*") == [instances_stream("arenas").encode()]
    # A one-team (cooperative) result rates nobody but still ends its instance.
    coop = Claim("m7", [], instance=Instance("arenas", "inst-m7", request))
    assert await store.claim("dungeon", [coop], now) == [None]
    before = await store.ratings("dungeon", ["a", "b"])
    assert await store.apply_result("m7", "dungeon", [["a", "b"]], [0], now_ms=now + 1)
    assert await store.ratings("dungeon", ["a", "b"]) == before
    entries = await redis.xrange(instances_stream("arenas"))
    assert (entries[-1][1][b"kind"], entries[-1][1][b"match"]) == (b"end", b"m7")


async def test_zone_room_is_checked_in_the_claim_across_replicas(
    store: Store, redis: Client, redis_url: str, now: float
) -> None:
    """Two stores (as two replicas) book one zone concurrently: the claim script admits
    players only while the zone has room, counting every booking since the heartbeat."""
    other = Store(connect(redis_url), store.records)
    tickets = [await store.create(make_ticket(f"p{i}"), now) for i in range(40)]

    def booked(i: int, players: int) -> Claim:
        booking = Booking(
            "main", "z", players, capacity=25, heartbeat_players=5, heartbeat_ms=now - 100.0
        )
        return Claim(f"m{i}", [(tickets[i].id, b"")], booking=booking)

    results = await asyncio.gather(
        *(s.claim("duel", [booked(i, 1 + i % 3)], now) for i, s in enumerate([store, other] * 20))
    )
    await other.redis.aclose()
    admitted = [i for i, (r,) in enumerate(results) if r is None]
    refused = [r for (r,) in results if r is not None]
    assert sum(1 + i % 3 for i in admitted) <= 20 and sum(1 + i % 3 for i in admitted) >= 18
    assert refused and set(refused) == {"zone:z"}
    # A refused proposal changed nothing: its ticket still searches.
    left = await store.get_many([t.id for i, t in enumerate(tickets) if i not in admitted], now)
    assert all(t is not None and t.state == pb.TICKET_STATE_SEARCHING for t in left)
    (load,) = await store_loads(store, redis, players=5, updated_at_ms=now - 100.0)
    assert load.sent == sum(1 + i % 3 for i in admitted)
    # A heartbeat right after the bookings may not include their players yet (still
    # connecting): they keep counting for ARRIVAL_GRACE_MS.
    (load,) = await store_loads(store, redis, players=25, updated_at_ms=now + 50.0)
    assert load.sent == sum(1 + i % 3 for i in admitted)
    # After that only later bookings count; a backfill (no capacity) is recorded
    # even into a full zone.
    later = now + 50.0 + ARRIVAL_GRACE_MS
    (load,) = await store_loads(store, redis, players=25, updated_at_ms=later)
    assert load.sent == 0
    spare = next(t for i, t in enumerate(tickets) if i not in admitted)
    backfill = Claim("bf", [(spare.id, b"")], booking=Booking("main", "z", 2))
    assert await store.claim("duel", [backfill], now + 60) == [None]
    (load,) = await store_loads(store, redis, players=25, updated_at_ms=later)
    assert load.sent == 2
    sent = store.sent_key("main", "z")
    assert 0 < await redis.pttl(sent) <= SENT_WINDOW_MS
    # Entries older than the window are pruned by the next booking.
    count = await redis.zcard(sent)
    late = await store.create(make_ticket("late"), now + SENT_WINDOW_MS + 1_000)
    claim = Claim("late", [(late.id, b"")], booking=Booking("main", "z", 1))
    assert await store.claim("duel", [claim], now + SENT_WINDOW_MS + 1_000) == [None]
    assert count > 1 and await redis.zcard(sent) == 1


async def store_loads(
    store: Store, redis: Client, *, players: int, updated_at_ms: float
) -> list[ZoneLoad]:
    """Register zone z of world main with a heartbeat, then read the loads."""
    keys = WorldKeys("main")
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="main", zone="z"),
        state=zone_pb2.ZONE_STATE_ACTIVE,
        players=players,
        updated_at_ms=updated_at_ms,
    )
    await redis.sadd(keys.zones, "z")
    await redis.set(keys.zone_status("z"), status.SerializeToString())
    return await store.zone_loads("main")


async def test_zone_loads_from_registry(store: Store, redis: Client) -> None:
    keys = WorldKeys("main")
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="main", zone="z1"),
        state=zone_pb2.ZONE_STATE_ACTIVE,
        players=12,
    )
    instance = zone_pb2.ZoneStatus(state=zone_pb2.ZONE_STATE_ACTIVE, instance="m1")
    await redis.sadd(keys.zones, "z1", "z2", "inst-m1")
    await redis.set(keys.zone_status("z1"), status.SerializeToString())
    await redis.set(keys.zone_status("inst-m1"), instance.SerializeToString())
    (load,) = await store.zone_loads("main")
    assert (load.zone, load.active, load.players, load.sent) == ("z1", True, 12, 0)
    assert await store.zone_loads("empty") == []


async def test_create_many_stores_each_ticket_atomically(
    store: Store, redis: Client, now: float
) -> None:
    await redis.hset(store.ratings_key("duel"), "b", "31.5:4.0")
    first = make_ticket("a")
    results = await store.create_many(
        [first, make_ticket("b"), make_ticket("c", "a"), make_ticket("d")], now
    )
    assert [type(r).__name__ for r in results] == ["Ticket", "Ticket", "PlayerBusy", "Ticket"]
    busy = results[2]
    assert isinstance(busy, PlayerBusy) and busy.ticket_id == first.id
    assert await redis.exists(store.player_key("c")) == 0
    mus = {c.players[0]: c.ratings for c in await store.searching(Snapshot("duel"), now)}
    assert mus == {"a": (25.0,), "b": (31.5,), "d": (25.0,)}


async def test_match_players_are_recorded_for_results(store: Store, now: float) -> None:
    a = await store.create(make_ticket("a"), now)
    b = await store.create(make_ticket("b", "c"), now)
    claim = Claim("m7", [(a.id, assignment("m7", "a")), (b.id, assignment("m7", "b"))])
    assert await store.claim("duel", [claim], now) == [None]
    assert await store.outsiders("m7", ["a", "b", "c"]) == []
    assert await store.outsiders("m7", ["a", "mallory"]) == ["mallory"]
    assert await store.outsiders("made-elsewhere", ["anyone"]) == []


async def test_a_flushed_cache_is_filled_from_the_records(
    store: Store, redis: Client, now: float
) -> None:
    """Ratings live in PostgreSQL: after Redis loses everything, new tickets (one by
    one and in bulk) carry the recorded ratings again, and unknown players the default."""
    assert await store.apply_result("m1", "duel", [["a"], ["b"]], [0, 1], now_ms=now)
    (a, b) = await store.ratings("duel", ["a", "b"])
    await redis.flushall()
    await store.create(make_ticket("a"), now)
    results = await store.create_many([make_ticket("b"), make_ticket("new")], now)
    assert all(isinstance(r, pb.Ticket) for r in results)
    mus = {c.players[0]: c.ratings for c in await store.searching(Snapshot("duel"), now)}
    assert mus == {"a": (a[0],), "b": (b[0],), "new": (25.0,)}
    cached = await redis.hget(store.ratings_key("duel"), "a")
    assert cached == f"{a[0]!r}:{a[1]!r}:1".encode()


async def test_the_cache_never_goes_back_to_an_older_version(
    store: Store, redis: Client, now: float
) -> None:
    """A fill that read the records before a result was applied arrives after the
    result's write-through: the newer cached rating stays."""
    stale = await store.records.ratings("duel", ["a"])
    assert await store.apply_result("m1", "duel", [["a"], ["b"]], [0, 1], now_ms=now)
    fresh = await redis.hget(store.ratings_key("duel"), "a")
    await store._cache_ratings("duel", stale)
    assert await redis.hget(store.ratings_key("duel"), "a") == fresh
    # A legacy value without a version counts as older than any recorded one.
    await redis.hset(store.ratings_key("duel"), "c", "40.0:1.0")
    await store._fill_cache("duel", ["c"])
    assert await redis.hget(store.ratings_key("duel"), "c") == b"25.0:8.333333333333334:0"
