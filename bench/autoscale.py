"""Autoscaling benchmark: how long the planner takes for a world of 1,000 zones.

    python bench/autoscale.py --json PATH [--zones 1000] [--rounds 200]

Builds a managed world of ``--zones`` zones with the planner's own initial
layout (so the split tree is real), then times ``plan()`` over ``--rounds``
rounds of changing load: every round a few percent of the zones are over the
high-water mark (with 512 position samples each) and many sibling pairs are
under the low-water mark, so splits, merges and the window bookkeeping all run.
Each round's plan is applied, so the layout keeps changing.

With the local runtime (real zone processes and Redis, standby on and off) it
also measures what works before handoff exists:

- ``split_ready_s_standby`` / ``split_ready_s_cold``: from the pass that decided
  a split to the new zone heartbeating ACTIVE with its bounds (a standby process
  given bounds, or a process started for it);
- ``merge_retire_s``: from the pass that decided a merge (the zone is empty) to
  the drained zone's process having exited.

``split_reaction_s`` (until the new zone serves its handed-off players) and
``merge_drain_s`` (handing players back) need handoff (issue 6); they are
reported as not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc

from tessera.common.localredis import LocalRedis
from tessera.common.store import WorldKeys
from tessera.operator.local import LocalRuntime
from tessera.operator.planner import (
    Desired,
    Memory,
    Phase,
    Policy,
    Rect,
    WorldSpec,
    ZoneView,
    advance,
    plan,
)
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc

NOT_MEASURED = {
    "split_reaction_s": "needs zone handoff (issue 6): players do not move to the new zone yet",
    "merge_drain_s": "needs zone handoff (issue 6): a zone with players cannot drain yet",
}


def build_world(zones: int) -> tuple[WorldSpec, list[ZoneView], Memory]:
    policy = Policy(
        min_zones=zones,
        max_zones=zones + zones // 20,
        min_zone_size=50,
        max_depth=16,
        split_window_s=2,
        merge_window_s=2,
        cooldown_s=4,
    )
    world = WorldSpec("bench", Rect(0, 0, 32_768, 32_768), policy, standby=4)
    first = plan(world, [], now=0.0)
    layout = [replace(z, phase=Phase.READY) for z in advance([], first.actions)]
    # Let the layout move within 5 % of the initial count.
    world = replace(world, policy=replace(policy, min_zones=zones - zones // 20))
    return world, layout, first.memory


def load(zones: list[ZoneView], rng: random.Random, hot: set[str]) -> list[ZoneView]:
    out = []
    for z in zones:
        if z.desired != Desired.ACTIVE or z.bounds is None:
            out.append(replace(z, phase=Phase.READY if z.phase == Phase.PENDING else z.phase))
            continue
        b = z.bounds
        is_hot = z.name in hot
        players = rng.randint(301, 900) if is_hot else rng.randint(0, 60)
        n = min(players, 512)
        out.append(
            replace(
                z,
                phase=Phase.READY,
                players=players,
                sample_x=[rng.uniform(b.min_x, b.max_x) for _ in range(n)] if is_hot else [],
                sample_z=[rng.uniform(b.min_z, b.max_z) for _ in range(n)] if is_hot else [],
            )
        )
    return out


def run(zone_count: int, rounds: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    world, zones, memory = build_world(zone_count)
    durations: list[float] = []
    cpu: list[float] = []
    actions = 0
    now = 0.0
    sizes = []
    hot: set[str] = set()
    for round_ in range(rounds):
        now += 1.0
        if round_ % 10 == 0:  # a new 3 % of the zones gets crowded for 10 s
            names = sorted(z.name for z in zones)
            hot = set(rng.sample(names, k=max(1, len(names) * 3 // 100)))
        observed = load(zones, rng, hot)
        # Draining zones finish: report them drained.
        observed = [
            replace(z, phase=Phase.DRAINED) if z.desired == Desired.DRAINING else z
            for z in observed
        ]
        sizes.append(sum(1 for z in observed if z.desired == Desired.ACTIVE))
        start, cpu_start = time.perf_counter(), time.process_time()
        result = plan(world, observed, now, memory)
        durations.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - cpu_start) * 1000)
        memory = result.memory
        actions += len(result.actions)
        zones = advance(observed, result.actions)
    durations.sort()
    cpu.sort()
    return {
        "zones_min": min(sizes),
        "zones_max": max(sizes),
        "rounds": rounds,
        "actions_total": actions,
        "planner_ms_p50": round(statistics.median(durations), 3),
        "planner_ms_p99": round(durations[min(len(durations) - 1, int(0.99 * len(durations)))], 3),
        "planner_ms_max": round(durations[-1], 3),
        # CPU time of the planner process: what the machine's other load does not add.
        "planner_cpu_ms_p99": round(cpu[min(len(cpu) - 1, int(0.99 * len(cpu)))], 3),
        "not_measured": NOT_MEASURED,
    }


def local_world(standby: int) -> dict[str, object]:
    return {
        "apiVersion": "tessera.io/v1alpha1",
        "kind": "World",
        "metadata": {"name": "bench"},
        "spec": {
            "bounds": {"minX": 0, "minZ": 0, "maxX": 1024, "maxZ": 1024},
            "zoneTemplate": {"image": "local", "tickRate": 30},
            "standby": standby,
            "drainTimeoutSeconds": 10,
            "autoscaling": {
                "targetPlayersPerZone": 8,
                "splitThreshold": 10,
                "mergeThreshold": 2,
                "splitStabilizationSeconds": 0,
                "mergeStabilizationSeconds": 0,
                "cooldownSeconds": 1,
                "minZoneSize": 64,
            },
        },
    }


async def split_and_merge(redis_url: str, standby: int, pass_s: float) -> tuple[float, float]:
    """One split and one merge with real zone processes: (split ready s, merge retire s)."""
    runtime = LocalRuntime(local_world(standby), redis_url, zone_env={"TESSERA_HEARTBEAT_S": "0.1"})
    loop = asyncio.get_running_loop()

    async def until(done: object, timeout_s: float = 30.0) -> None:
        deadline = loop.time() + timeout_s
        while not done():  # type: ignore[operator]
            if loop.time() > deadline:
                raise RuntimeError("local runtime did not get there in time")
            await runtime.step()
            await asyncio.sleep(pass_s)

    try:
        await until(
            lambda: (
                len(runtime.zones) == 1 + standby
                and all(z.view.phase == Phase.READY for z in runtime.zones.values())
            )
        )
        parent = runtime.zones["bench-0"].process
        async with grpc_channel(parent.grpc_address) as stub:
            players = [f"p{i}" for i in range(12)]
            for i, player in enumerate(players):
                spawn = common_pb2.Vec3(x=100 + 10 * i, z=100)
                await stub.Join(zone_pb2.JoinRequest(player_id=player, relay_id="b", spawn=spawn))
            deadline = loop.time() + 30
            while loop.time() < deadline:
                result = await runtime.step()
                decided = loop.time()
                new = [a for a in result.actions if a.decision == "Split" and a.zone != "bench-0"]
                if new:
                    break
                await asyncio.sleep(pass_s)
            else:
                raise RuntimeError("no split")
            child = new[0].zone

            async def child_active() -> bool:
                data = await runtime.redis.get(WorldKeys("bench").zone_status(child))
                if not isinstance(data, bytes):
                    return False
                status = zone_pb2.ZoneStatus.FromString(data)
                return status.state == zone_pb2.ZONE_STATE_ACTIVE and status.HasField("bounds")

            while not await child_active():
                if loop.time() > decided + 30:
                    raise RuntimeError("the new zone never became active")
                await runtime.step()
                await asyncio.sleep(pass_s / 4)
            split_ready = loop.time() - decided
            for player in players:
                await stub.Leave(zone_pb2.LeaveRequest(player_id=player))
        deadline = loop.time() + 30
        while loop.time() < deadline:  # the merge waits for the cooldown to pass
            result = await runtime.step()
            decided = loop.time()
            if any(a.decision == "Merge" for a in result.actions):
                break
            await asyncio.sleep(pass_s)
        else:
            raise RuntimeError("no merge")
        drained = runtime.zones[child].process
        await until(lambda: not drained.alive())
        return split_ready, loop.time() - decided
    finally:
        await runtime.close()


@contextlib.asynccontextmanager
async def grpc_channel(address: str) -> AsyncIterator[zone_pb2_grpc.ZoneAsyncStub]:
    """An async Zone stub on a fresh channel, closed on exit."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub: zone_pb2_grpc.ZoneAsyncStub = zone_pb2_grpc.ZoneStub(channel)
        yield stub


def run_local(pass_s: float) -> dict[str, float]:
    with LocalRedis() as redis:
        standby_split, standby_merge = asyncio.run(split_and_merge(redis.url, 1, pass_s))
        cold_split, cold_merge = asyncio.run(split_and_merge(redis.url, 0, pass_s))
    return {
        "pass_interval_s": pass_s,
        "split_ready_s_standby": round(standby_split, 3),
        "split_ready_s_cold": round(cold_split, 3),
        "merge_retire_s": round(max(standby_merge, cold_merge), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--zones", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pass-interval", type=float, default=0.2, help="local runtime pass, s")
    args = parser.parse_args()
    results = run(args.zones, args.rounds, args.seed)
    results.update(run_local(args.pass_interval))
    print(f"{'metric':<22} value")
    for key, value in results.items():
        if key != "not_measured":
            print(f"{key:<22} {value}")
    for key, why in NOT_MEASURED.items():
        print(f"{key:<22} not measured: {why}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bench": "autoscale", **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
