"""A zone whose steps run over their period: how long its gRPC calls wait.

One zone process with ``--players`` synthetic players (inputs generated in the
zone; simulation, interest and encoding real) at ``--hz``, with the overload
ladder held at level 0 (a step budget of 1 s), so that its steps stay longer
than a period. Then ``--calls`` ``GetStatus`` calls, one every 0.2 s, each
timed from the caller's side (10 s timeout). The call is served by the zone's
event loop between two steps, as its inbox, heartbeat and links are
(docs/ZONE.md, "Tick loop"). Then ``--commits`` players handed to the zone, 10
COMMITs every 50 ms appended to its inbox as another zone's commit script
appends them (route switched, COMMIT with the entity's state), and how long
each waited there until the zone adopted it: its ``tessera_zone_arrival_seconds``
``inbox`` phase (mean, and how many over 100 and 250 ms).

    python bench/zone_overrun.py --json PATH [--players 3000] [--hz 60] [--calls 20] [--commits 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import grpc

from tessera.common import store
from tessera.common.store import WorldKeys
from tessera.harness.redis import LocalRedis
from tessera.harness.synthetic import spawn
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import World, ZoneSpec, zone_arrivals
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc
from tessera.wire.geometry import Rect

AREA = Rect(-300, -300, 300, 300)
TIMEOUT_S = 10.0
FIRST_ID = 1 << 39  # handed-in entities' ids, clear of the zone's own blocks


async def hand_in(world: World, zone: str, count: int) -> dict[str, Any]:
    """Append ``count`` COMMITs to ``zone``'s inbox, 10 every 50 ms, then wait until
    the zone has adopted them all (60 s at most); its inbox arrival figures."""
    keys = WorldKeys(world.world)
    metrics_at = f"127.0.0.1:{world.procs[zone].ports['metrics_port']}"
    for k in range(0, count, 10):
        for i in range(k, min(k + 10, count)):
            state = zone_pb2.EntityState(
                entity_id=FIRST_ID + i,
                kind=zone_pb2.ENTITY_KIND_PLAYER,
                player_id=f"handed-{i}",
                position=common_pb2.Vec3(x=float(i % 100) - 50.0, z=float(i // 100)),
                health=100.0,
                zone=zone,
                epoch=2,
            )
            commit = zone_pb2.HandoffCommit(entity_id=FIRST_ID + i, epoch=2, entity=state)
            await world.redis.hset(keys.routes, f"handed-{i}", f"{zone}|2")
            message = zone_pb2.InboxMessage(commit=commit).SerializeToString()
            await world.redis.xadd(keys.zone_inbox(zone), {"m": message})
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + 60.0
    while True:
        arrivals = await asyncio.to_thread(zone_arrivals, metrics_at)
        inbox = arrivals.get("inbox", {"count": 0.0})
        if inbox["count"] >= count or time.monotonic() > deadline:
            return {"commits": count, "adopted": int(inbox["count"])} | {
                k: inbox.get(k, 0.0) for k in ("mean_ms", "over_100ms", "over_250ms")
            }
        await asyncio.sleep(0.5)


async def measure(
    redis_url: str, players: int, hz: int, calls: int, commits: int
) -> dict[str, Any]:
    """Start the zone, join the players, settle 5 s, time the calls, hand players in."""
    env = {
        "TESSERA_TICK_HZ": str(hz),
        "TESSERA_SYNTHETIC": "true",
        "TESSERA_TICK_BUDGET_MS": "1000",
    }
    world = World(store.connect(redis_url), redis_url, env=env)
    try:
        await world.start_all([ZoneSpec("a", AREA)])
        address = world.addresses()["a"]
        joined = await spawn({"a": (address, AREA)}, [f"synthetic-{i}" for i in range(players)])
        await asyncio.sleep(5.0)
        waits: list[float] = []
        status = zone_pb2.ZoneStatus()
        async with LOCAL.channel(address) as channel:
            stub = zone_pb2_grpc.ZoneStub(channel)
            for _ in range(calls):
                began = time.perf_counter()
                try:
                    status = await stub.GetStatus(zone_pb2.GetStatusRequest(), timeout=TIMEOUT_S)
                    waits.append(time.perf_counter() - began)
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise
                    waits.append(TIMEOUT_S)
                await asyncio.sleep(0.2)
        handed = await hand_in(world, "a", commits)
    finally:
        world.stop()
    waits.sort()
    return {
        "players": len(joined),
        "tick_hz": hz,
        "period_ms": round(1000.0 / hz, 2),
        "tick_p50_ms": round(status.tick_p50_ms, 2),  # of the last call answered
        "tick_p99_ms": round(status.tick_p99_ms, 2),
        "calls": calls,
        "timed_out": sum(w >= TIMEOUT_S for w in waits),
        "call_ms_p50": round(1000 * waits[len(waits) // 2], 1),
        "call_ms_max": round(1000 * waits[-1], 1),
        "handed_in": handed,
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the records")
    parser.add_argument("--players", type=int, default=3000)
    parser.add_argument("--hz", type=int, default=60)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--commits", type=int, default=300, help="players handed in")
    args = parser.parse_args()
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    with LocalRedis() as redis:
        record = asyncio.run(measure(redis.url, args.players, args.hz, args.calls, args.commits))
    print(
        f"{record['players']} players at {args.hz} Hz: step p50 {record['tick_p50_ms']} ms "
        f"(period {record['period_ms']} ms); GetStatus p50 {record['call_ms_p50']} ms, "
        f"max {record['call_ms_max']} ms, {record['timed_out']} of {args.calls} timed out; "
        f"handed in: {record['handed_in']}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bench": "zone_overrun", "records": [record]}, indent=2))


if __name__ == "__main__":
    main()
