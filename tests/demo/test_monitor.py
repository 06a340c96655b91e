"""The demo's monitor against a real Redis: heartbeats reduced to samples, scaling
events read once each, and a relay that does not answer."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from tessera.authclient.credentials import ServiceCredentials
from tessera.common.store import WorldKeys
from tessera.demo.monitor import Monitor, RelaySample, ZoneSample
from tessera.harness.redis import LocalRedis
from tessera.v1 import common_pb2, zone_pb2

pytestmark = pytest.mark.integration


async def test_zones_events_and_a_silent_relay(redis: Redis, redis_server: LocalRedis) -> None:
    keys = WorldKeys("earth")
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="earth", zone="earth-0"),
        state=zone_pb2.ZONE_STATE_ACTIVE,
        bounds=common_pb2.Bounds(min_x=0, min_z=0, max_x=100, max_z=50),
        players=3,
        tick_p99_ms=4.5,
        address="127.0.0.1:1",
        sample_x=[1.26, 2.0],
        sample_z=[3.0, 4.04],
    )
    await redis.sadd(keys.zones, "earth-0", "earth-1", "earth-2")
    await redis.set(keys.zone_status("earth-0"), status.SerializeToString())
    await redis.set(keys.zone_status("earth-2"), b"\xff\xff torn")
    await redis.xadd(keys.events, {"kind": "split", "zone": "earth-0"})
    # No auth and no relay here: the relay's counters read as empty.
    nowhere = ServiceCredentials("127.0.0.1:1", "demo-monitor", "secret", timeout_s=0.5)
    monitor = Monitor(redis_server.url, "earth", "127.0.0.1:1", nowhere)
    try:
        assert await monitor.zones() == [
            ZoneSample(
                name="earth-0",
                state="ACTIVE",
                bounds=(0.0, 0.0, 100.0, 50.0),
                players=3,
                tick_p99_ms=4.5,
                drain_remaining=0,
                address="127.0.0.1:1",
                xs=[1.3, 2.0],
                zs=[3.0, 4.0],
            )
        ]
        assert await monitor.events() == [{"kind": "split", "zone": "earth-0"}]
        assert await monitor.events() == []
        await redis.xadd(keys.events, {"kind": "merge", "zone": "earth-1"})
        assert await monitor.events() == [{"kind": "merge", "zone": "earth-1"}]
        assert await monitor.relay_status() == RelaySample()
    finally:
        await monitor.close()
