"""End to end through the real relay: auth + relay + two zone processes + UDP
bots walking back and forth across the border, then kill -9 of a zone in the
middle of handoffs. Zero client disconnects, zero lost or duplicated entities,
and bots near the border see bots on the other side."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from tessera.auth.keys import write_key
from tessera.client.bot import Bot, waypoints
from tessera.client.client import GameClient
from tessera.client.login import guest_connect_token
from tessera.client.transport import UdpTransport
from tessera.common.process import ServiceProcess
from tessera.harness.redis import LocalRedis
from tessera.harness.zones import World, ZoneSpec
from tessera.wire.geometry import Rect
from tessera.zone import audit
from tessera.zone.store import read_routes

pytestmark = pytest.mark.integration


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    def __init__(self, world: World, auth: ServiceProcess, relay: ServiceProcess) -> None:
        self.world, self.auth, self.relay = world, auth, relay

    def relay_metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.relay.ports['metrics_port']}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)
        )


@pytest.fixture
async def stack(
    redis_server: LocalRedis, redis: Redis, tmp_path: Any, database_url: str
) -> AsyncIterator[Stack]:
    world = World(
        redis,
        redis_server.url,
        world="seam",
        env={"TESSERA_MAX_SPEED_MPS": "15", "TESSERA_ACCEL_MPS2": "150", "TESSERA_TICK_HZ": "20"},
    )
    world.world_bounds = Rect(-100, -100, 100, 100)
    key_dir = tmp_path / "keys"
    write_key(key_dir, 0)
    connect_b64 = base64.b64encode(os.urandom(32)).decode()
    udp_port = free_udp_port()
    common = {
        "TESSERA_REDIS_URL": redis_server.url,
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_GRPC_PORT": "0",
        "TESSERA_METRICS_PORT": "0",
        "TESSERA_HOST": "127.0.0.1",
        "TESSERA_WORLD": world.world,
        "TESSERA_SHUTDOWN_GRACE_S": "1",
    }
    auth = ServiceProcess(
        "tessera.auth",
        {
            **common,
            "TESSERA_AUTH_KEY_DIR": str(key_dir),
            "TESSERA_CONNECT_KEY": connect_b64,
            "TESSERA_AUTH_RELAYS": f"default=127.0.0.1:{udp_port}",
            "TESSERA_AUTH_REGISTRATIONS_PER_ADDRESS": "1000",
        },
        name="auth",
    ).start()
    await world.start_all(
        [ZoneSpec("west", Rect(-100, -100, 0, 100)), ZoneSpec("east", Rect(0, -100, 100, 100))]
    )
    auth.wait_serving()
    relay = ServiceProcess(
        "tessera.relay",
        {
            **common,
            "TESSERA_UDP_HOST": "127.0.0.1",
            "TESSERA_UDP_PORT": str(udp_port),
            "TESSERA_AUTH_ADDRESS": auth.grpc_address,
            "TESSERA_CONNECT_KEY": connect_b64,
        },
        name="relay",
    ).start()
    relay.wait_serving()
    yield Stack(world, auth, relay)
    relay.kill()
    auth.kill()
    world.stop()


async def test_bots_cross_and_survive_a_zone_crash(stack: Stack) -> None:
    bots: list[Bot] = []
    try:
        for i in range(8):
            token = await guest_connect_token(stack.auth.grpc_address, f"device-seam-{i:016d}")
            client = GameClient(UdpTransport())
            await client.connect(token)
            z = -12.0 + 3.0 * i
            bot = Bot(client, waypoints([(-20.0, z), (20.0, z)]), seed=i)
            bot.start()
            bots.append(bot)
        players = {b.client.accepted.player_id for b in bots if b.client.accepted}
        assert len(players) == len(bots)
        world = stack.world

        async def check() -> None:
            report = await audit.settle(world.redis, world.world, world.addresses(), players)
            assert report.ok, report
            assert all(b.client.connected for b in bots), [b.client.disconnected for b in bots]

        deadline = time.monotonic() + 15.0
        while stack.relay_metric("tessera_relay_reroutes_total") < 2 * len(bots):
            assert time.monotonic() < deadline, "the bots did not cross the border"
            await asyncio.sleep(0.2)
        await check()

        # Someone sees a bot that is owned by the other zone (a ghost).
        routes = await read_routes(world.redis, world.world)
        ids = {b.client.accepted.player_id: b.client.accepted.entity_id for b in bots}  # type: ignore[union-attr]

        def cross_visible() -> bool:
            for b in bots:
                me = b.client.accepted.player_id  # type: ignore[union-attr]
                seen = set(b.client.world.others()) if b.client.world else set()
                for other, eid in ids.items():
                    if other != me and routes[other].zone != routes[me].zone and eid in seen:
                        return True
            return False

        deadline = time.monotonic() + 5.0
        while not cross_visible():
            assert time.monotonic() < deadline, "no bot saw across the border"
            await asyncio.sleep(0.1)
            routes = await read_routes(world.redis, world.world)

        for victim in ("east", "west"):  # kill -9 in the middle of continuous handoffs
            world.kill(victim)
            await asyncio.sleep(0.5)
            await world.start(victim, world.bounds[victim])
            await asyncio.sleep(2.0)
            await check()
        counts = {id(b): b.client.snapshots for b in bots}
        await asyncio.sleep(1.5)
        assert all(b.client.snapshots > counts[id(b)] for b in bots)
    finally:
        for b in bots:
            await b.client.close()
