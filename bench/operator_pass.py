"""Operator pass time vs zone count: the real planner and the real reconcile
pass of the local runtime against a real redis-server, over synthetic zones.

For each zone count N, a World whose ``minZones`` and ``maxZones`` are N gets
its initial layout from the planner (the first pass), then every zone's
heartbeat is written through the zone's own store (``ZoneStore.heartbeat``)
with its bounds, a player count between the merge and split thresholds and
that many position samples (up to 512, as a zone sends). What the zones are
not: processes. Each is a :class:`Heartbeat` in the runtime's
``ZoneProcesses`` (always alive, nothing to stop), so the pass starts and
stops nothing and, with bounds already right, sends no gRPC command; every
other step is the production code: restart check, heartbeat read, instance
requests, plan, zone map publish (unchanged: one WATCH/GET), converge,
records and acknowledgements. Timed per pass: wall and this process's CPU,
plus the ``plan()`` call alone (wall) on each pass's observation, and the
Redis commands per pass; then the CPU of two plans a steady pass does not
make (best of 3): the initial layout, and every zone deleted at once. Like
the operator's entry points, the bench freezes what start-up made out of the
cyclic GC (``gc.freeze``) before the passes.

    python bench/operator_pass.py --json PATH [--zones 20,50,100,200,500] [--passes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import redis

from tessera.common import store
from tessera.common.process import ServiceProcess
from tessera.harness.redis import LocalRedis, server_load
from tessera.harness.tokens import LOCAL
from tessera.operator.planner.model import Memory, WorldSpec, ZoneView
from tessera.operator.planner.rules import plan
from tessera.operator.processes import ZoneProcesses
from tessera.operator.reconcile import reconcile
from tessera.operator.resources import world_spec
from tessera.operator.store import OperatorStore
from tessera.operator.zonectl import ZoneControl
from tessera.v1 import common_pb2, zone_pb2
from tessera.wire.bounds import to_bounds
from tessera.zone.store import ZoneStore

SIDE = 20_000.0  # world edge, m: 500 zones of at least 100 m fit
SAMPLES = 512  # a zone's heartbeat carries at most this many player positions


class Heartbeat(ServiceProcess):
    """A zone that is only the heartbeat the bench writes: alive, nothing to stop."""

    def __init__(self, name: str) -> None:
        super().__init__("tessera.zone", {}, name=name)

    def alive(self) -> bool:
        return True

    def terminate(self, timeout_s: float = 15.0) -> int:
        return 0


class HeartbeatZones(ZoneProcesses):
    """The local runtime's workloads with :class:`Heartbeat` zones in place of processes."""

    async def _start(self, name: str, view: ZoneView, mode: str = "") -> ServiceProcess:
        return Heartbeat(name)


def world_object(name: str, zones: int) -> dict[str, Any]:
    half = SIDE / 2
    return {
        "apiVersion": "tessera.io/v1alpha1",
        "kind": "World",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "bounds": {"minX": -half, "minZ": -half, "maxX": half, "maxZ": half},
            "zoneTemplate": {"image": "tessera:bench"},
            "autoscaling": {"minZones": zones, "maxZones": zones, "maxDepth": 16},
        },
    }


async def write_heartbeats(
    client: store.Client, world: WorldSpec, views: list[ZoneView], rng: np.random.Generator
) -> int:
    """Each zone's heartbeat, with a steady load; returns the players in all."""
    policy = world.policy
    total = 0
    for view in views:
        assert view.bounds is not None
        players = int(rng.integers(policy.merge_threshold + 1, policy.split_threshold))
        total += players
        n = min(players, SAMPLES)
        b = view.bounds
        status = zone_pb2.ZoneStatus(
            zone=common_pb2.ZoneRef(world=world.name, zone=view.name),
            address="127.0.0.1:1",
            state=zone_pb2.ZONE_STATE_ACTIVE,
            players=players,
            tick_hz=30,
            updated_at_ms=time.time() * 1000,
            sample_x=rng.uniform(b.min_x, b.max_x, n).tolist(),
            sample_z=rng.uniform(b.min_z, b.max_z, n).tolist(),
            bounds=to_bounds(b),
        )
        await ZoneStore(client, world=world.name, zone=view.name).heartbeat(status, ttl_s=3600.0)
    return total


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.array(values) * 1000
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "max": round(float(a.max()), 3),
    }


