"""The operator's local runtime splitting and merging real zone processes,
with the zones handing their players over (no leave/join): after the split the
new zone owns the players on its side, after the merge the parent owns them
all, and the invariant scan holds after every step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from tessera.common.store import WorldKeys
from tessera.harness.tokens import LOCAL
from tessera.operator.local import LocalRuntime
from tessera.operator.planner.model import Phase
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc
from tessera.zone import audit
from tessera.zone.store import read_routes

pytestmark = pytest.mark.integration

WORLD: dict[str, Any] = {
    "apiVersion": "tessera.io/v1alpha1",
    "kind": "World",
    "metadata": {"name": "earth"},
    "spec": {
        "bounds": {"minX": 0, "minZ": 0, "maxX": 1024, "maxZ": 512},
        "zoneTemplate": {"image": "local", "tickRate": 20},
        "drainTimeoutSeconds": 10,
        "autoscaling": {
            "targetPlayersPerZone": 8,
            "splitThreshold": 10,
            "mergeThreshold": 2,
            "splitStabilizationSeconds": 0,
            "mergeStabilizationSeconds": 1,
            "cooldownSeconds": 3,
            "minZoneSize": 64,
        },
    },
}


async def passes_until(runtime: LocalRuntime, done: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 25.0
    while not done():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await runtime.step()
        await asyncio.sleep(0.2)


def addresses(runtime: LocalRuntime) -> dict[str, str]:
    """The zones serving (a standby still starting has no port yet and no entity)."""
    zones = runtime.zones.items()
    return {
        n: z.process.grpc_address
        for n, z in zones
        if z.process.alive() and "grpc_port" in z.process.ports
    }


async def test_split_and_merge_hand_players_over(
    local_runtime: Callable[..., LocalRuntime], redis: Redis
) -> None:
    runtime = local_runtime(WORLD)
    try:
        await passes_until(
            runtime,
            lambda: (
                "earth-0" in runtime.zones and runtime.zones["earth-0"].view.phase == Phase.READY
            ),
            "the first zone",
        )
        players = {f"p{i}" for i in range(12)}
        async with LOCAL.channel(runtime.zones["earth-0"].process.grpc_address) as ch:
            stub: Any = zone_pb2_grpc.ZoneStub(ch)
            for i in range(12):  # x = 100 .. 210, median 155
                await stub.Join(
                    zone_pb2.JoinRequest(
                        player_id=f"p{i}",
                        relay_id="r",
                        spawn=common_pb2.Vec3(x=100 + 10 * i, z=100),
                    )
                )
        # Plan from a heartbeat that has all 12 (one with 11 would split at x=150).
        status_key = WorldKeys("earth").zone_status("earth-0")
        for _ in range(100):
            raw = await redis.get(status_key)
            if isinstance(raw, bytes) and zone_pb2.ZoneStatus.FromString(raw).players == 12:
                break
            await asyncio.sleep(0.05)
        await passes_until(runtime, lambda: "earth-1" in runtime.zones, "the split")
        await passes_until(
            runtime, lambda: runtime.zones["earth-1"].view.phase == Phase.READY, "the new zone"
        )

        async def owners() -> dict[str, str]:
            report = await audit.settle(
                redis, "earth", addresses(runtime), players, channel=LOCAL.channel
            )
            assert report.ok, report
            return {p: r.zone for p, r in (await read_routes(redis, "earth")).items()}

        deadline = asyncio.get_running_loop().time() + 10.0
        while (routes := await owners()) and sorted(routes.values()).count("earth-1") < 6:
            assert asyncio.get_running_loop().time() < deadline, routes
            await asyncio.sleep(0.2)
        assert {p for p, z in routes.items() if z == "earth-1"} == {f"p{i}" for i in range(6, 12)}

        # Load falls (11 players log out); the last one is handed back by the merge.
        for player in sorted(players - {"p11"}):
            address = runtime.zones[routes[player]].process.grpc_address
            async with LOCAL.channel(address) as ch:
                stub = zone_pb2_grpc.ZoneStub(ch)
                await stub.Leave(zone_pb2.LeaveRequest(player_id=player))
        players = {"p11"}
        await passes_until(runtime, lambda: "earth-1" not in runtime.zones, "the merge")
        assert (await owners()) == {"p11": "earth-0"}
    finally:
        await runtime.close()
