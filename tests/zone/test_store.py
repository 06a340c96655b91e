"""The zone's Redis adapter against a real redis-server and a real Redis Cluster."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from tessera.common.store import Client, WorldKeys, connect
from tessera.harness.redis import LocalRedis
from tessera.v1 import common_pb2, zone_pb2
from tessera.zone.store import (
    CLOSED,
    COMMITTED,
    Commit,
    GhostFeed,
    ZoneStore,
    entry_age_s,
    parse_route,
    read_commits,
)

pytestmark = pytest.mark.redis_cluster


async def test_routes_are_compare_and_set_and_published(redis: Client) -> None:
    store = ZoneStore(redis, world="w", zone="z1")
    keys = WorldKeys("w")
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.routes_changed)
    await pubsub.get_message(timeout=1)  # subscribe confirmation
    assert await store.claim_route("p", "", 1)
    assert not await store.claim_route("p", "", 2)  # someone claimed it already
    assert await store.claim_route("p", "z1|1", 2)
    route = await store.route("p")
    assert route is not None and (route.zone, route.epoch) == ("z1", 2)
    await redis.hset(keys.routes, "q", "z2|7")
    assert await store.routes_here() == {"p": 2}
    assert not await store.release_route("q")  # not ours
    assert await store.release_route("p")
    messages = []
    for _ in range(3):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if msg:
            messages.append(msg["data"])
    assert messages == [b"p|z1|1", b"p|z1|2", b"p||0"]
    # A claim run again (its answer lost, the client retried) is done, not refused.
    assert await store.claim_route("r", "", 4)
    assert await store.claim_route("r", "", 4)
    assert not await store.claim_route("r", "", 5)
    await pubsub.aclose()
    assert parse_route("bad") is None


async def test_checkpoints_ids_and_heartbeat(redis: Client) -> None:
    a = ZoneStore(redis, world="w", zone="z1", id_block=3)
    b = ZoneStore(redis, world="w", zone="z2", id_block=3)
    ids = await a.next_ids(2) + await b.next_ids(2) + await a.next_ids(4)
    assert len(set(ids)) == len(ids) and min(ids) >= 1
    states = {
        f"p{i}": zone_pb2.EntityState(
            entity_id=i, player_id=f"p{i}", position=common_pb2.Vec3(x=i)
        ).SerializeToString()
        for i in range(3)
    }
    await a.save_checkpoints(states)
    loaded = await a.load_checkpoints(["p1", "p2", "nobody"])
    assert sorted(loaded) == ["p1", "p2"] and loaded["p2"].position.x == 2
    status = zone_pb2.ZoneStatus(players=5)
    await a.heartbeat(status, ttl_s=0.2)
    keys = WorldKeys("w")
    assert await redis.smembers(keys.zones) == {b"z1"}
    raw = await redis.get(keys.zone_status("z1"))
    assert isinstance(raw, bytes) and zone_pb2.ZoneStatus.FromString(raw).players == 5
    assert await b.zone_alive("z1")
    await asyncio.sleep(0.3)
    assert not await b.zone_alive("z1")


async def test_tallies_are_published_for_flagged_players_with_a_ttl(redis: Client) -> None:
    a = ZoneStore(redis, world="w", zone="z1")
    b = ZoneStore(redis, world="w", zone="z2")
    tallies = {"clean": (0, 0), "fast": (3, 0), "jumpy": (1, 2)}  # (speed_clamps, teleports)
    assert await a.publish_tallies(tallies, ttl_s=60, now_ms=1000) == 2
    assert await a.publish_tallies(tallies, ttl_s=60, now_ms=1200) == 0  # unchanged
    assert await a.publish_tallies({"clean": (0, 0)}, ttl_s=60, now_ms=1500) == 0
    # The player moved on to z2 and clamped again: the newest tallies, zone, first time.
    moved = {"fast": (5, 0)}
    assert await b.publish_tallies(moved, ttl_s=60, now_ms=2000) == 1
    keys = WorldKeys("w")
    assert await redis.zrange(keys.cheat_tallies("speed_clamps"), 0, -1, withscores=True) == [
        (b"jumpy", 1.0),
        (b"fast", 5.0),
    ]
    assert await redis.zrange(keys.cheat_tallies("teleports"), 0, -1, withscores=True) == [
        (b"fast", 0.0),
        (b"jumpy", 2.0),
    ]
    assert await redis.hgetall(keys.cheat_zones) == {b"fast": b"z2", b"jumpy": b"z1"}
    assert await redis.hgetall(keys.cheat_since) == {b"fast": b"1000", b"jumpy": b"1000"}
    for key in (keys.cheat_tallies("teleports"), keys.cheat_zones, keys.cheat_since):
        assert 0 < await redis.ttl(key) <= 60
    # A minute later jumpy's tallies have not changed for the TTL: forgotten
    # everywhere; fast changed at 2000 and stays.
    assert await b.publish_tallies(moved, ttl_s=60, now_ms=61_500) == 0
    for reason in ("speed_clamps", "teleports"):
        assert await redis.zrange(keys.cheat_tallies(reason), 0, -1) == [b"fast"]
    assert await redis.hgetall(keys.cheat_zones) == {b"fast": b"z2"}
    assert await redis.hgetall(keys.cheat_since) == {b"fast": b"1000"}
    assert await redis.zrange(keys.cheat_changed, 0, -1, withscores=True) == [(b"fast", 2000.0)]


def commit(target: str, player: str, expected: str, epoch: int) -> Commit:
    state = zone_pb2.EntityState(entity_id=9, player_id=player, zone=target, epoch=epoch)
    msg = zone_pb2.InboxMessage(commit=zone_pb2.HandoffCommit(entity_id=9, epoch=epoch))
    return Commit(target, player, expected, epoch, state, msg)


async def test_handoff_commit_is_all_or_nothing(redis: Client) -> None:
    a = ZoneStore(redis, world="w", zone="a")
    b = ZoneStore(redis, world="w", zone="b")
    keys = WorldKeys("w")
    await redis.hset(keys.routes, "p", "a|3")
    # Wrong expected epoch: nothing is written, no COMMIT queued.
    assert await a.commit_handoffs([commit("b", "p", "a|2", 4)]) == [False]
    assert await redis.hget(keys.routes, "p") == b"a|3"
    assert await redis.hget(keys.checkpoints, "p") is None
    assert await b.receive(block_ms=10) == []
    # Right epoch: route, checkpoint and COMMIT together; an NPC only queues the COMMIT.
    ok = await a.commit_handoffs([commit("b", "p", "a|3", 4), commit("b", "", "", 1)])
    assert ok == [True, True]
    assert await redis.hget(keys.routes, "p") == b"b|4"
    raw = await redis.hget(keys.checkpoints, "p")
    assert isinstance(raw, bytes)
    saved = zone_pb2.EntityState.FromString(raw)
    assert (saved.zone, saved.epoch) == ("b", 4)
    got = await b.receive(block_ms=10)
    assert [m.commit.epoch for _id, m in got if m is not None] == [4, 1]
    # The same commit run again (a retried command whose answer was lost) is done:
    # the source must not roll back an entity the target now owns, and nothing
    # is written or queued twice.
    assert await a.commit_handoffs([commit("b", "p", "a|3", 4)]) == [True]
    assert await b.receive(block_ms=10, done=[i for i, _m in got]) == []
    # Another commit from the old route cannot move it again.
    assert await a.commit_handoffs([commit("c", "p", "a|3", 4)]) == [False]
    assert await redis.hget(keys.routes, "p") == b"b|4"


async def test_commits_wait_in_the_inbox_until_the_target_has_taken_them(redis: Client) -> None:
    a, b = ZoneStore(redis, world="w", zone="a"), ZoneStore(redis, world="w", zone="b")
    await redis.hset(WorldKeys("w").routes, "p", "a|3")
    moving = commit("b", "p", "a|3", 4)
    moving.message.commit.entity.CopyFrom(moving.state)  # as the border sends it
    assert await a.commit_handoffs([moving, commit("b", "", "", 1)]) == [True, True]
    await b.send_many([("b", zone_pb2.InboxMessage(ack=zone_pb2.HandoffAck(entity_id=9)))])
    assert await read_commits(redis, "w", "b") == {("p", 4)}  # the NPC and the ACK are not
    assert await read_commits(redis, "w", "b", page=1) == {("p", 4)}  # three replies
    assert await read_commits(redis, "w", "a") == set()
    taken = await b.receive(block_ms=10)
    assert await read_commits(redis, "w", "b") == {("p", 4)}  # read, not yet done
    assert await b.receive(block_ms=1, done=[entry for entry, _m in taken]) == []
    assert await read_commits(redis, "w", "b") == set()  # done with the next read


async def test_a_batch_of_commits_is_judged_one_by_one(redis: Client) -> None:
    """One script commits a batch: each handoff stands or falls alone, in order,
    and each COMMIT goes to its own target's inbox."""
    a = ZoneStore(redis, world="w", zone="a")
    keys = WorldKeys("w")
    for player in ("p", "q", "r"):
        await redis.hset(keys.routes, player, "a|1")
    batch = [
        commit("b", "p", "a|1", 2),
        commit("c", "q", "a|0", 2),  # stale expectation: refused
        commit("c", "r", "a|1", 3),
        commit("b", "", "", 5),  # an NPC: the COMMIT only
    ]
    assert await a.commit_handoffs(batch) == [True, False, True, True]
    assert await redis.hmget(keys.routes, ["p", "q", "r"]) == [b"b|2", b"a|1", b"c|3"]
    got_b = await ZoneStore(redis, world="w", zone="b").receive(block_ms=10)
    got_c = await ZoneStore(redis, world="w", zone="c").receive(block_ms=10)
    assert [m.commit.epoch for _i, m in got_b if m is not None] == [2, 5]
    assert [m.commit.epoch for _i, m in got_c if m is not None] == [3]


