"""The relay's Redis reads and writes (routes, spent tokens, resume credentials,
relay presence) and the routes_changed subscription, on a real Redis and a real
Redis Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from tessera.common.store import Client, WorldKeys
from tessera.relay.routing import Route
from tessera.relay.store import RelayStore
from tessera.v1 import common_pb2, zone_pb2

pytestmark = pytest.mark.redis_cluster

KEYS = WorldKeys("w")


async def test_routes_and_addresses(redis: Client) -> None:
    store = RelayStore(redis, "w")
    await redis.hset(KEYS.routes, mapping={"alice": "zone-a|3", "bob": "garbage"})
    assert await store.route("alice") == Route("zone-a", 3)
    assert await store.route("bob") is None
    assert await store.routes(["alice", "bob", "carol"]) == {"alice": Route("zone-a", 3)}
    zone_map = zone_pb2.ZoneMap(
        world="w", version=1, zones=[zone_pb2.ZoneMapEntry(zone="zone-b", address="h:2")]
    )
    await redis.set(KEYS.zone_map, zone_map.SerializeToString())
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="w", zone="zone-a"),
        address="h:1",
        state=zone_pb2.ZONE_STATE_ACTIVE,
    )
    await redis.sadd(KEYS.zones, "zone-a", "zone-gone")
    await redis.set(KEYS.zone_status("zone-a"), status.SerializeToString())
    assert await store.zone_address("zone-a") == "h:1"
    assert await store.zone_address("zone-b") == "h:2"
    assert await store.zone_address("zone-c") is None
    assert set(await store.zone_statuses()) == {"zone-a"}
    assert (await store.zone_map()) == zone_map


async def test_watch_routes_delivers_changes(redis: Client) -> None:
    store = RelayStore(redis, "w")
    seen: list[tuple[str, Route | None, str]] = []
    ready = asyncio.Event()
    task = asyncio.create_task(store.watch_routes(lambda p, r, t: seen.append((p, r, t)), ready))
    await asyncio.wait_for(ready.wait(), 5)
    await redis.publish(KEYS.routes_changed, "alice|zone-b|4|00-traced-01")
    await redis.publish(KEYS.routes_changed, "alice||0")  # removal: delivered as None
    await redis.publish(KEYS.routes_changed, "nonsense")  # malformed: ignored
    await redis.publish(KEYS.routes_changed, "bob|zone-a|1")
    for _ in range(100):
        if len(seen) >= 3:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert seen == [
        ("alice", Route("zone-b", 4), "00-traced-01"),
        ("alice", None, ""),
        ("bob", Route("zone-a", 1), ""),
    ]


async def test_watch_routes_delivers_the_worlds_kicks(redis: Client) -> None:
    store = RelayStore(redis, "w")
    routes: list[str] = []
    kicks: list[tuple[str, str]] = []
    ready = asyncio.Event()
    task = asyncio.create_task(
        store.watch_routes(
            lambda p, r, t: routes.append(p), ready, on_kick=lambda p, r: kicks.append((p, r))
        )
    )
    await asyncio.wait_for(ready.wait(), 5)
    await redis.publish(WorldKeys("other").kicks, "alice|not this world")
    await redis.publish(KEYS.kicks, "alice|anti-cheat: score 12 >= 10")
    await redis.publish(KEYS.routes_changed, "bob|zone-a|1")
    for _ in range(100):
        if routes:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert (kicks, routes) == ([("alice", "anti-cheat: score 12 >= 10")], ["bob"])


async def test_spent_tokens_are_spent_once_until_unspent(redis: Client) -> None:
    a, b = RelayStore(redis, "w"), RelayStore(redis, "w")  # two relays of one world
    token = bytes.fromhex("00ff")
    assert await a.spend_token(token, 30.0)
    assert not await b.spend_token(token, 30.0)
    assert 0 < await redis.pttl(a.spent_token_key(token)) <= 30_000
    await a.unspend_token(token)
    assert await b.spend_token(token, 30.0)


async def test_a_spend_retried_after_its_answer_was_lost_is_not_a_replay(
    redis: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RelayStore(redis, "w")
    token = bytes.fromhex("01ee")
    monkeypatch.setattr(os, "urandom", lambda n: b"m" * n)
    # The first SET ran but its answer never came back; the client sends it again.
    await redis.set(store.spent_token_key(token), b"m" * 12, px=30_000)
    assert await store.spend_token(token, 30.0)
    monkeypatch.setattr(os, "urandom", lambda n: b"x" * n)
    assert not await store.spend_token(token, 30.0)  # another spend: a replay


async def test_resume_credentials_rotate_spend_once_and_restore(redis: Client) -> None:
    store = RelayStore(redis, "w")
    await store.set_resume("alice", b"c1", 60.0)
    assert await store.rotate_resume("alice", b"c1", b"c2", 60.0)
    assert not await store.rotate_resume("alice", b"c1", b"c3", 60.0)  # c2 is newer
    assert not await store.spend_resume("alice", b"c1")
    assert await store.spend_resume("alice", b"c2")
    assert not await store.spend_resume("alice", b"c2")  # once
    await store.restore_resume("alice", b"c2", 60.0)
    await store.set_resume("alice", b"c4", 60.0)
    await store.restore_resume("alice", b"c2", 60.0)  # c4 exists: not given back
    assert not await store.spend_resume("alice", b"c2")
    assert await store.rotate_resume("bob", b"none", b"b1", 60.0)  # none left: taken


async def test_a_gone_relays_players_are_taken_once(redis: Client) -> None:
    store = RelayStore(redis, "w")
    await store.relay_alive("r1", 100.0, {"alice": "z1", "bob": "z2"}, address="h:1")
    await store.relay_alive("r1", 101.0, {"bob": ""})
    assert await store.relays_seen() == {"r1": 101.0}
    assert await store.relay_addresses() == {"r1": "h:1"}
    assert await store.claim_relay("r1", 30.0)
    assert not await store.claim_relay("r1", 30.0)
    assert await store.take_relay_players("r1") == {"alice": "z1"}
    assert await store.take_relay_players("r1") == {}
    assert await store.relays_seen() == {}
    assert await store.relay_addresses() == {}
