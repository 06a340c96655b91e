"""Redis load per player and per handoff: real zone processes on a real Redis,
counted by the server (``INFO commandstats`` and ``INFO cpu`` before and after
each phase).

Two zones share a border; N players join, half on each side. Phase "steady":
every player walks in a circle of ~3 m, 12-30 m from the border, for D seconds
(no handoffs; ghosts cross the border) -> Redis commands and Redis CPU per
player per second, and the commands that make them up. Phase "crossing": the
same players walk back and forth over the border for D seconds -> the commands
beyond the steady rate, divided by the handoffs committed -> commands per
handoff. The bench's own INFO calls are not counted. An invariant scan follows
each phase.

    python bench/redis_load.py --json PATH [--players 40] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

from tessera.common import store
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import Driver, World, ZoneSpec
from tessera.wire.geometry import Rect
from tessera.zone import audit

WEST, EAST = Rect(-500, -500, 0, 500), Rect(0, -500, 500, 500)
ENV = {"TESSERA_MAX_SPEED_MPS": "20", "TESSERA_ACCEL_MPS2": "200"}
NOT_COUNTED = {"info"}


async def sample(redis: store.Client) -> tuple[dict[str, int], float]:
    """Calls per command so far, and the server's CPU seconds (user + system)."""
    stats: dict[str, Any] = await redis.info("commandstats")
    cpu: dict[str, Any] = await redis.info("cpu")
    calls = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name.removeprefix("cmdstat_") not in NOT_COUNTED
    }
    return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}


async def measure(
    redis: store.Client, driver: Driver, players: list[str], seconds: float, crossing: bool
) -> tuple[dict[str, int], float, float, int]:
    """Run one phase: (calls per command, CPU seconds, elapsed seconds, handovers)."""
    calls0, cpu0 = await sample(redis)
    handovers0 = driver.handovers
    began = time.monotonic()
    if crossing:
        await driver.pace(players, (-12.0, 12.0), seconds)
    else:
        step = 0
        while time.monotonic() - began < seconds:
            for p in players:  # circles of ~3 m on their side of the border
                driver.move(p, yaw=(step / 10.0) % (2 * math.pi), forward=0.5)
            step += 1
            await asyncio.sleep(1 / 30)
    elapsed = time.monotonic() - began
    calls1, cpu1 = await sample(redis)
    return delta(calls0, calls1), cpu1 - cpu0, elapsed, driver.handovers - handovers0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = LocalRedis()
    server.start()
    redis = store.connect(server.url, decode_responses=True)
    world = World(redis, server.url, world="load", env=ENV)
    try:
        await world.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
        driver = Driver(world)
        players = [f"p{i}" for i in range(args.players)]
        for i, p in enumerate(players):
            west = i % 2 == 1
            x = (-1 if west else 1) * (12.0 + (i // 2 % 10) * 2.0)
            await driver.join(p, "west" if west else "east", x, (i // 20) * 8.0 - 100.0)
        await asyncio.sleep(1.0)
        print(f"{args.players} players, steady for {args.seconds} s", flush=True)
        steady, steady_cpu, steady_s, _ = await measure(
            redis, driver, players, args.seconds, crossing=False
        )
        lost = duplicated = 0
        report = await audit.settle(
            redis, world.world, world.addresses(), set(players), channel=LOCAL.channel
        )
        lost, duplicated = lost + len(report.lost), duplicated + len(report.duplicates)
        print(f"crossing for {args.seconds} s", flush=True)
        cross, cross_cpu, cross_s, handoffs = await measure(
            redis, driver, players, args.seconds, crossing=True
        )
        report = await audit.settle(
            redis, world.world, world.addresses(), set(players), channel=LOCAL.channel
        )
        lost, duplicated = lost + len(report.lost), duplicated + len(report.duplicates)
        await driver.close()
    finally:
        world.stop()
        await redis.aclose()
        server.stop()
    steady_total = sum(steady.values())
    steady_rate = steady_total / steady_s  # commands/s of the whole world at rest
    extra = sum(cross.values()) - steady_rate * cross_s
    return {
        "players": args.players,
        "zones": 2,
        "seconds": args.seconds,
        "steady_commands_per_s": steady_rate,
        "commands_per_player_per_s": steady_rate / args.players,
        "steady_redis_cpu_cores": steady_cpu / steady_s,
        "steady_commands_by_name_per_player_per_s": {
            k: v / steady_s / args.players for k, v in sorted(steady.items(), key=lambda kv: -kv[1])
        },
        "handoffs": handoffs,
        "handoffs_per_s": handoffs / cross_s,
        "commands_per_handoff": extra / handoffs if handoffs else float("nan"),
        "crossing_commands_by_name_per_s": {
            k: v / cross_s for k, v in sorted(cross.items(), key=lambda kv: -kv[1])
        },
        "crossing_redis_cpu_cores": cross_cpu / cross_s,
        "lost_entities": lost,
        "duplicated_entities": duplicated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--players", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(f"{'metric':<34} {'value':>12}")
    for key, value in result.items():
        if isinstance(value, dict):
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(value.items())[:6])
            print(f"{key:<34} {top}")
            continue
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<34} {shown:>12}")
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
