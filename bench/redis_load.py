"""Redis load per player, per zone and per handoff: real zone processes on a
real Redis, counted by the server (``INFO commandstats``, ``cpu`` and ``stats``
before and after each phase, :func:`tessera.harness.redis.server_load`).

For each zone count Z and player count N: Z zones are strips side by side
along x over the 2 km world (Z - 1 borders of 2 km each), run with the
production intervals (heartbeat and checkpoint 1 s, map poll 0.25 s, ghosts
15 Hz, 30 Hz ticks, no NPCs), and N players join at seeded uniform positions.
Phase "steady": every player walks a ~3 m circle for S seconds (ghosts of the
players within the 50 m aura of a border cross it; the few circling within
metres of a border hand off now and then) -> Redis
commands, Redis CPU and bytes per second of the world, each command's share,
ghost batches and bytes (a subscriber of every ghost channel counts them) and
checkpoint bytes. Phase "crossing": C of the players (those nearest a border)
walk back and forth over it for S seconds while the rest keep circling -> the
commands and CPU beyond the steady rate, divided by the handoffs committed.
An invariant scan follows each phase. A fit over all runs splits the steady
cost into a fixed part, a part per zone and a part per player.

``--capacity`` also runs ``redis-benchmark`` (SET, GET and HSET; 50
clients) against the same server: commands per Redis CPU-second, the
denominator of "how many players fit one Redis core".

    python bench/redis_load.py --json PATH [--players 100,300,600] [--zones 2,4]
        [--seconds 15] [--crossers 40] [--capacity]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import numpy as np
import redis

from tessera.common import store
from tessera.common.store import WorldKeys
from tessera.harness.redis import LocalRedis, ServerLoad, server_load
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import Driver, World, ZoneSpec
from tessera.wire.geometry import Rect
from tessera.zone import audit, ghosts

HALF = 1000.0  # the harness world: 2 km x 2 km
# Production intervals (the harness' zone defaults are faster, for tests).
ENV = {
    "TESSERA_MAX_SPEED_MPS": "20",
    "TESSERA_ACCEL_MPS2": "200",
    "TESSERA_HEARTBEAT_S": "1",
    "TESSERA_CHECKPOINT_S": "1",
    "TESSERA_MAP_POLL_S": "1",
}
CHECKPOINT_S = 1.0


def strips(zones: int) -> list[ZoneSpec]:
    """``zones`` equal strips along x."""
    width = 2 * HALF / zones
    return [
        ZoneSpec(f"z{i}", Rect(-HALF + i * width, -HALF, -HALF + (i + 1) * width, HALF))
        for i in range(zones)
    ]


class GhostCounter:
    """Every ghost batch published in the world: batches, bytes, rows."""

    def __init__(self, client: store.Client, world: str) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pattern = WorldKeys(world).key("zone", "*", "ghosts")
        self.batches = self.bytes = self.rows = 0
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pubsub.psubscribe(self.pattern)
        self.task = asyncio.create_task(self._count())

    async def _count(self) -> None:
        while True:
            msg = await self.pubsub.get_message(timeout=1.0)
            if msg is None or msg["type"] != "pmessage":
                continue
            data: bytes = msg["data"]
            self.batches += 1
            self.bytes += len(data)
            self.rows += len(ghosts.decode(data)[2])

    def reading(self) -> tuple[int, int, int]:
        return self.batches, self.bytes, self.rows

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.pubsub.aclose()


async def circle(driver: Driver, players: list[str], stop: asyncio.Event) -> None:
    """Circles of ~3 m, 30 inputs/s, until ``stop``."""
    step = 0
    while not stop.is_set():
        driver.move_all(dict.fromkeys(players, (step / 10.0) % (2 * math.pi)), forward=0.5)
        step += 1
        await asyncio.sleep(1 / 30)


async def phase(
    counters: redis.Redis, feed: GhostCounter, work: Awaitable[Any]
) -> tuple[ServerLoad, float, tuple[int, int, int]]:
    """Count what the server and the ghost channels do while ``work`` runs: (the
    server's load, elapsed seconds, ghost batches, bytes and rows)."""
    before, ghosts0 = server_load(counters), feed.reading()
    began = time.monotonic()
    await work
    elapsed = time.monotonic() - began
    load, ghosts1 = server_load(counters).since(before), feed.reading()
    return (
        load,
        elapsed,
        (ghosts1[0] - ghosts0[0], ghosts1[1] - ghosts0[1], ghosts1[2] - ghosts0[2]),
    )


def rates(load: ServerLoad, seconds: float) -> dict[str, float]:
    return {
        "commands_per_s": round(load.commands / seconds, 2),
        "redis_cpu_cores": round(load.cpu_s / seconds, 5),
        "command_cpu_cores": round(sum(load.usec.values()) / 1e6 / seconds, 5),
        "net_in_bytes_per_s": round(load.net_in / seconds, 1),
        "net_out_bytes_per_s": round(load.net_out / seconds, 1),
    }


async def checkpoint_bytes(client: store.Client, world: str) -> list[int]:
    """The size of every player's stored checkpoint."""
    stored = await client.hgetall(WorldKeys(world).checkpoints)
    return [len(v) for v in stored.values()]


async def run(
    server: LocalRedis, zones: int, players: int, args: argparse.Namespace
) -> dict[str, Any]:
    name = f"load{zones}x{players}"
    client = store.connect(server.url)
    counters = redis.Redis(port=server.port)
    world = World(client, server.url, world=name, env=ENV)
    specs = strips(zones)
    borders = [s.bounds.max_x for s in specs[:-1]]
    rng = np.random.default_rng(args.seed)
    xs = rng.uniform(-HALF + 5, HALF - 5, players)
    zs = rng.uniform(-HALF + 5, HALF - 5, players)
    names = [f"p{i}" for i in range(players)]
    # The crossers: the players nearest a border, each walking over its nearest one.
    nearest = [borders[int(np.argmin([abs(x - b) for b in borders]))] for x in xs]
    order = sorted(range(players), key=lambda i: abs(xs[i] - nearest[i]))
    crossers = {names[i]: nearest[i] for i in order[: args.crossers]}
    feed = GhostCounter(client, name)
    steady_driver = Driver(world, "steady", decode=False)
    cross_driver = Driver(world, "crossing")
    try:
        await world.start_all(specs)
        await feed.start()
        for chunk in range(0, players, 25):
            await asyncio.gather(
                *(
                    (cross_driver if names[i] in crossers else steady_driver).join(
                        names[i],
                        specs[int((xs[i] + HALF) // (2 * HALF / zones))].name,
                        float(xs[i]),
                        float(zs[i]),
                    )
                    for i in range(chunk, min(players, chunk + 25))
                )
            )
        everyone = set(names)
        stop = asyncio.Event()
        walkers = [
            asyncio.create_task(
                circle(steady_driver, [p for p in names if p not in crossers], stop)
            ),
            asyncio.create_task(circle(cross_driver, list(crossers), stop)),
        ]
        await asyncio.sleep(2.0)  # links up, first checkpoints and ghosts
        steady, steady_s, steady_ghosts = await phase(counters, feed, asyncio.sleep(args.seconds))
        stop.set()
        await asyncio.gather(*walkers)
        sizes = await checkpoint_bytes(client, name)
        report = await audit.settle(
            client, name, world.addresses(), everyone, channel=LOCAL.channel
        )
        lost, duplicated = len(report.lost), len(report.duplicates)

        stop = asyncio.Event()
        walkers = [
            asyncio.create_task(
                circle(steady_driver, [p for p in names if p not in crossers], stop)
            )
        ]
        handovers0 = cross_driver.handovers
        crossing = asyncio.gather(
            *(
                cross_driver.pace(
                    [p for p, b in crossers.items() if b == border],
                    (border - 12, border + 12),
                    args.seconds,
                )
                for border in borders
            )
        )
        cross, cross_s, _ = await phase(counters, feed, crossing)
        stop.set()
        await asyncio.gather(*walkers)
        handoffs = cross_driver.handovers - handovers0
        report = await audit.settle(
            client, name, world.addresses(), everyone, channel=LOCAL.channel
        )
        lost, duplicated = lost + len(report.lost), duplicated + len(report.duplicates)
    finally:
        await feed.close()
        await steady_driver.close()
        await cross_driver.close()
        world.stop()
        await client.aclose()
        counters.close()
    extra_commands = cross.commands - steady.commands / steady_s * cross_s
    extra_cpu = cross.cpu_s - steady.cpu_s / steady_s * cross_s
    extra_usec = sum(cross.usec.values()) - sum(steady.usec.values()) / steady_s * cross_s
    batches, ghost_bytes, ghost_rows = steady_ghosts
    return {
        "zones": zones,
        "players": players,
        "border_m": round(len(borders) * 2 * HALF),
        "seconds": args.seconds,
        "steady": rates(steady, steady_s),
        "steady_commands_by_name_per_s": {
            k: round(v / steady_s, 2)
            for k, v in sorted(steady.calls.items(), key=lambda kv: -kv[1])
        },
        "steady_command_usec_by_name_per_s": {
            k: round(v / steady_s, 1) for k, v in sorted(steady.usec.items(), key=lambda kv: -kv[1])
        },
        "ghost_batches_per_s": round(batches / steady_s, 1),
        "ghost_bytes_per_s": round(ghost_bytes / steady_s, 1),
        "ghost_rows_per_s": round(ghost_rows / steady_s, 1),
        "checkpoint_bytes_per_player": round(float(np.mean(sizes)), 1) if sizes else 0.0,
        "checkpoint_bytes_per_s_per_zone": round(sum(sizes) / CHECKPOINT_S / zones, 1),
        "crossers": len(crossers),
        "handoffs": handoffs,
        "handoffs_per_s": round(handoffs / cross_s, 2),
        "crossing": rates(cross, cross_s),
        "crossing_commands_by_name_per_s": {
            k: round(v / cross_s, 2) for k, v in sorted(cross.calls.items(), key=lambda kv: -kv[1])
        },
        "commands_per_handoff": round(extra_commands / handoffs, 2) if handoffs else None,
        "redis_cpu_ms_per_handoff": round(extra_cpu / handoffs * 1000, 4) if handoffs else None,
        "command_usec_per_handoff": round(extra_usec / handoffs, 1) if handoffs else None,
        "lost_entities": lost,
        "duplicated_entities": duplicated,
    }


def fit(records: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Least squares of a steady figure = fixed + per_zone * zones + per_player * players."""
    a = np.array([[1.0, r["zones"], r["players"]] for r in records])
    y = np.array([r["steady"][key] for r in records])
    (fixed, per_zone, per_player), *_ = np.linalg.lstsq(a, y, rcond=None)
    return {"fixed": float(fixed), "per_zone": float(per_zone), "per_player": float(per_player)}


def redis_benchmark(server: LocalRedis, requests: int) -> dict[str, Any]:
    """redis-benchmark's SET, GET and HSET: commands per Redis CPU-second."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark not found (Debian's redis-tools)")
    counters = redis.Redis(port=server.port)
    before = server_load(counters)
    began = time.monotonic()
    out = subprocess.run(
        [
            binary,
            "-p",
            str(server.port),
            "-q",
            "-c",
            "50",
            "-n",
            str(requests),
            "-t",
            "set,get,hset",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    elapsed = time.monotonic() - began
    load = server_load(counters).since(before)
    counters.close()
    return {
        "requests_per_test": requests,
        "commands": load.commands,
        "wall_s": round(elapsed, 2),
        "redis_cpu_s": round(load.cpu_s, 3),
        "commands_per_redis_cpu_s": round(load.commands / load.cpu_s),
        "commands_per_wall_s": round(load.commands / elapsed),
        "output": [
            line.strip()
            for line in out.replace("\r", "\n").splitlines()
            if "requests per second" in line
        ],
    }


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    server = LocalRedis()
    server.start()
    try:
        records = []
        for zones in (int(z) for z in args.zones.split(",")):
            for players in (int(p) for p in args.players.split(",")):
                print(f"{zones} zones, {players} players", flush=True)
                records.append(await run(server, zones, players, args))
        capacity = redis_benchmark(server, args.capacity_requests) if args.capacity else None
    finally:
        server.stop()
    return {
        "records": records,
        "fit_commands_per_s": fit(records, "commands_per_s"),
        "fit_redis_cpu_cores": fit(records, "redis_cpu_cores"),
        "fit_command_cpu_cores": fit(records, "command_cpu_cores"),
        "redis_benchmark": capacity,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--players", default="100,300,600")
    parser.add_argument("--zones", default="2,4")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--crossers", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--capacity", action="store_true", help="also run redis-benchmark")
    parser.add_argument("--capacity-requests", type=int, default=200_000)
    args = parser.parse_args()
    load_before = os.getloadavg()
    cpu_before = os.times()
    result = asyncio.run(run_all(args))
    cpu_after = os.times()
    print(
        f"{'zones':>5} {'players':>7} {'cmds/s':>8} {'cpu cores':>9} {'ghost B/s':>10} "
        f"{'ckpt B/s/zone':>13} {'handoffs':>8} {'cmds/ho':>7} {'cpu ms/ho':>9} "
        f"{'lost':>4} {'dup':>3}"
    )
    for r in result["records"]:
        s = r["steady"]
        print(
            f"{r['zones']:>5} {r['players']:>7} {s['commands_per_s']:>8.1f} "
            f"{s['redis_cpu_cores']:>9.4f} {r['ghost_bytes_per_s']:>10.0f} "
            f"{r['checkpoint_bytes_per_s_per_zone']:>13.0f} {r['handoffs']:>8} "
            f"{r['commands_per_handoff'] or float('nan'):>7.2f} "
            f"{r['redis_cpu_ms_per_handoff'] or float('nan'):>9.4f} "
            f"{r['lost_entities']:>4} {r['duplicated_entities']:>3}"
        )
    for key in ("fit_commands_per_s", "fit_redis_cpu_cores", "fit_command_cpu_cores"):
        f = result[key]
        print(
            f"{key:<24} fixed {f['fixed']:.5g}  per zone {f['per_zone']:.5g}  "
            f"per player {f['per_player']:.5g}"
        )
    if result["redis_benchmark"]:
        b = result["redis_benchmark"]
        print(f"redis-benchmark: {b['commands_per_redis_cpu_s']} commands per Redis CPU-second")
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    result["bench_cpu_s"] = round(
        (cpu_after.user + cpu_after.system + cpu_after.children_user + cpu_after.children_system)
        - (
            cpu_before.user
            + cpu_before.system
            + cpu_before.children_user
            + cpu_before.children_system
        ),
        1,
    )
    print(f"load average before {load_before}, after {result['load_average']['after']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
