"""The local runtime end to end: real zone processes, real Redis, players
joined over the zone's gRPC API. Load over the high-water mark splits the zone
(a new process starts, the parent takes its new bounds); when the players leave,
the siblings merge and the drained zone's process exits. Instance requests in
the world's stream start instance zone processes; ending one hands its players
back to the open world. A new zone template and a drained node replace zones by
handoff while 100 players walk, followed by a minimal relay (harness Driver)."""

from __future__ import annotations

import asyncio
import copy
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from redis.asyncio import Redis

from tessera.common.process import ServiceProcess
from tessera.common.store import WorldKeys, instance_zone, instances_stream
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import Driver
from tessera.harness.zones import World as HarnessWorld
from tessera.operator.local import LocalRuntime, load_world
from tessera.operator.planner.model import Desired, Phase
from tessera.operator.resources import SpecError
from tessera.operator.store import INSTANCES_GROUP
from tessera.v1 import common_pb2, matchmaking_pb2, zone_pb2, zone_pb2_grpc
from tessera.zone import audit
from tessera.zone.store import read_routes

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


async def test_every_zone_process_gets_the_worlds_game_module() -> None:
    game = {**WORLD, "spec": {**WORLD["spec"], "game": {"module": "tessera.examples.resources"}}}
    runtime = LocalRuntime(game, "redis://127.0.0.1:1", zone_env=LOCAL.env(), channel=LOCAL.channel)
    try:
        assert runtime.processes.env["TESSERA_GAME_MODULE"] == "tessera.examples.resources"
        runtime.update(WORLD)
        assert "TESSERA_GAME_MODULE" not in runtime.processes.env
    finally:
        await runtime.redis.aclose()


def test_load_world(tmp_path: Path) -> None:
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(WORLD))
    assert load_world(path)["metadata"] == {"name": "earth", "namespace": "local"}
    path.write_text("kind: Pod\n")
    with pytest.raises(SpecError, match="does not hold a World"):
        load_world(path)


async def leave(runtime: LocalRuntime, redis: Redis, player: str) -> None:
    """Leave ``player`` from the zone its route names (again if a handoff moved it)."""
    for _ in range(50):
        route = (await read_routes(redis, "earth"))[player]
        async with LOCAL.channel(runtime.zones[route.zone].process.grpc_address) as channel:
            try:
                await zone_pb2_grpc.ZoneStub(channel).Leave(zone_pb2.LeaveRequest(player_id=player))
                return
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        await asyncio.sleep(0.1)
    raise AssertionError(f"{player} never left")


async def test_split_then_merge_with_real_zone_processes(
    local_runtime: Callable[..., LocalRuntime], redis: Redis
) -> None:
    runtime = local_runtime(WORLD)
    try:
        await first_zone_ready(runtime)
        parent = runtime.zones["earth-0"].process
        # The zone's own stop bound ends before the runtime's SIGKILL.
        bound_s = sum(float(parent.env[f"TESSERA_SHUTDOWN_{k}_S"]) for k in ("GRACE", "HOOKS"))
        kill_s = inspect.signature(ServiceProcess.terminate).parameters["timeout_s"].default
        assert bound_s < kill_s
        async with LOCAL.channel(parent.grpc_address) as channel:
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
        for player in players:  # from the zone it is in: the new one may have taken it
            await leave(runtime, redis, player)

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
    local_runtime: Callable[..., LocalRuntime], redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = local_runtime(WORLD)
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
        # The warning carries the dead process's last log lines (why it died).
        died = [r for r in caplog.records if r.getMessage() == "zone process died; restarting"]
        assert died and died[0].__dict__["last_lines"] == list(first.lines)[-3:] != []
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


