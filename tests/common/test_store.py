"""Redis connection factory, key layout, the shared readers (heartbeats, routes,
events) and the real-Redis fixture."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

from tessera.common import store
from tessera.common.store import Client
from tessera.harness.certs import Authority
from tessera.harness.redis import LocalRedis, LocalRedisCluster
from tessera.v1 import common_pb2, zone_pb2

pytestmark = pytest.mark.redis_cluster


def test_world_keys_share_one_hash_tag() -> None:
    keys = store.WorldKeys("alpha")
    all_keys = [
        keys.zones,
        keys.zone_status("z1"),
        keys.zone_inbox("z1"),
        keys.zone_map,
        keys.routes,
        keys.checkpoints,
        keys.entity_ids,
    ]
    assert all(k.startswith("tessera:{alpha}:") for k in all_keys)
    assert keys.zone_status("z1") == "tessera:{alpha}:zone:z1:status"


@pytest.mark.parametrize("name", ["", "UPPER", "-lead", "trail-", "a" * 64, "a_b", "a{b}"])
def test_bad_world_names_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="DNS label"):
        store.WorldKeys(name)


@pytest.mark.integration
async def test_session_redis_is_real(redis) -> None:  # type: ignore[no-untyped-def]
    await redis.set("tessera:{t}:k", b"v")
    assert await redis.get("tessera:{t}:k") == b"v"
    info = await redis.info("server")
    assert "redis_version" in info


@pytest.mark.integration
async def test_client_reconnects_after_kill_and_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = LocalRedis(tmp_path, appendonly=True)
    server.start()
    client = store.connect(server.url)
    try:
        await client.set("tessera:{t}:before", b"1")
        server.kill()
        with pytest.raises(redis_errors.ConnectionError):
            await store.connect(server.url, retries=0).ping()
        # Restart while the client is retrying; the next command must succeed.
        threading.Timer(0.5, server.start).start()
        await client.set("tessera:{t}:after", b"2")
        assert await client.get("tessera:{t}:after") == b"2"
        assert await client.get("tessera:{t}:before") == b"1"  # AOF kept it
    finally:
        await client.aclose()
        await asyncio.sleep(0)
        server.stop()


def test_instance_zone_and_stream_names() -> None:
    assert (
        store.instance_zone("0f3c9a1e5b7d4c2a8e6f1b3d5c7a9e0f") == "inst-0f3c9a1e5b7d4c2a8e6f1b3d"
    )
    assert store.instance_zone("ABC") == "inst-abc"
    assert store.instances_stream("earth") == "tessera:{mm}:instances:earth"
    with pytest.raises(ValueError, match="DNS label"):
        store.instances_stream("Earth")


def heartbeat(zone: str, players: int = 0, **fields: Any) -> zone_pb2.ZoneStatus:
    return zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="alpha", zone=zone), players=players, **fields
    )


def test_parse_heartbeat_reads_bytes_and_str_and_drops_the_rest() -> None:
    status = heartbeat("z1", 7, state=zone_pb2.ZONE_STATE_ACTIVE, address="10.0.0.1:50051")
    raw = status.SerializeToString()
    assert store.parse_heartbeat(raw) == status
    assert store.parse_heartbeat(b"") == zone_pb2.ZoneStatus()  # an empty message is one
    assert store.parse_heartbeat(None) is None
    assert store.parse_heartbeat(b"\xff\xff not a protobuf") is None
    assert store.parse_heartbeat(raw[:-3]) is None  # torn


@given(st.binary(max_size=64))
def test_parse_heartbeat_never_raises(raw: bytes) -> None:
    status = store.parse_heartbeat(raw)
    assert status is None or isinstance(status, zone_pb2.ZoneStatus)


@pytest.mark.integration
async def test_read_heartbeats_of_registered_or_named_zones(redis: Client) -> None:
    keys = store.WorldKeys("alpha")
    b, a = heartbeat("b", 2), heartbeat("a", 1)
    await redis.sadd(keys.zones, "b", "a", "expired", "garbage")
    await redis.set(keys.zone_status("b"), b.SerializeToString())
    await redis.set(keys.zone_status("a"), a.SerializeToString())
    await redis.set(keys.zone_status("garbage"), b"\xff\xff not a protobuf")
    await redis.set(keys.zone_status("unregistered"), a.SerializeToString())
    assert await store.registered_zones(redis, "alpha") == ["a", "b", "expired", "garbage"]
    statuses = await store.read_heartbeats(redis, "alpha")
    assert list(statuses) == ["a", "b"]  # by name; no heartbeat or no parse: left out
    assert statuses == {"a": a, "b": b}
    named = await store.read_heartbeats(redis, "alpha", ["unregistered", "b", "expired"])
    assert list(named) == ["unregistered", "b"]  # in the order asked
    assert await store.read_heartbeats(redis, "alpha", []) == {}
    assert await store.read_heartbeats(redis, "empty") == {}
    assert await store.read_heartbeat(redis, "alpha", "a") == a
    assert await store.read_heartbeat(redis, "alpha", "expired") is None
    assert await store.read_heartbeat(redis, "alpha", "garbage") is None


@pytest.mark.integration
async def test_read_route_zone(redis: Client) -> None:
    keys = store.WorldKeys("alpha")
    await redis.hset(keys.routes, mapping={"p1": "alpha-1|7", "p2": "inst-abc|1"})
    assert await store.read_route_zone(redis, "alpha", "p1") == "alpha-1"
    assert await store.read_route_zone(redis, "alpha", "p2") == "inst-abc"
    assert await store.read_route_zone(redis, "alpha", "nobody") == ""


@pytest.mark.integration
async def test_read_events_pages_after_an_entry(redis: Client) -> None:
    keys = store.WorldKeys("alpha")
    for i in range(5):
        await redis.xadd(keys.events, {"kind": f"e{i}", "zone": "z"}, id=f"{i + 1}-0")
    first = await store.read_events(redis, "alpha", count=2)
    assert first == [
        ("1-0", {"kind": "e0", "zone": "z"}),
        ("2-0", {"kind": "e1", "zone": "z"}),
    ]
    rest = await store.read_events(redis, "alpha", after=first[-1][0])
    assert [fields["kind"] for _, fields in rest] == ["e2", "e3", "e4"]
    assert await store.read_events(redis, "alpha", after=rest[-1][0]) == []
    assert await store.read_events(redis, "empty") == []


def world_key_names(keys: store.WorldKeys) -> dict[str, str]:
    """Every key and channel name :class:`store.WorldKeys` builds (found by reflection,
    so a new builder is covered too), zone-scoped ones for zone ``z1``."""
    out: dict[str, str] = {}
    for name, member in vars(store.WorldKeys).items():
        if name.startswith("_") or name == "key":
            continue
        if isinstance(member, property):
            out[name] = member.fget(keys)  # type: ignore[misc]
        elif callable(member):
            out[name] = member(keys, "z1")
    return out


@pytest.mark.integration
async def test_every_world_key_maps_to_one_cluster_slot(redis_cluster: LocalRedisCluster) -> None:
    """Lua scripts and pipelines over one world's keys need them in one slot: ask
    the real cluster (CLUSTER KEYSLOT) for each name WorldKeys builds."""
    client = store.connect(redis_cluster.url)
    try:
        assert isinstance(client, RedisCluster)
        names = world_key_names(store.WorldKeys("alpha"))
        assert {"routes", "routes_changed", "zone_inbox", "zone_ghosts", "events"} <= set(names)
        slots = {n: await client.cluster_keyslot(k) for n, k in names.items()}
        assert len(set(slots.values())) == 1, slots
        assert set(slots.values()) == {await client.cluster_keyslot("{alpha}")}
        # The client found all three masters from the startup nodes.
        assert len(client.get_primaries()) == 3
    finally:
        await client.aclose()


@pytest.mark.integration
@pytest.mark.redis_cluster_only
async def test_a_subscriber_finds_the_promoted_master_through_follow_slot(
    tmp_path: Path,
) -> None:
    """A client that only subscribes learns of a failover through follow_slot; the
    subscription of one that does not follow the slot stays on the dead master."""
    with LocalRedisCluster(tmp_path, node_timeout_ms=1000) as cluster:
        publisher, follower, stuck = (store.connect(cluster.url) for _ in range(3))
        channel = store.WorldKeys("w").kicks
        for client in (publisher, follower, stuck):  # each has its slot map
            await client.exists(channel)
        cluster.master_of(channel).kill()

        async def hears(client: Client, follow: bool, until: float) -> bool:
            while asyncio.get_running_loop().time() < until:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                try:
                    if follow:
                        await store.follow_slot(client, channel)
                    await pubsub.subscribe(channel)
                    with contextlib.suppress(redis_errors.RedisError):
                        await publisher.publish(channel, "x")
                    for _ in range(10):  # the first read may be the subscription's reply
                        if await pubsub.get_message(timeout=0.1) is not None:
                            return True
                except redis_errors.RedisError:
                    await asyncio.sleep(0.2)
                finally:
                    with contextlib.suppress(redis_errors.RedisError, OSError):
                        await pubsub.aclose()
            return False

        try:
            deadline = asyncio.get_running_loop().time() + 30.0
            assert await hears(follower, True, deadline)
            # The cluster has failed over by now; a bare subscriber still has not.
            assert not await hears(stuck, False, asyncio.get_running_loop().time() + 3.0)
        finally:
            for client in (publisher, follower, stuck):
                await client.aclose()


async def test_rediss_urls_verify_the_server(tmp_path: Path) -> None:
    """``rediss://`` to a real redis-server serving TLS: a client trusting its CA is
    served, one trusting another CA is refused."""
    ca, other = Authority(), Authority("another CA")
    issued = ca.issue(tmp_path / "server")
    with LocalRedis(tmp_path, tls=(issued.cert, issued.key)) as server:
        client = store.connect(server.tls_url(ca.write_ca(tmp_path / "ca.crt")), retries=0)
        try:
            await client.set("tessera:tls", b"yes")
            assert await client.get("tessera:tls") == b"yes"
        finally:
            await client.aclose()
        stranger = store.connect(server.tls_url(other.write_ca(tmp_path / "other.crt")), retries=0)
        with pytest.raises(redis_errors.ConnectionError, match="certificate verify failed"):
            await stranger.ping()
        await stranger.aclose()
