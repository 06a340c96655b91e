"""A zone whose steps run over their period: how long its gRPC calls wait.

One zone process with ``--players`` synthetic players (inputs generated in the
zone; simulation, interest and encoding real) at ``--hz``, with the overload
ladder held at level 0 (a step budget of 1 s), so that its steps stay longer
than a period. Then ``--calls`` ``GetStatus`` calls, one every 0.2 s, each
timed from the caller's side (10 s timeout). The call is served by the zone's
event loop between two steps, as its inbox, heartbeat and links are
(docs/ZONE.md, "Tick loop").

    python bench/zone_overrun.py --json PATH [--players 3000] [--hz 60] [--calls 20]
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
from tessera.harness.redis import LocalRedis
from tessera.harness.synthetic import spawn
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import World, ZoneSpec
from tessera.v1 import zone_pb2, zone_pb2_grpc
from tessera.wire.geometry import Rect

AREA = Rect(-300, -300, 300, 300)
TIMEOUT_S = 10.0


async def measure(redis_url: str, players: int, hz: int, calls: int) -> dict[str, Any]:
    """Start the zone, join the players, settle 5 s, time the calls."""
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
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the records")
    parser.add_argument("--players", type=int, default=3000)
    parser.add_argument("--hz", type=int, default=60)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    with LocalRedis() as redis:
        record = asyncio.run(measure(redis.url, args.players, args.hz, args.calls))
    print(
        f"{record['players']} players at {args.hz} Hz: step p50 {record['tick_p50_ms']} ms "
        f"(period {record['period_ms']} ms); GetStatus p50 {record['call_ms_p50']} ms, "
        f"max {record['call_ms_max']} ms, {record['timed_out']} of {args.calls} timed out"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bench": "zone_overrun", "records": [record]}, indent=2))


if __name__ == "__main__":
    main()
