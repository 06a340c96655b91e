"""The zone container's preStop hook against a real zone process."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from redis.asyncio import Redis

from tessera.common.process import ServiceProcess, free_port
from tessera.harness.redis import LocalRedis
from tessera.operator.prestop import should_wait, wait_for_drain
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc


@pytest.fixture
def zone(redis_server: LocalRedis, redis: Redis) -> Iterator[ServiceProcess]:
    """A zone of world earth on an emptied Redis (``redis`` flushes it), so routes
    other tests left for earth-0 do not restore players into it."""
    process = ServiceProcess(
        "tessera.zone",
        {
            "TESSERA_WORLD": "earth",
            "TESSERA_ZONE": "earth-0",
            "TESSERA_WORLD_BOUNDS": "0,0,512,512",
            "TESSERA_ZONE_BOUNDS": "0,0,512,512",
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


async def test_prestop_waits_for_a_draining_zone(zone: ServiceProcess) -> None:
    assert await wait_for_drain(zone.grpc_address, 5) == "ZONE_STATE_ACTIVE"
    async with grpc.aio.insecure_channel(zone.grpc_address) as channel:
        stub: zone_pb2_grpc.ZoneAsyncStub = zone_pb2_grpc.ZoneStub(channel)
        await stub.Join(
            zone_pb2.JoinRequest(player_id="p1", relay_id="r", spawn=common_pb2.Vec3(x=5, z=5))
        )
        assert (await stub.Drain(zone_pb2.DrainRequest(deadline_s=30))).remaining == 1
        assert await wait_for_drain(zone.grpc_address, 0.6, poll_s=0.1) == "timeout"
        await stub.Leave(zone_pb2.LeaveRequest(player_id="p1"))
        assert (await stub.Drain(zone_pb2.DrainRequest(deadline_s=30))).remaining == 0
    assert await wait_for_drain(zone.grpc_address, 5) == "ZONE_STATE_DRAINED"


async def test_prestop_returns_when_the_zone_is_gone() -> None:
    result = await wait_for_drain(f"127.0.0.1:{free_port()}", 5)
    assert result.startswith("zone unreachable")