async def request_instance(redis: Redis, kind: str, match: str, mode: str = "") -> None:
    """What the matchmaker writes to the world's instance stream (the contract)."""
    zone = instance_zone(match)
    fields: dict[str, str | bytes] = {
        "kind": kind,
        "match": match,
        "zone": zone,
        "at_ms": str(int(time.time() * 1000)),
    }
    if kind == "create":
        fields["mode"] = mode
        fields["request"] = matchmaking_pb2.Assignment(
            match_id=match,
            destination=matchmaking_pb2.Destination(
                kind=matchmaking_pb2.DESTINATION_KIND_INSTANCE, world="earth", zone=zone
            ),
            players=[matchmaking_pb2.PlayerAssignment(player_id="ann")],
        ).SerializeToString()
    await redis.xadd(instances_stream("earth"), fields, maxlen=10000, approximate=True)  # type: ignore[arg-type]


async def test_instance_zones_start_on_request_and_end_without_losing_players(
    local_runtime: Callable[..., LocalRuntime], redis: Redis
) -> None:
    world = copy.deepcopy(WORLD)
    world["spec"]["instances"] = {"endGraceSeconds": 0, "idleSeconds": 1}
    # The arena's mode has a module of its own; the dungeon's runs the world's.
    world["spec"]["game"] = {"modes": {"arena": {"module": "tessera.examples.resources"}}}
    # What instance zones alone get (the match-result settings, in the CLI).
    runtime = local_runtime(world, instance_env={"TESSERA_SERVICE_CLIENT_ID": "zone"})
    arena, dungeon = "a1" * 16, "d2" * 16
    try:
        await first_zone_ready(runtime)
        await request_instance(redis, "create", arena, "arena")
        await request_instance(redis, "create", dungeon, "dungeon")
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
        modules = {}
        for zone, player in ((a, "ann"), (d, "dan")):
            async with LOCAL.channel(runtime.zones[zone].process.grpc_address) as ch:
                stub: zone_pb2_grpc.ZoneAsyncStub = zone_pb2_grpc.ZoneStub(ch)
                joined = await stub.Join(
                    zone_pb2.JoinRequest(
                        player_id=player, relay_id="r", spawn=common_pb2.Vec3(x=300, z=100)
                    )
                )
                modules[zone] = joined.game.module
        assert modules == {a: "resources", d: "tessera.game.default"}
        assert "TESSERA_GAME_MODULE" not in runtime.processes.env  # the open world's
        assert [runtime.zones[z].process.env.get("TESSERA_SERVICE_CLIENT_ID") for z in (a, d)] == [
            "zone",
            "zone",
        ]
        assert "TESSERA_SERVICE_CLIENT_ID" not in runtime.zones["earth-0"].process.env
        await passes_until(
            runtime,
            lambda: all(runtime.zones[z].view.players == 1 for z in (a, d)),
            "players in the instances",
        )
        async with LOCAL.channel(runtime.zones[d].process.grpc_address) as ch:
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
        async with LOCAL.channel(runtime.zones["earth-0"].process.grpc_address) as ch:
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


async def replaced_by_handoff(
    runtime: LocalRuntime, world: HarnessWorld, driver: Driver, done: Callable[[], bool], what: str
) -> None:
    """Passes until ``done`` (and no zone draining), the relay following every
    zone the runtime starts; then every player is owned exactly once, where its
    route says, by the zone the relay attached it to, and gets snapshots."""

    def settled() -> bool:
        world.procs = {name: z.process for name, z in runtime.zones.items()}
        return done() and all(z.view.desired == Desired.ACTIVE for z in runtime.zones.values())

    await passes_until(runtime, settled, what, timeout_s=60)
    players = set(driver.zone_of)
    report = await audit.settle(
        world.redis, "earth", world.addresses(), players, timeout_s=10, channel=LOCAL.channel
    )
    assert report.ok and report.duplicates == [] and report.lost == [], report
    # A Handover still queued when the old zone exits is lost with its link; a
    # relay then follows the routing table (routes:changed), as resync does.
    await driver.resync()
    routes = await read_routes(world.redis, "earth")
    assert [p for p in players if driver.zone_of[p] != routes[p].zone] == []
    # Every player hears from its zone again (a dropped one never would).
    since = time.monotonic()
    deadline = since + 5.0
    while silent := [p for p in players if driver.last_snapshot.get(p, 0.0) <= since]:
        assert time.monotonic() < deadline, (
            what,
            silent[:5],
            [driver.zone_of[p] for p in silent[:5]],
        )
        await asyncio.sleep(0.05)