async def test_a_traced_commit_publishes_its_traceparent(redis: Client) -> None:
    a = ZoneStore(redis, world="w", zone="a")
    keys = WorldKeys("w")
    await redis.hset(keys.routes, "p", "a|3")
    await redis.hset(keys.routes, "q", "a|1")
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.routes_changed)
    await pubsub.get_message(timeout=1)  # subscribe confirmation
    traced = commit("b", "p", "a|3", 4)
    traceparent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    traced.message.trace_context["traceparent"] = traceparent
    assert await a.commit_handoffs([traced, commit("b", "q", "a|1", 2)]) == [True, True]
    messages = []
    for _ in range(2):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if msg:
            messages.append(msg["data"])
    await pubsub.aclose()
    assert messages == [f"p|b|4|{traceparent}".encode(), b"q|b|2"]
    # The COMMIT keeps the context too.
    first, second = [m for _id, m in await ZoneStore(redis, world="w", zone="b").receive()]
    assert first is not None and first.trace_context["traceparent"] == traceparent
    assert second is not None and not second.trace_context


async def test_no_commit_lands_in_a_closed_zone(redis: Client) -> None:
    """A zone that has drained closes its inbox (and learns the newest entry then):
    a player's commit into it is refused as CLOSED (the route stays, nothing is
    queued); one done before the close stays done when retried; an NPC's is not
    refused (its retry could not be told apart); a zone of that name that starts
    again opens it."""
    a = ZoneStore(redis, world="w", zone="a")
    b = ZoneStore(redis, world="w", zone="b")
    keys = WorldKeys("w")
    await redis.hset(keys.routes, "p", "a|3")
    await redis.hset(keys.routes, "q", "a|3")
    assert await b.close_inbox() == ""  # nothing queued yet
    await b.open_inbox()
    assert await a.commit_handoffs([commit("b", "p", "a|3", 4)]) == [COMMITTED]
    newest = await b.close_inbox()
    assert [i for i, _m in await b.receive(block_ms=10)] == [newest]  # p's COMMIT
    npc = commit("b", "", "", 4)
    done_before = commit("b", "p", "a|3", 4)  # retried: its answer was lost
    outcomes = await a.commit_handoffs([commit("b", "q", "a|3", 4), npc, done_before])
    assert outcomes == [CLOSED, COMMITTED, COMMITTED]
    assert await redis.hget(keys.routes, "q") == b"a|3"
    assert await redis.xlen(keys.zone_inbox("b")) == 2  # p's before the close, the NPC's
    await b.open_inbox()
    assert await a.commit_handoffs([commit("b", "q", "a|3", 4)]) == [COMMITTED]


