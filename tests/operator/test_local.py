"""The local runtime end to end: real zone processes, real Redis, players
joined over the zone's gRPC API. Load over the high-water mark splits the zone
(a new process starts, the parent takes its new bounds); when the players leave,
the siblings merge and the drained zone's process exits. Instance requests in
the world's stream start instance zone processes; ending one hands its players
back to the open world.

Handoff is not in yet, so players do not move between zones here: the test
drives load by joining and leaving, not by walking bots across borders."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from redis.asyncio import Redis

from tessera.common.store import WorldKeys, instance_zone, instances_stream
from tessera.harness.redis import LocalRedis
from tessera.operator.local import LocalRuntime, load_world
from tessera.operator.planner.model import Phase
from tessera.operator.resources import SpecError
from tessera.operator.store import INSTANCES_GROUP
from tessera.v1 import common_pb2, matchmaking_pb2, zone_pb2, zone_pb2_grpc

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


async def passes_until(
    runtime: LocalRuntime, done: Callable[[], bool], what: str, timeout_s: float = 20.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await runtime.step()
        await asyncio.sleep(0.2)


async def first_zone_ready(runtime: LocalRuntime) -> None:
    """Run passes until the world's first zone, earth-0, is READY."""
    await passes_until(
        runtime,
        lambda: "earth-0" in runtime.zones and runtime.zones["earth-0"].view.phase == Phase.READY,
        "the first zone",
    )


async def heartbeat(redis: Redis, zone: str) -> zone_pb2.ZoneStatus:
    data = await redis.get(WorldKeys("earth").zone_status(zone))
    assert isinstance(data, bytes)
    return zone_pb2.ZoneStatus.FromString(data)


def test_load_world(tmp_path: Path) -> None:
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(WORLD))
    assert load_world(path)["metadata"] == {"name": "earth", "namespace": "local"}
    path.write_text("kind: Pod\n")
    with pytest.raises(SpecError, match="does not hold a World"):
        load_world(path)


async def test_split_then_merge_with_real_zone_processes(
    redis_server: LocalRedis, redis: Redis
) -> None:
    runtime = LocalRuntime(WORLD, redis_server.url, zone_env={"TESSERA_HEARTBEAT_S": "0.2"})
    try:
        await first_zone_ready(runtime)
        parent = runtime.zones["earth-0"].process
        async with grpc.aio.insecure_channel(parent.grpc_address) as channel:
            stub: zone_pb2_grpc.ZoneAsyncStub = zone_pb2_grpc.ZoneStub(channel)
            players = [f"p{i}" for i in range(12)]
            for i, player in enumerate(players):  # x = 100 .. 210, median 155
                await stub.Join(
                    zone_pb2.JoinRequest(
                        player_id=player, relay_id="r", spawn=common_pb2.Vec3(x=100 + 10 * i, z=100)
                    )
                )
            # Plan from a heartbeat that has all 12 (one with 11 would split at x=150).
            for _ in range(100):
                if (await heartbeat(redis, "earth-0")).players == len(players):
                    break
                await asyncio.sleep(0.05)
            await passes_until(runtime, lambda: "earth-1" in runtime.zones, "the split")
            for player in players:
                await stub.Leave(zone_pb2.LeaveRequest(player_id=player))

        child = runtime.zones["earth-1"]
        assert child.view.parent == "earth-0"
        assert child.view.bounds is not None and child.view.bounds.min_x == 155
        await passes_until(runtime, lambda: child.view.phase == Phase.READY, "the new zone")
        status = await heartbeat(redis, "earth-0")
        assert (status.bounds.min_x, status.bounds.max_x) == (0, 155)  # SetBounds reached it
        zone_map = await runtime.store.zone_map("earth")
        assert zone_map is not None
        assert {e.zone: e.bounds.max_x for e in zone_map.zones} == {"earth-0": 155, "earth-1": 1024}
        assert all(e.address for e in zone_map.zones)

        await passes_until(runtime, lambda: "earth-1" not in runtime.zones, "the merge")
        assert child.process.proc is not None and child.process.proc.wait(timeout=10) == 0
        await passes_until(
            runtime,
            lambda: (
                runtime.zones["earth-0"].view.bounds is not None
                and runtime.zones["earth-0"].view.bounds.max_x == 1024
            ),
            "the union",
        )
        await asyncio.sleep(0.5)
        status = await heartbeat(redis, "earth-0")
        assert (status.bounds.min_x, status.bounds.max_x) == (0, 1024)
        events = await redis.xrange(WorldKeys("earth").events)
        decisions = [fields[b"decision"] for _, fields in events]  # type: ignore[index, union-attr]
        assert decisions[:2] == [b"Initial", b"Split"] and b"Merge" in decisions
        assert decisions[-1] == b"Drained"
    finally:
        await runtime.close()
    assert not parent.alive()


async def test_a_killed_zone_process_is_started_again(
    redis_server: LocalRedis, redis: Redis
) -> None:
    runtime = LocalRuntime(WORLD, redis_server.url, zone_env={"TESSERA_HEARTBEAT_S": "0.2"})
    try:
        await first_zone_ready(runtime)
        first = runtime.zones["earth-0"].process
        first.kill()
        await passes_until(
            runtime,
            lambda: (
                runtime.zones["earth-0"].process is not first
                and runtime.zones["earth-0"].process.alive()
            ),
            "the restart",
        )
        second = runtime.zones["earth-0"].process
        address = "127.0.0.1:{}".format(second.wait_serving(20)["grpc_port"])
        status = zone_pb2.ZoneStatus()
        for _ in range(50):  # the new process's own heartbeat (the old one expires)
            data = await redis.get(WorldKeys("earth").zone_status("earth-0"))
            status = zone_pb2.ZoneStatus.FromString(data) if isinstance(data, bytes) else status
            if status.address == address:
                break
            await asyncio.sleep(0.1)
        assert status.address == address
        assert (status.bounds.max_x, status.bounds.max_z) == (1024, 512)
        assert list(runtime.zones) == ["earth-0"]
    finally:
        await runtime.close()


