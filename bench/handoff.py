"""Handoff benchmark: real zone processes, real Redis, bots crossing borders.

Phases: (1) two zones, N bots walking back and forth across the border for D
seconds -> handoffs/s and handoff duration (PREPARE sent -> routing switched,
from the zones' ``tessera_zone_handoff_duration_seconds`` histograms,
interpolated within buckets); (2) a zone holding P players drains into its
neighbour -> drain_s (Drain call -> DRAINED); (3) kill -9 of the zone now
holding them, restart -> recovery_s (kill -> serving with every player
restored). An invariant scan over all zones and the routing table follows
every phase (lost / duplicated entities). Phase 1 also reports both zone
processes' CPU (/proc): cores, and CPU per handoff, which includes the
crossers' own ticks, inputs and snapshots (an upper bound of a handoff's cost).

    python bench/handoff.py --json PATH [--bots 100] [--seconds 8] [--players 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from tessera.common.process import cpu_seconds
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import Driver, World, ZoneSpec
from tessera.wire.geometry import Rect
from tessera.zone import audit, invariants

WEST, EAST = Rect(-500, -500, 0, 500), Rect(0, -500, 500, 500)
ENV = {
    "TESSERA_MAX_SPEED_MPS": "20",
    "TESSERA_ACCEL_MPS2": "200",
    "TESSERA_AOI_NEAR_M": "10",
    "TESSERA_AOI_MID_M": "15",
    "TESSERA_AOI_FAR_M": "20",
    "TESSERA_AOI_CAP": "16",
}


def scrape(world: World) -> dict[str, list[tuple[float, float]] | float]:
    """Summed handoff counters and duration buckets of every live zone."""
    buckets: dict[float, float] = {}
    committed = 0.0
    for proc in world.procs.values():
        if not proc.alive():
            continue
        url = f"http://127.0.0.1:{proc.ports['metrics_port']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "tessera_zone_handoff_duration_seconds_bucket":
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
                elif s.name == "tessera_zone_handoffs_total" and s.labels.get("result") in (
                    "committed",
                    "forced",
                ):
                    committed += s.value
    return {"buckets": sorted(buckets.items()), "committed": committed}


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Quantile of a cumulative histogram, linear within the bucket (ms)."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    rank, lo, below = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lo * 1000.0
            frac = (rank - below) / (count - below) if count > below else 1.0
            return (lo + (le - lo) * frac) * 1000.0
        lo, below = le, count
    return lo * 1000.0


async def check(world: World, players: set[str], totals: dict[str, int]) -> invariants.Report:
    report = await audit.settle(
        world.redis, world.world, world.addresses(), players, channel=LOCAL.channel
    )
    totals["lost"] += len(report.lost)
    totals["duplicate"] += len(report.duplicates)
    totals["misrouted"] += len(report.misrouted)
    return report


async def crossing(
    redis: Redis, url: str, bots: int, seconds: float, totals: dict[str, int]
) -> dict[str, float]:
    world = World(redis, url, world="cross", env=ENV)
    try:
        await world.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
        driver = Driver(world)
        names = [f"b{i}" for i in range(bots)]
        for i, p in enumerate(names):
            await driver.join(
                p, "west" if i % 2 else "east", -10.0 + 20.0 * (i % 2), i * 2.0 - bots
            )
        await asyncio.sleep(0.5)
        print(f"{bots} bots crossing for {seconds} s", flush=True)
        before = scrape(world)
        pids = [proc.proc.pid for proc in world.procs.values() if proc.proc is not None]
        cpu0 = sum(cpu_seconds(pid) for pid in pids)
        began = time.monotonic()
        await driver.pace(names, (-12.0, 12.0), seconds)
        elapsed = time.monotonic() - began
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
        after = scrape(world)
        await check(world, set(names), totals)
        await driver.close()
        assert isinstance(after["buckets"], list) and isinstance(before["buckets"], list)
        prev = dict(before["buckets"])
        diff = [(le, c - prev.get(le, 0.0)) for le, c in after["buckets"]]
        done = float(after["committed"]) - float(before["committed"])  # type: ignore[arg-type]
        return {
            "handoffs": done,
            "handoffs_per_s": done / elapsed,
            "handoff_ms_p50": quantile(diff, 0.50),
            "handoff_ms_p99": quantile(diff, 0.99),
            "max_snapshot_gap_s": driver.max_gap_s,
            "zone_cores": cpu / elapsed,
            "zone_cpu_ms_per_handoff": 1000.0 * cpu / done if done else float("nan"),
        }
    finally:
        world.stop()


async def drain_and_recover(
    redis: Redis, url: str, players: int, totals: dict[str, int]
) -> dict[str, float]:
    world = World(redis, url, world="drain", env=ENV)
    try:
        await world.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
        driver = Driver(world)
        names = [f"d{i}" for i in range(players)]
        await asyncio.gather(
            *(
                driver.join(p, "east", 5.0 + (i % 40) * 10.0, -200.0 + (i // 40) * 20.0)
                for i, p in enumerate(names)
            )
        )
        await check(world, set(names), totals)
        began = time.monotonic()
        await world.drain("east")
        print(f"drain {players} players", flush=True)
        await world.wait_status("east", lambda s: s.state == 5)  # DRAINED
        drain_s = time.monotonic() - began
        await check(world, set(names), totals)
        await asyncio.sleep(0.5)  # one checkpoint interval after the drain
        killed = time.monotonic()
        world.kill("west")
        await world.start("west", WEST)
        print("kill -9 + restart", flush=True)
        await world.wait_status("west", lambda s: s.players >= players)
        recovery_s = time.monotonic() - killed
        await check(world, set(names), totals)
        await driver.close()
        return {"drain_players": players, "drain_s": drain_s, "recovery_s": recovery_s}
    finally:
        world.stop()


async def run(args: argparse.Namespace) -> dict[str, float]:
    server = LocalRedis()
    server.start()
    redis = Redis.from_url(server.url)
    totals = {"lost": 0, "duplicate": 0, "misrouted": 0}
    try:
        out = await crossing(redis, server.url, args.bots, args.seconds, totals)
        out.update(await drain_and_recover(redis, server.url, args.players, totals))
    finally:
        await redis.aclose()
        server.kill()
    out["bots"] = args.bots
    out["lost_entities"] = totals["lost"]
    out["duplicate_entities"] = totals["duplicate"]
    out["misrouted_players"] = totals["misrouted"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--players", type=int, default=500)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    targets = {"handoff_ms_p99": "< 100", "drain_s": "< 5", "recovery_s": "< 5"}
    print(f"{'metric':<22} {'value':>12}  target")
    for key, value in result.items():
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"{key:<22} {shown:>12}  {targets.get(key, '0' if 'entities' in key else '')}")
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