async def test_a_batch_reaches_a_waiting_zone_whole(redis: Client) -> None:
    """Messages sent together (PREPAREs, their answers, COMMITs) land in the inbox
    at once: a zone blocked on its inbox reads the whole batch, not the first
    message alone with the rest waiting behind its processing."""
    a = ZoneStore(redis, world="w", zone="a")
    b = ZoneStore(redis, world="w", zone="b")
    keys = WorldKeys("w")
    assert await b.receive(block_ms=1) == []  # the consumer group exists

    async def read_while_sending(send: Callable[[], Awaitable[object]]) -> int:
        reading = asyncio.create_task(b.receive(block_ms=5000))
        await asyncio.sleep(0.2)  # blocked in XREADGROUP
        await send()
        got = await asyncio.wait_for(reading, 5)
        assert await b.receive(block_ms=1, done=[i for i, _m in got]) == []
        return len(got)

    ping = zone_pb2.InboxMessage(abort=zone_pb2.HandoffAbort(entity_id=1, epoch=2))
    assert await read_while_sending(lambda: a.send_many([("b", ping)] * 40)) == 40
    for i in range(40):
        await redis.hset(keys.routes, f"p{i}", "a|1")
    commits = [commit("b", f"p{i}", "a|1", 2) for i in range(40)]
    assert await read_while_sending(lambda: a.commit_handoffs(commits)) == 40


