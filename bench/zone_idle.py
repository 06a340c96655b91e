"""What a zone costs before its first player: the CPU, wake-ups and Redis
commands of idle zone processes.

A world of ``--zones`` zones in a row (each a neighbour of the next, so ghost
batches flow as in a real world) runs with no player at ``--tick-hz``, with the
zone's own defaults for the intervals the test harness shortens (heartbeat,
checkpoint, zone-map poll), so old and new code each run as they ship. After
``--settle`` seconds, for ``--seconds``: each zone process's CPU (user +
system, from /proc), its threads' voluntary context switches (a wake-up from a
wait) and the Redis server's commands and CPU. A
world of 40 zones pays this forty times before any player (docs/CAPACITY.md).

    python bench/zone_idle.py --json PATH [--zones 4] [--tick-hz 5] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import Redis

from tessera.common.process import cpu_seconds
from tessera.harness.redis import LocalRedis, server_load
from tessera.harness.zones import World, ZoneSpec
from tessera.wire.geometry import Rect

WIDTH = 200.0  # each zone's width along x; the world is as wide as the row
SHORTENED = ("TESSERA_HEARTBEAT_S", "TESSERA_CHECKPOINT_S", "TESSERA_MAP_POLL_S")


class IdleWorld(World):
    """The harness' world, its zones on their own interval defaults."""

    def zone_env(self, name: str, bounds: Rect | None) -> dict[str, str]:
        env = super().zone_env(name, bounds)
        for key in SHORTENED:
            env.pop(key)
        return env


def wakeups(pid: int) -> int:
    """Voluntary context switches of all of a process's threads so far."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = LocalRedis()
    server.start()
    client = Redis.from_url(server.url)
    admin = redis.Redis.from_url(server.url)
    env = {"TESSERA_TICK_HZ": str(args.tick_hz)}
    world = IdleWorld(client, server.url, world="idle", env=env)
    half = WIDTH * args.zones / 2
    world.world_bounds = Rect(-half, -500.0, half, 500.0)
    zones = [
        ZoneSpec(f"z{i}", Rect(-half + i * WIDTH, -500.0, -half + (i + 1) * WIDTH, 500.0))
        for i in range(args.zones)
    ]
    try:
        await world.start_all(zones)
        await asyncio.sleep(args.settle)
        pids = [p.pid for p in world.procs.values()]
        cpu0 = [cpu_seconds(p) for p in pids]
        woke0 = [wakeups(p) for p in pids]
        load0 = server_load(admin)
        began = time.monotonic()
        await asyncio.sleep(args.seconds)
        span = time.monotonic() - began
        cpu = [(cpu_seconds(p) - c) / span for p, c in zip(pids, cpu0, strict=True)]
        woke = [(wakeups(p) - w) / span for p, w in zip(pids, woke0, strict=True)]
        load = server_load(admin).since(load0)
    finally:
        world.stop()
        await client.aclose()
        admin.close()
        server.stop()
    return {
        "zones": args.zones,
        "tick_hz": args.tick_hz,
        "seconds": round(span, 1),
        "zone_cpu_pct_mean": round(100 * statistics.mean(cpu), 3),
        "zone_cpu_pct_each": [round(100 * c, 3) for c in cpu],
        "wakeups_per_s_mean": round(statistics.mean(woke), 1),
        "redis_commands_per_s_per_zone": round(load.commands / span / args.zones, 1),
        "redis_cpu_pct": round(100 * load.cpu_s / span, 3),
        "redis_commands": {k: round(v / span, 1) for k, v in sorted(load.calls.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--zones", type=int, default=4)
    parser.add_argument("--tick-hz", type=int, default=5)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
