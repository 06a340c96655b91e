"""The hiredis pub/sub subscriber against real redis-servers: delivery, ACL
credentials, TLS, a lost, frozen or garbling server, and a cluster's slot master."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tessera.common import store
from tessera.common.acl import with_user
from tessera.common.store import WorldKeys
from tessera.common.subscriber import Subscriber
from tessera.harness.certs import Authority
from tessera.harness.redis import LocalRedis, LocalRedisCluster

CHANNEL = WorldKeys("w").zone_ghosts("z1")


async def until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def subscribed(sub: Subscriber, publisher: store.Client, got: list[bytes]) -> None:
    """Publish probes until the subscription has taken effect, then forget them."""
    for _ in range(100):
        await publisher.publish(CHANNEL, b"probe")
        await asyncio.sleep(0.05)
        if got:
            break
    await asyncio.sleep(0.2)
    assert got and set(got) == {b"probe"}
    got.clear()


@pytest.fixture
async def publisher(redis_server: LocalRedis) -> AsyncIterator[store.Client]:
    if redis_server.proc is None:
        redis_server.start()
    client = store.connect(redis_server.url)
    yield client
    await client.aclose()


async def test_messages_reach_the_handler_in_order_until_unsubscribed(
    redis_server: LocalRedis, publisher: store.Client
) -> None:
    got: list[bytes] = []
    zone = store.connect(redis_server.url_for("zone"))  # AUTH as the zone's ACL user
    sub = Subscriber(zone, lambda channel, data: got.append(data))
    await sub.open(CHANNEL)
    try:
        sub.subscribe(CHANNEL)
        await subscribed(sub, publisher, got)
        for i in range(100):
            await publisher.publish(CHANNEL, b"%d" % i)
        await until(lambda: len(got) == 100)
        assert got == [b"%d" % i for i in range(100)]
        sub.unsubscribe(CHANNEL)
        await asyncio.sleep(0.2)
        await publisher.publish(CHANNEL, b"late")
        await asyncio.sleep(0.2)
        assert got[-1] == b"99"
        sub.check()
    finally:
        sub.close()
        await zone.aclose()


async def test_a_failing_handler_loses_only_its_message(publisher: store.Client) -> None:
    got: list[bytes] = []

    def handle(_channel: bytes, data: bytes) -> None:
        if data == b"bad":
            raise ValueError("cannot read this one")
        got.append(data)

    sub = Subscriber(publisher, handle)
    await sub.open(CHANNEL)
    try:
        sub.subscribe(CHANNEL)
        await subscribed(sub, publisher, got)
        for data in (b"1", b"bad", b"2"):
            await publisher.publish(CHANNEL, data)
        await until(lambda: len(got) == 2)
        assert got == [b"1", b"2"]
        sub.check()
    finally:
        sub.close()


async def test_a_wrong_password_or_a_channel_outside_the_rules_is_refused(
    tmp_path: Path,
) -> None:
    """A server of its own: the session's server fails any test it refuses."""
    with LocalRedis(tmp_path / "r") as server:
        stranger = store.connect(with_user(server.url, "zone", "not-the-password"), retries=0)
        sub = Subscriber(stranger, lambda channel, data: None)
        with pytest.raises(RedisError, match="WRONGPASS"):
            await sub.open(CHANNEL)
        await stranger.aclose()
        zone = store.connect(server.url_for("zone"))
        sub = Subscriber(zone, lambda channel, data: None)
        await sub.open(CHANNEL)
        sub.subscribe("tessera:{auth}:not-for-zones")
        with pytest.raises(RedisError, match="NOPERM"):
            for _ in range(100):
                sub.check()
                await asyncio.sleep(0.02)
        sub.close()
        await zone.aclose()
        assert {r["reason"] for r in server.refusals()} == {"auth", "channel"}


async def test_a_killed_server_then_a_frozen_one_are_reported(tmp_path: Path) -> None:
    with LocalRedis(tmp_path / "r") as server:
        client = store.connect(server.url, retries=0)
        sub = Subscriber(client, lambda channel, data: None, ping_s=0.1, dead_s=0.5)
        await sub.open(CHANNEL)
        sub.subscribe(CHANNEL)
        for _ in range(20):  # 2 s of silence: pinged, answered, alive
            sub.check()
            await asyncio.sleep(0.1)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError, match="no answer to PING"):
                for _ in range(30):
                    sub.check()
                    await asyncio.sleep(0.1)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        sub.close()
        await sub.open(CHANNEL)
        server.kill()
        with pytest.raises(RedisConnectionError, match="connection lost"):
            for _ in range(50):
                sub.check()
                await asyncio.sleep(0.02)
        sub.close()
        with pytest.raises(RedisConnectionError, match="cannot connect"):
            await sub.open(CHANNEL)
        await client.aclose()


async def test_a_server_sending_garbage_is_a_clear_error() -> None:
    async def garbage(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+PONG\r\n?not RESP at all\r\n")
        await writer.drain()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = store.connect(f"redis://127.0.0.1:{port}")
    sub = Subscriber(client, lambda channel, data: None)
    try:
        await sub.open(CHANNEL)
        with pytest.raises(RedisConnectionError, match="bad reply from the server"):
            for _ in range(100):
                sub.check()
                await asyncio.sleep(0.02)
    finally:
        sub.close()
        server.close()
        await client.aclose()


async def test_rediss_subscribes_over_tls(tmp_path: Path) -> None:
    ca = Authority()
    issued = ca.issue(tmp_path / "server")
    with LocalRedis(tmp_path / "r", tls=(issued.cert, issued.key)) as server:
        client = store.connect(server.tls_url(ca.write_ca(tmp_path / "ca.crt")), retries=0)
        got: list[bytes] = []
        sub = Subscriber(client, lambda channel, data: got.append(data))
        await sub.open(CHANNEL)
        try:
            sub.subscribe(CHANNEL)
            await subscribed(sub, client, got)
        finally:
            sub.close()
            await client.aclose()


async def test_on_a_cluster_it_subscribes_at_the_slot_master(
    redis_cluster: LocalRedisCluster,
) -> None:
    client = store.connect(redis_cluster.url_for("zone"))
    got: list[bytes] = []
    sub = Subscriber(client, lambda channel, data: got.append(data))
    await sub.open(CHANNEL)
    try:
        assert sub._proto is not None and sub._proto.transport is not None
        peer = sub._proto.transport.get_extra_info("peername")
        assert peer[1] == redis_cluster.master_of(CHANNEL).port
        sub.subscribe(CHANNEL)
        await subscribed(sub, client, got)
    finally:
        sub.close()
        await client.aclose()
