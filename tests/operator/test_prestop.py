"""The zone container's preStop hook against a real zone process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from tessera.common.process import ServiceProcess
from tessera.common.store import WorldKeys
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL
from tessera.operator.prestop import should_wait, wait_for_drain
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc

ENV = {
    "TESSERA_WORLD": "earth",
    "TESSERA_ZONE": "earth-0",
    "TESSERA_WORLD_BOUNDS": "0,0,512,512",
    "TESSERA_ZONE_BOUNDS": "0,0,512,512",
    "TESSERA_HEARTBEAT_S": "0.1",
}


@pytest.fixture
def zone(redis_server: LocalRedis, redis: Redis) -> Iterator[ServiceProcess]:
    """A zone of world earth on an emptied Redis (``redis`` flushes it), so routes
    other tests left for earth-0 do not restore players into it."""
    process = ServiceProcess(
        "tessera.zone",
        {
            **ENV,
            **LOCAL.env(),
            "TESSERA_REDIS_URL": redis_server.url_for("zone"),
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
        },
    ).start()
    process.wait_serving()
    yield process
    process.terminate()


def test_only_a_draining_zone_is_waited_for() -> None:
    assert should_wait(zone_pb2.ZONE_STATE_DRAINING)
    for state in (
        zone_pb2.ZONE_STATE_ACTIVE,
        zone_pb2.ZONE_STATE_STANDBY,
        zone_pb2.ZONE_STATE_DRAINED,
        zone_pb2.ZONE_STATE_STARTING,
    ):
        assert not should_wait(state)


async def test_prestop_waits_for_a_draining_zone(zone: ServiceProcess, redis: Redis) -> None:
    async def hook(timeout_s: float, poll_s: float = 0.1) -> str:
        return await wait_for_drain(redis, "earth", "earth-0", timeout_s, poll_s=poll_s)

    assert await hook(5) == "ZONE_STATE_ACTIVE"
    async with LOCAL.channel(zone.grpc_address) as channel:
        stub: zone_pb2_grpc.ZoneAsyncStub = zone_pb2_grpc.ZoneStub(channel)
        await stub.Join(
            zone_pb2.JoinRequest(player_id="p1", relay_id="r", spawn=common_pb2.Vec3(x=5, z=5))
        )
        assert (await stub.Drain(zone_pb2.DrainRequest(deadline_s=30))).remaining == 1
        assert await hook(0.6) == "timeout"
        await stub.Leave(zone_pb2.LeaveRequest(player_id="p1"))
        assert (await stub.Drain(zone_pb2.DrainRequest(deadline_s=30))).remaining == 0
    assert await hook(5) == "ZONE_STATE_DRAINED"


async def test_prestop_returns_when_the_zone_has_no_heartbeat(redis: Redis) -> None:
    assert await wait_for_drain(redis, "earth", "never-started", 5) == "no heartbeat"


async def test_prestop_waits_when_the_heartbeat_lapsed(redis: Redis) -> None:
    # earth-1 registered (it heartbeated before) but its heartbeat expired, e.g. an
    # overloaded zone missing beats while draining: wait for a heartbeat or the timeout.
    keys = WorldKeys("earth")
    await redis.sadd(keys.zones, "earth-1")
    assert await wait_for_drain(redis, "earth", "earth-1", 0.5, poll_s=0.05) == "timeout"

    async def beat_later() -> None:
        await asyncio.sleep(0.3)
        status = zone_pb2.ZoneStatus(state=zone_pb2.ZONE_STATE_DRAINED)
        await redis.set(keys.zone_status("earth-1"), status.SerializeToString())

    beating = asyncio.create_task(beat_later())
    assert await wait_for_drain(redis, "earth", "earth-1", 30, poll_s=0.05) == "ZONE_STATE_DRAINED"
    await beating


def test_prestop_command_reads_the_container_settings(
    zone: ServiceProcess, redis_server: LocalRedis
) -> None:
    """The hook as the pod runs it: settings from the zone container's environment."""
    result = subprocess.run(
        [sys.executable, "-m", "tessera.operator.prestop", "--timeout", "10"],
        env={**ENV, "TESSERA_REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "ZONE_STATE_ACTIVE"