async def test_template_change_and_node_drain_move_players_without_a_disconnect(
    redis_server: LocalRedis, local_runtime: Callable[..., LocalRuntime], redis: Redis
) -> None:
    """Two zones with 100 walking players: a new zone template replaces both zones
    by handoff, one at a time; then a zone whose node drains is replaced too."""
    spec = copy.deepcopy(WORLD)
    spec["spec"]["autoscaling"] |= {
        "minZones": 2,
        "splitThreshold": 1000,
        "targetPlayersPerZone": 500,
        "mergeThreshold": 1,
    }
    fast = {"TESSERA_HEARTBEAT_S": "0.2", "TESSERA_MAP_POLL_S": "0.1", "TESSERA_NPCS": "0"}
    runtime = local_runtime(spec, fast)
    world = HarnessWorld(redis, redis_server.url, world="earth")
    driver = Driver(world, relay_id="relay-1")
    walking: list[asyncio.Task[None]] = []
    try:
        await passes_until(
            runtime,
            lambda: (
                len(runtime.zones) == 2
                and all(z.view.phase == Phase.READY for z in runtime.zones.values())
            ),
            "two zones",
        )
        world.procs = {name: z.process for name, z in runtime.zones.items()}
        west = [f"w{i}" for i in range(50)]
        east = [f"e{i}" for i in range(50)]
        for i, (w, e) in enumerate(zip(west, east, strict=True)):
            await driver.join(w, "earth-0", 100 + 3 * i, 50 + 8 * i)
            await driver.join(e, "earth-1", 700 + 3 * i, 50 + 8 * i)
        walking = [
            asyncio.create_task(driver.pace(west, (100.0, 300.0), 120)),
            asyncio.create_task(driver.pace(east, (700.0, 900.0), 120)),
        ]
        old = runtime.world.revision
        spec["spec"]["zoneTemplate"]["tickRate"] = 30
        runtime.update(spec)
        assert runtime.world.revision != old
        draining_seen: set[int] = set()

        def updated() -> bool:
            draining_seen.add(
                sum(1 for z in runtime.zones.values() if z.view.desired == Desired.DRAINING)
            )
            views = [z.view for z in runtime.zones.values()]
            return len(views) == 2 and all(v.revision == runtime.world.revision for v in views)

        await replaced_by_handoff(runtime, world, driver, updated, "the rollout")
        assert max(draining_seen) == 1  # one zone at a time
        assert sorted(runtime.zones) == ["earth-2", "earth-3"]
        routes = await read_routes(redis, "earth")
        assert {routes[p].zone for p in west + east} == {"earth-2", "earth-3"}
        status = await heartbeat(redis, "earth-3")
        assert status.tick_hz == 30  # the new template

        moving = [p for p in west + east if routes[p].zone == "earth-2"]
        runtime.processes.cordoned.add("earth-2")  # its node is drained
        await replaced_by_handoff(
            runtime, world, driver, lambda: "earth-2" not in runtime.zones, "the node drain"
        )
        assert sorted(runtime.zones) == ["earth-3", "earth-4"]
        routes = await read_routes(redis, "earth")
        assert moving and {routes[p].zone for p in moving} == {"earth-4"}
        events = await redis.xrange(WorldKeys("earth").events)
        decisions = [f[b"decision"] for _, f in events]  # type: ignore[index, union-attr]
        assert decisions.count(b"Rollout") == 2 and decisions.count(b"NodeDrain") == 1
    finally:
        for task in walking:
            task.cancel()
        await driver.close()
        await runtime.close()