async def test_a_batch_to_several_zones_is_one_script_in_order(
    redis: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each message of a batch lands in its own zone's inbox, in order, and the call
    starts no thread: redis-py's cluster client runs every command queued in a
    MULTI/EXEC on a thread and event loop of its own, with the zone's loop stopped
    meanwhile (~90 ms for 200 messages)."""
    a = ZoneStore(redis, world="w", zone="a")
    await a.send_many([])  # nothing to send: no command
    ping = zone_pb2.InboxMessage(abort=zone_pb2.HandoffAbort(entity_id=1, epoch=2))
    await a.send_many([("x", ping)])  # connections made (a host lookup may use a thread)
    started: list[str] = []
    start = threading.Thread.start

    def counted(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    batch = [
        (zone, zone_pb2.InboxMessage(abort=zone_pb2.HandoffAbort(entity_id=n, epoch=2)))
        for n, zone in enumerate(["b", "c", "b", "d", "c"] * 20)
    ]
    await a.send_many(batch)
    assert started == []
    for zone in "bcd":
        got = await ZoneStore(redis, world="w", zone=zone).receive(block_ms=10, count=200)
        ids = [m.abort.entity_id for _i, m in got if m is not None]
        assert ids == [n for n, (z, _m) in enumerate(batch) if z == zone]


async def test_a_read_returns_again_what_a_lost_read_delivered(redis: Client) -> None:
    """A read whose reply was lost (the client retried it, or it failed) leaves its
    entries delivered: the next read returns them first, then new ones."""
    sender = ZoneStore(redis, world="w", zone="a")
    ping = zone_pb2.InboxMessage(abort=zone_pb2.HandoffAbort(entity_id=1, epoch=2))
    await sender.send_many([("b", ping), ("b", ping)])
    b = ZoneStore(redis, world="w", zone="b")
    lost = [i for i, _m in await b.receive(block_ms=10)]  # delivered; say the reply was lost
    await sender.send_many([("b", ping)])
    got = [i for i, _m in await b.receive(block_ms=10)]
    assert len(lost) == 2 and got[:2] == lost and len(got) == 3
    assert await b.receive(block_ms=1, done=got) == []
    assert await redis.xlen(WorldKeys("w").zone_inbox("b")) == 0


async def test_inbox_redelivers_unacknowledged_entries_after_a_restart(redis: Client) -> None:
    sender = ZoneStore(redis, world="w", zone="a")
    ping = zone_pb2.InboxMessage(abort=zone_pb2.HandoffAbort(entity_id=1, epoch=2))
    await sender.send_many([("b", ping), ("b", ping)])
    await redis.xadd(WorldKeys("w").zone_inbox("b"), {"m": b"\xff garbage"})
    first = ZoneStore(redis, world="w", zone="b")
    got = await first.receive(block_ms=10)
    assert len(got) == 3 and got[2][1] is None  # malformed entries come back as None
    # Handled the first, then crashed before reading (and so acknowledging) again.
    restarted = ZoneStore(redis, world="w", zone="b")
    again = await restarted.receive(block_ms=10_000, done=[got[0][0]])  # no wait: first read
    assert [i for i, _m in again] == [got[1][0], got[2][0]]
    assert await restarted.receive(block_ms=1, done=[i for i, _m in again]) == []
    assert await ZoneStore(redis, world="w", zone="b").receive(block_ms=10) == []
    assert await redis.xlen(WorldKeys("w").zone_inbox("b")) == 0


async def test_ghost_batches_reach_the_neighbours_that_follow(redis: Client) -> None:
    west = ZoneStore(redis, world="w", zone="west")
    north = ZoneStore(redis, world="w", zone="north")
    got: list[tuple[str, bytes]] = []
    feed = GhostFeed(redis, WorldKeys("w"), lambda zone, batch: got.append((zone, batch)))

    async def batches(n: int) -> list[tuple[str, bytes]]:
        """The next ``n`` batches delivered (waiting up to 10 s), plus any that
        follow within half a second."""
        for _ in range(1000):
            if len(got) >= n:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        out = got[:]
        got.clear()
        return out

    try:
        await feed.follow(set())  # nothing to follow: no connection
        assert feed.sub is None
        await feed.follow({"west", "north"})
        # A subscription takes effect once the server has read SUBSCRIBE:
        # publish until the first batch arrives, then drop the extra copies.
        for _ in range(50):
            await west.publish_ghosts(b"w1")
            await asyncio.sleep(0.1)
            if got:
                break
        assert got and set(await batches(0)) == {("west", b"w1")}
        await north.publish_ghosts(b"n1")
        await west.publish_ghosts(b"w2")
        assert await batches(2) == [("north", b"n1"), ("west", b"w2")]
        await feed.follow({"north"})
        await west.publish_ghosts(b"w3")
        await north.publish_ghosts(b"n3")
        assert await batches(1) == [("north", b"n3")]
        await feed.close()  # after an error: the next follow subscribes anew
        assert feed.sub is None and feed.zones == set()
        await feed.follow({"west"})
        for _ in range(50):
            await west.publish_ghosts(b"w4")
            await asyncio.sleep(0.1)
            if got:
                break
        assert set(await batches(0)) == {("west", b"w4")}
    finally:
        await feed.close()


async def test_a_feed_hears_the_zone_map_notices_and_calls_once_on_opening(
    redis: Client,
) -> None:
    """With ``on_map`` the feed opens with no neighbour too (a lone zone learns of
    a split), and calls it once when the server has subscribed it (for a notice
    sent before); from then on, once per notice of its own world."""
    notices: list[int] = []
    feed = GhostFeed(redis, WorldKeys("w"), lambda _z, _b: None, on_map=lambda: notices.append(1))
    try:
        await feed.follow(set())
        assert feed.sub is not None
        for _ in range(250):  # the server's acknowledgement of the subscription
            if notices:
                break
            await asyncio.sleep(0.02)
        assert notices == [1]
        for version in range(3, 6):
            await redis.publish(WorldKeys("w").zone_map_changed, str(version))
            await redis.publish(WorldKeys("other").zone_map_changed, str(version))
        await asyncio.sleep(0.3)
        assert len(notices) == 4  # this world's three, not the other's
        await feed.follow(set())  # open already: no call
        assert len(notices) == 4
    finally:
        await feed.close()


async def test_a_feed_reports_its_lost_server_and_follows_again_once_closed(
    tmp_path: Path,
) -> None:
    """As ``Neighbours.run_in`` recovers: follow raises, close, follow again."""
    got: list[tuple[str, bytes]] = []
    with LocalRedis(tmp_path / "r") as server:
        redis = connect(server.url)
        west = ZoneStore(redis, world="w", zone="west")
        feed = GhostFeed(redis, WorldKeys("w"), lambda zone, batch: got.append((zone, batch)))

        async def delivered(payload: bytes) -> None:
            for _ in range(50):
                await west.publish_ghosts(payload)
                await asyncio.sleep(0.1)
                if ("west", payload) in got:
                    return
            pytest.fail(f"{payload!r} never arrived")

        try:
            await feed.follow({"west"})
            await delivered(b"before")
            server.restart()
            with pytest.raises(RedisError, match="connection lost"):
                for _ in range(50):
                    await feed.follow({"west"})
                    await asyncio.sleep(0.02)
            await feed.close()
            await feed.follow({"west"})
            await delivered(b"after")
        finally:
            await feed.close()
            await redis.aclose()


def test_an_entry_age_comes_from_its_id_and_is_never_negative() -> None:
    assert entry_age_s("1700000000250-3", 1700000000.5) == pytest.approx(0.25)
    assert entry_age_s("1700000000900-0", 1700000000.5) == 0.0  # clocks apart
