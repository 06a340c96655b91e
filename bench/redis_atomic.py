"""What an atomic batch of writes costs the caller: a MULTI/EXEC transaction
pipeline against one Lua script, on one redis-server and on a real local Redis
Cluster (3 masters, 3 replicas), with the production client
(``tessera.common.store.connect``).

Each batch appends N entries of 300 bytes to four streams of one world (what a
zone's ``send_many`` does with a scan's PREPAREs): as a transaction pipeline
(``pipeline(transaction=True)``, the old ``send_many``), as a plain pipeline (not
atomic, for scale) and as one script (the current ``send_many``). Reported per
mode and batch size: wall and CPU milliseconds of the calling process per batch,
and the longest the caller's event loop went without running a 1 ms ticker
during the batches (a blocked loop: no tick, no gRPC, no inbox for that long).

    python bench/redis_atomic.py --json PATH [--sizes 1,10,200] [--batches 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

from tessera.common import store
from tessera.common.store import WorldKeys
from tessera.harness.redis import LocalRedis, LocalRedisCluster

KEYS = WorldKeys("w")
STREAMS = [KEYS.zone_inbox(f"z{i}") for i in range(4)]
APPEND = """
for i = 1, #KEYS do redis.call('XADD', KEYS[i], 'MAXLEN', '~', 1000, '*', 'm', ARGV[i]) end
return #KEYS
"""
MODES = ("transaction", "pipeline", "script")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def ticker(stop: asyncio.Event, gaps: list[float]) -> None:
    """Record the longest time between two runs of a 1 ms sleep."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps[0] = max(gaps[0], now - last)
        last = now


async def batch(client: store.Client, mode: str, size: int, payload: bytes) -> None:
    keys = [STREAMS[i % len(STREAMS)] for i in range(size)]
    if mode == "script":
        await client.register_script(APPEND)(keys=keys, args=[payload] * size)
        return
    async with client.pipeline(transaction=mode == "transaction") as pipe:
        for key in keys:
            pipe.xadd(key, {"m": payload}, maxlen=1000, approximate=True)
        await pipe.execute()


async def measure(url: str, sizes: list[int], batches: int) -> list[dict[str, Any]]:
    client = store.connect(url)
    payload = os.urandom(300)
    rows = []
    try:
        for mode in MODES:
            await batch(client, mode, 1, payload)  # connections and script cached
        for size in sizes:
            for mode in MODES:
                gaps = [0.0]
                stop = asyncio.Event()
                tick = asyncio.create_task(ticker(stop, gaps))
                await asyncio.sleep(0.01)
                wall0, cpu0 = time.perf_counter(), cpu_s()
                for _ in range(batches):
                    await batch(client, mode, size, payload)
                wall, cpu = time.perf_counter() - wall0, cpu_s() - cpu0
                stop.set()
                await tick
                rows.append(
                    {
                        "mode": mode,
                        "size": size,
                        "wall_ms_per_batch": round(wall / batches * 1e3, 3),
                        "cpu_ms_per_batch": round(cpu / batches * 1e3, 3),
                        "loop_blocked_ms_max": round(gaps[0] * 1e3, 2),
                    }
                )
    finally:
        await client.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--sizes", default="1,10,200")
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    report: dict[str, Any] = {"load_average_before": os.getloadavg()[0]}
    servers: dict[str, LocalRedis | LocalRedisCluster] = {
        "single": LocalRedis(),
        "cluster": LocalRedisCluster(),
    }
    for name, server in servers.items():
        server.start()
        try:
            report[name] = asyncio.run(measure(server.url, sizes, args.batches))
        finally:
            server.stop()
    report["load_average_after"] = os.getloadavg()[0]
    args.json.write_text(json.dumps(report, indent=2))
    for name in servers:
        for row in report[name]:
            print(name, *(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
