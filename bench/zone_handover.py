"""One zone's players handed whole to a fresh zone: where the first snapshot waits.

A zone process with ``--players`` walking players (through the harness relay,
``tessera.harness.zones.Driver``, which like the relay opens its link to a zone
on the first route naming it) drains into a zone process started just before,
which gets the whole rectangle: the handoff a rolling zone update makes, without
the operator. Reported: the longest snapshot gap and the gaps over 100 / 250 ms
by cause (``tessera.harness.zones.Gap``), each move's phases as the relay saw
them (``Arrival.phases``: link, zone, delivery) and the new zone's own
``tessera_zone_arrival_seconds`` (inbox, pending, unattached, first_snapshot)
and link drops.

    python bench/zone_handover.py --json PATH [--players 200] [--tick-hz 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from tessera.harness.redis import LocalRedis
from tessera.harness.zones import Driver, World, ZoneSpec, arrival_report, zone_arrivals
from tessera.wire.geometry import Rect

AREA = Rect(0, 0, 512, 512)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = LocalRedis()
    server.start()
    redis = Redis.from_url(server.url)
    env = {"TESSERA_NPCS": "0", "TESSERA_TICK_HZ": str(args.tick_hz)}
    world = World(redis, server.url, world="handover", env=env, start_timeout_s=120.0)
    world.world_bounds = Rect(0, 0, 1024, 1024)
    driver = Driver(world, relay_id="bench", decode=False)
    try:
        await world.start_all([ZoneSpec("old", AREA)])
        players = [f"p{i}" for i in range(args.players)]
        for i, player in enumerate(players):
            await driver.join(player, "old", 20.0 + (i % 10) * 8, 20.0 + i // 10 * 8)
        walk = asyncio.create_task(driver.pace(players, (20.0, 120.0), 3600))
        await world.start("new", None)
        await asyncio.sleep(1.0)
        driver.reset_gaps()
        load_began = os.getloadavg()[0]
        began = time.monotonic()
        await world.set_bounds("new", AREA)
        await world.drain("old", target="new")
        await world.wait_status("old", lambda s: s.state == 5, timeout_s=30.0)  # DRAINED
        drained_s = time.monotonic() - began
        await asyncio.sleep(args.after)
        walk.cancel()
        gaps = driver.gaps
        new = world.procs["new"].ports["metrics_port"]
        return {
            "players": args.players,
            "tick_hz": args.tick_hz,
            "drained_s": drained_s,
            "max_snapshot_gap_ms": driver.max_gap_s * 1000.0,
            "gaps_over_100ms": dict(Counter(g.cause for g in gaps)),
            "gaps_over_250ms": dict(Counter(g.cause for g in gaps if g.gap_s >= 0.25)),
            "moves_by": dict(driver.moves),
            "moves": arrival_report(driver.arrivals),
            "zone_arrivals": await asyncio.to_thread(zone_arrivals, f"127.0.0.1:{new}"),
            "load_average_1m": [load_began, os.getloadavg()[0]],
        }
    finally:
        await driver.close()
        world.stop()
        await redis.aclose()
        server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--tick-hz", type=int, default=40)
    parser.add_argument("--after", type=float, default=2.0, help="seconds watched after")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    for key, value in result.items():
        print(f"{key}: {round(value, 3) if isinstance(value, float) else value}")
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