def rare_plans(
    world: WorldSpec, views: Sequence[ZoneView], memory: Memory, now: float
) -> dict[str, float]:
    """CPU ms (best of 3) of ``plan()`` where a steady pass does not go: the
    world's initial layout, and every zone being deleted at once."""
    deleted = [replace(v, deleting=True) for v in views]
    cases: dict[str, Callable[[], object]] = {
        "initial_layout_plan_cpu_ms": lambda: plan(world, [], now),
        "all_deleted_plan_cpu_ms": lambda: plan(world, deleted, now, memory),
    }
    out = {}
    for key, call in cases.items():
        best = math.inf
        for _ in range(3):
            began = time.process_time()
            call()
            best = min(best, time.process_time() - began)
        out[key] = round(best * 1000, 3)
    return out


async def run(server: LocalRedis, zones: int, passes: int, seed: int) -> dict[str, Any]:
    name = f"pass{zones}"
    world = world_spec(world_object(name, zones))
    client = store.connect(server.url)
    counters = redis.Redis(port=server.port)
    runtime = HeartbeatZones(world, redis_url=server.url, env={})
    op_store, control = OperatorStore(client), ZoneControl(LOCAL.channel)
    rng = np.random.default_rng(seed)
    try:
        now = time.time()
        first = await reconcile(world, workloads=runtime, store=op_store, zones=control, now=now)
        views = [z.view for z in runtime.zones.values()]
        players = await write_heartbeats(client, world, views, rng)
        wall, cpu, planned, actions = [], [], [], 0
        load_before = None
        for i in range(passes + 10):  # the first 10 passes warm up
            if i == 10:
                load_before = server_load(counters)
            now += 1.0
            began, cpu0 = time.perf_counter(), time.process_time()
            result = await reconcile(
                world, workloads=runtime, store=op_store, zones=control, now=now
            )
            ended, cpu1 = time.perf_counter(), time.process_time()
            seen = await runtime.observe(op_store, now)
            plan_began = time.perf_counter()
            plan(world, seen.views, now, seen.memory)
            plan_s = time.perf_counter() - plan_began
            if i >= 10:
                wall.append(ended - began)
                cpu.append(cpu1 - cpu0)
                planned.append(plan_s)
                actions += len(result.actions)
        assert load_before is not None
        load = server_load(counters).since(load_before)
        rare = rare_plans(world, seen.views, seen.memory, now)
    finally:
        await control.close()
        await client.aclose()
        counters.close()
    return {
        "zones": len(views),
        "initial_actions": len(first.actions),
        "players": players,
        "passes": passes,
        "actions_in_timed_passes": actions,
        "pass_wall_ms": percentiles(wall),
        "pass_cpu_ms": percentiles(cpu),
        "plan_wall_ms": percentiles(planned),
        "redis_commands_per_pass": round(load.commands / passes, 2),
        "redis_cpu_ms_per_pass": round(load.cpu_s / passes * 1000, 3),
        **rare,
    }


async def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    server = LocalRedis()
    server.start()
    try:
        return [await run(server, int(n), args.passes, args.seed) for n in args.zones.split(",")]
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--zones", default="20,50,100,200,500")
    parser.add_argument("--passes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    load_before = os.getloadavg()
    # As the operator's entry points do after start-up (python -m tessera.operator,
    # tessera.operator.local): start-up objects out of the GC's full collections.
    gc.collect()
    gc.freeze()
    records = asyncio.run(run_all(args))
    header = (
        f"{'zones':>5} {'players':>7} {'pass p50':>9} {'pass p99':>9} {'cpu p50':>8} "
        f"{'cpu p99':>8} {'plan p50':>9} {'plan p99':>9} {'cmds/pass':>9} {'actions':>7} "
        f"{'layout':>7} {'del-all':>7}"
    )
    print(header)
    for r in records:
        w, c, p = r["pass_wall_ms"], r["pass_cpu_ms"], r["plan_wall_ms"]
        print(
            f"{r['zones']:>5} {r['players']:>7} {w['p50']:>9.2f} {w['p99']:>9.2f} "
            f"{c['p50']:>8.2f} {c['p99']:>8.2f} {p['p50']:>9.2f} {p['p99']:>9.2f} "
            f"{r['redis_commands_per_pass']:>9.1f} {r['actions_in_timed_passes']:>7} "
            f"{r['initial_layout_plan_cpu_ms']:>7.2f} {r['all_deleted_plan_cpu_ms']:>7.2f}"
        )
    print("layout, del-all: plan() CPU ms for the initial layout and every zone deleted")
    loadavg = {"before": load_before, "after": os.getloadavg()}
    print(f"load average (1, 5, 15 min) before {load_before}, after {loadavg['after']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    out = {"bench": "operator_pass", "load_average": loadavg, "records": records}
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
