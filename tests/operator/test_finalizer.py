"""The ZoneServer finalizer's decision (handlers.hold_until_drained) against the
emulator and a real Redis, for the cases the end-to-end tests do not reach."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from redis.asyncio import Redis

from tessera.common.store import WorldKeys
from tessera.harness.redis import LocalRedis
from tessera.operator.handlers import Runtime, hold_until_drained
from tessera.v1 import zone_pb2

from .conftest import Cluster, operator_config

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


def ago(seconds: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds)).isoformat()


def zoneserver(desired: str, deleted_s_ago: float, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "earth-1",
            "namespace": "games",
            "deletionTimestamp": ago(deleted_s_ago),
        },
        "spec": {"world": "earth", "desiredState": desired},
        "status": status,
    }


@pytest.fixture
async def runtime(
    cluster: Cluster, redis_server: LocalRedis, redis: Redis
) -> AsyncIterator[Runtime]:
    await cluster.apply(
        "/apis/tessera.io/v1alpha1/namespaces/games/worlds",
        {
            "apiVersion": "tessera.io/v1alpha1",
            "kind": "World",
            "metadata": {"name": "earth", "namespace": "games"},
            "spec": {"drainTimeoutSeconds": 30},
        },
    )
    runtime = Runtime(operator_config(redis_server.url), redis)
    runtime.connect(kopf.ConnectionInfo(server=cluster.url))
    yield runtime
    await runtime.close()


async def beat(redis: Redis, state: zone_pb2.ZoneState.ValueType, remaining: int = 0) -> None:
    status = zone_pb2.ZoneStatus(state=state, drain_remaining=remaining)
    await redis.set(WorldKeys("earth").zone_status("earth-1"), status.SerializeToString())


async def test_standby_goes_at_once(runtime: Runtime) -> None:
    await hold_until_drained(runtime, zoneserver("Standby", 0), NOW)


async def test_waits_for_the_area_to_be_reassigned_then_gives_up(
    runtime: Runtime, redis: Redis
) -> None:
    await beat(redis, zone_pb2.ZONE_STATE_ACTIVE)
    with pytest.raises(kopf.TemporaryError, match="hand earth-1's area"):
        await hold_until_drained(runtime, zoneserver("Active", 10), NOW)
    await hold_until_drained(runtime, zoneserver("Active", 60), NOW)  # 2 x drain timeout


async def test_draining_zone_waits_until_drained_or_timeout(runtime: Runtime, redis: Redis) -> None:
    await beat(redis, zone_pb2.ZONE_STATE_DRAINING, remaining=3)
    with pytest.raises(kopf.TemporaryError, match="3 entities left"):
        await hold_until_drained(runtime, zoneserver("Draining", 5, drainStartedAt=ago(5)), NOW)
    await hold_until_drained(runtime, zoneserver("Draining", 40, drainStartedAt=ago(30)), NOW)
    await beat(redis, zone_pb2.ZONE_STATE_DRAINED)
    await hold_until_drained(runtime, zoneserver("Draining", 1, drainStartedAt=ago(1)), NOW)
    await redis.delete(WorldKeys("earth").zone_status("earth-1"))  # no heartbeat: nothing to drain
    await hold_until_drained(runtime, zoneserver("Draining", 1, drainStartedAt=ago(1)), NOW)


@pytest.mark.parametrize("phase", ["Ready", "Draining", "Failed", "Starting"])
async def test_a_lapsed_heartbeat_waits_for_the_drain_timeout(runtime: Runtime, phase: str) -> None:
    # The zone was seen heartbeating (its recorded phase), its heartbeat is gone
    # now: it may be overloaded with players still inside, so it waits.
    with pytest.raises(kopf.TemporaryError, match="earth-1 is draining: no heartbeat"):
        await hold_until_drained(
            runtime, zoneserver("Draining", 5, phase=phase, drainStartedAt=ago(5)), NOW
        )
    await hold_until_drained(
        runtime, zoneserver("Draining", 40, phase=phase, drainStartedAt=ago(30)), NOW
    )


@pytest.mark.parametrize("phase", ["Pending", "Drained"])
async def test_no_heartbeat_goes_at_once_when_never_seen_or_drained(
    runtime: Runtime, phase: str
) -> None:
    await hold_until_drained(
        runtime, zoneserver("Draining", 1, phase=phase, drainStartedAt=ago(1)), NOW
    )
