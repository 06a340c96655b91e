"""Cheat reports: what publishing tallies costs a zone and what reading them costs auth.

A zone publishes its flagged players' tallies after each checkpoint
(``ZoneStore.publish_tallies``); auth's ``ListSuspects`` and its cheat policy read
a world's whole suspect set (``AuthStore.suspects``) and rank it
(``cheating.ranked``). Against a real redis-server on loopback, for each world
size: one publication of that many changed players by one zone, one of no changes
(the TTL refresh every checkpoint pays), and one read plus ranking (the top 50).

    python bench/cheat_reports.py --json PATH [--sizes 100,1000,10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tessera.auth import cheating
from tessera.auth.store import AuthStore
from tessera.common.store import connect
from tessera.harness.redis import LocalRedis
from tessera.zone.store import ZoneStore

WEIGHTS = {"speed_clamps": 1.0, "teleports": 5.0}


async def median_ms(call: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """Median wall time of ``call`` in milliseconds over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await call()
        times.append((time.perf_counter() - began) * 1000.0)
    return statistics.median(times)


async def measure(redis_url: str, size: int, repeat: int) -> dict[str, Any]:
    """The three timings for a world of ``size`` players with a tally."""
    redis = connect(redis_url)
    try:
        await redis.flushdb()
        zone = ZoneStore(redis, world="bench", zone="z1")
        auth = AuthStore(redis)
        # One batch per run, every tally different from the run before (built untimed).
        batches = [
            {f"p{i}": (r + i % 7, i % 3) for i in range(size)}  # (speed_clamps, teleports)
            for r in range(repeat + 1)
        ]
        changed = iter(batches[1:])
        unchanged = batches[0]
        await zone.publish_tallies(unchanged, ttl_s=86_400, now_ms=1)

        async def publish_changed() -> None:
            await zone.publish_tallies(next(changed), ttl_s=86_400, now_ms=1)

        async def read_and_rank() -> None:
            cheating.ranked(await auth.suspects("bench"), WEIGHTS, 50)

        changed_ms = await median_ms(publish_changed, repeat)
        await zone.publish_tallies(unchanged, ttl_s=86_400, now_ms=1)  # the zone's last view

        async def publish_unchanged() -> None:
            await zone.publish_tallies(unchanged, ttl_s=86_400, now_ms=1)

        return {
            "suspects": size,
            "publish_changed_ms": round(changed_ms, 2),
            "publish_unchanged_ms": round(await median_ms(publish_unchanged, repeat), 2),
            "read_and_rank_ms": round(await median_ms(read_and_rank, repeat), 2),
        }
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the records")
    parser.add_argument("--sizes", default="100,1000,10000", help="players with a tally")
    parser.add_argument("--repeat", type=int, default=5, help="runs per timing (median)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "redis").mkdir()
        redis = LocalRedis(Path(tmp) / "redis")
        redis.start()
        try:
            records = [asyncio.run(measure(redis.url, n, args.repeat)) for n in sizes]
        finally:
            redis.stop()
    print(f"{'suspects':>9} {'publish changed':>16} {'publish unchanged':>18} {'read+rank':>10}")
    for r in records:
        print(
            f"{r['suspects']:>9} {r['publish_changed_ms']:>13.2f} ms"
            f" {r['publish_unchanged_ms']:>15.2f} ms {r['read_and_rank_ms']:>7.2f} ms"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bench": "cheat_reports", "records": records}, indent=2))


if __name__ == "__main__":
    main()