async def request_instance(redis: Redis, kind: str, match: str) -> None:
    """What the matchmaker writes to the world's instance stream (the contract)."""
    zone = instance_zone(match)
    fields: dict[str, str | bytes] = {
        "kind": kind,
        "match": match,
        "zone": zone,
        "at_ms": str(int(time.time() * 1000)),
    }
    if kind == "create":
        fields["request"] = matchmaking_pb2.Assignment(
            match_id=match,
            destination=matchmaking_pb2.Destination(
                kind=matchmaking_pb2.DESTINATION_KIND_INSTANCE, world="earth", zone=zone
            ),
            players=[matchmaking_pb2.PlayerAssignment(player_id="ann")],
        ).SerializeToString()
    await redis.xadd(instances_stream("earth"), fields, maxlen=10000, approximate=True)  # type: ignore[arg-type]


async def test_instance_zones_start_on_request_and_end_without_losing_players(
    redis_server: LocalRedis, redis: Redis
) -> None:
    world = copy.deepcopy(WORLD)
    world["spec"]["instances"] = {"endGraceSeconds": 0, "idleSeconds": 1}
    runtime = LocalRuntime(world, redis_server.url, zone_env={"TESSERA_HEARTBEAT_S": "0.2"})
    arena, dungeon = "a1" * 16, "d2" * 16
    try:
        await first_zone_ready(runtime)
        await request_instance(redis, "create", arena)
        await request_instance(redis, "create", dungeon)
        a, d = instance_zone(arena), instance_zone(dungeon)
        await passes_until(
            runtime,
            lambda: all(
                z in runtime.zones and runtime.zones[z].view.phase == Phase.READY for z in (a, d)
            ),
            "the instance zones",
        )
        status = await heartbeat(redis, a)
        assert status.instance == arena and status.state == zone_pb2.ZONE_STATE_ACTIVE
        assert (status.bounds.max_x, status.bounds.max_z) == (1024, 512)  # the world's
        assert (await heartbeat(redis, "earth-0")).instance == ""
        pending: Any = await redis.xpending(instances_stream("earth"), INSTANCES_GROUP)
        assert pending["pending"] == 0
        zone_map = await runtime.store.zone_map("earth")
        assert zone_map is not None and [e.zone for e in zone_map.zones] == ["earth-0"]

        # A player in each instance; the dungeon's leaves again (it goes idle).
        for zone, player in ((a, "ann"), (d, "dan")):
            async with grpc.aio.insecure_channel(runtime.zones[zone].process.grpc_address) as ch:
                stub: zone_pb2_grpc.ZoneAsyncStub = zone_pb2_grpc.ZoneStub(ch)
                await stub.Join(
                    zone_pb2.JoinRequest(
                        player_id=player, relay_id="r", spawn=common_pb2.Vec3(x=300, z=100)
                    )
                )
        await passes_until(
            runtime,
            lambda: all(runtime.zones[z].view.players == 1 for z in (a, d)),
            "players in the instances",
        )
        async with grpc.aio.insecure_channel(runtime.zones[d].process.grpc_address) as ch:
            stub = zone_pb2_grpc.ZoneStub(ch)
            await stub.Leave(zone_pb2.LeaveRequest(player_id="dan"))
        dungeon_process = runtime.zones[d].process
        await passes_until(runtime, lambda: d not in runtime.zones, "the idle instance's end")
        assert dungeon_process.proc is not None and dungeon_process.proc.wait(timeout=10) == 0
        assert a in runtime.zones  # its player is still there

        # The arena's match is reported: it drains, ann goes back to the open world.
        arena_process = runtime.zones[a].process
        await request_instance(redis, "end", arena)
        await passes_until(runtime, lambda: a not in runtime.zones, "the reported instance's end")
        assert arena_process.proc is not None and arena_process.proc.wait(timeout=10) == 0
        route = await redis.hget(WorldKeys("earth").routes, "ann")
        assert isinstance(route, bytes) and route.startswith(b"earth-0|")
        for _ in range(50):
            if (await heartbeat(redis, "earth-0")).players == 1:
                break
            await asyncio.sleep(0.1)
        assert (await heartbeat(redis, "earth-0")).players == 1
        async with grpc.aio.insecure_channel(runtime.zones["earth-0"].process.grpc_address) as ch:
            stub = zone_pb2_grpc.ZoneStub(ch)
            await stub.Leave(zone_pb2.LeaveRequest(player_id="ann"))  # earth-0 owns her
        assert await redis.hget(WorldKeys("earth").routes, "ann") is None
        events = await redis.xrange(WorldKeys("earth").events)
        ends = [
            (fields[b"zone"], fields[b"reason"])  # type: ignore[index]
            for _, fields in events  # type: ignore[union-attr]
            if fields[b"decision"] == b"InstanceEnd"  # type: ignore[index]
        ]
        assert [zone for zone, _ in ends] == [d.encode(), a.encode()]
        assert b"no players for" in ends[0][1] and b"was reported" in ends[1][1]
    finally:
        await runtime.close()
