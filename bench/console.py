"""Console benchmark: one frame of a 50-zone, 10,000-player world.

    python bench/console.py --json PATH [--zones 50] [--players 10000] [--frames 40]

A real redis-server holds ``--zones`` synthetic zone heartbeats (a grid of
zones, ``--players`` players spread over them, every player position in the
heartbeat's sample: at most 512 per zone), the zone map and 100 scaling events.
Between frames every player moves a few metres and each zone's tick times and
handoff counters change, as in a busy world. Measured, per frame:

- ``aggregate_ms``: what the console's feed does once per interval for all
  viewers: read the world from Redis (``ConsoleStore.snapshot``) and build the
  frame (``Aggregator.frame``);
- ``build_ms``: the pure part of it (density grid, borders, tables);
- ``delta_ms``: the delta from the previous frame, encoded as one SSE event;
- ``full_bytes``: a full frame (what a new viewer gets first);
- ``delta_bytes``: a delta of the busy world, and ``idle_delta_bytes`` of a
  world where no heartbeat changed;
- ``fanout_ms``: one ``Feed.step`` with 1,000 viewers subscribed (aggregation
  included), i.e. the cost of viewers on top of the aggregation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tessera.common import store
from tessera.common.store import Client
from tessera.console import frame
from tessera.console.feed import Aggregator, Feed, event
from tessera.console.frame import RelayRow, World
from tessera.console.store import ConsoleStore
from tessera.harness.redis import LocalRedis
from tessera.v1 import common_pb2, zone_pb2
from tessera.wire.geometry import Rect

WORLD = "bench"
ZONE_M = 500.0
CELLS = 48
VIEWERS = 1000


def layout(zones: int) -> dict[str, Rect]:
    """``zones`` rectangles of ZONE_M, ten to a row."""
    cols = min(zones, 10)
    return {
        f"{WORLD}-{i}": Rect(
            (i % cols) * ZONE_M,
            (i // cols) * ZONE_M,
            (i % cols + 1) * ZONE_M,
            (i // cols + 1) * ZONE_M,
        )
        for i in range(zones)
    }


class Synthetic:
    """Players walking in their zones, written as heartbeats."""

    def __init__(self, rects: dict[str, Rect], players: int, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.rects = rects
        per = players // len(rects)
        self.counts = {name: per for name in rects}
        first = next(iter(rects))
        self.counts[first] += players - per * len(rects)
        self.pos = {
            name: np.column_stack(
                [
                    self.rng.uniform(r.min_x, r.max_x, self.counts[name]),
                    self.rng.uniform(r.min_z, r.max_z, self.counts[name]),
                ]
            )
            for name, r in rects.items()
        }
        self.handoffs = dict.fromkeys(rects, 0)

    def move(self) -> None:
        for name, r in self.rects.items():
            p = self.pos[name] + self.rng.normal(0, 3.0, self.pos[name].shape)
            p[:, 0] = p[:, 0].clip(r.min_x, r.max_x - 0.01)
            p[:, 1] = p[:, 1].clip(r.min_z, r.max_z - 0.01)
            self.pos[name] = p
            self.handoffs[name] += int(self.rng.integers(0, 20))

    def status(self, name: str, now_ms: float) -> zone_pb2.ZoneStatus:
        r, p = self.rects[name], self.pos[name]
        sample = p if len(p) <= 512 else p[self.rng.choice(len(p), 512, replace=False)]
        return zone_pb2.ZoneStatus(
            zone=common_pb2.ZoneRef(world=WORLD, zone=name),
            address="127.0.0.1:1",
            bounds=common_pb2.Bounds(min_x=r.min_x, min_z=r.min_z, max_x=r.max_x, max_z=r.max_z),
            state=zone_pb2.ZONE_STATE_ACTIVE,
            players=self.counts[name],
            tick_hz=30,
            tick_p50_ms=float(self.rng.uniform(2, 4)),
            tick_p99_ms=float(self.rng.uniform(5, 12)),
            overload_level=int(self.rng.integers(0, 2)),
            handoffs_received=self.handoffs[name],
            updated_at_ms=now_ms,
            sample_x=sample[:, 0].tolist(),
            sample_z=sample[:, 1].tolist(),
        )

    async def write(self, redis: Client) -> None:
        keys = store.WorldKeys(WORLD)
        now_ms = time.time() * 1000
        async with redis.pipeline(transaction=False) as pipe:
            for name in self.rects:
                pipe.sadd(keys.zones, name)
                pipe.set(keys.zone_status(name), self.status(name, now_ms).SerializeToString())
            await pipe.execute()


async def prepare(redis: Client, rects: dict[str, Rect]) -> None:
    keys = store.WorldKeys(WORLD)
    zone_map = zone_pb2.ZoneMap(world=WORLD, version=1)
    world = Rect(
        min(r.min_x for r in rects.values()),
        min(r.min_z for r in rects.values()),
        max(r.max_x for r in rects.values()),
        max(r.max_z for r in rects.values()),
    )
    zone_map.world_bounds.CopyFrom(
        common_pb2.Bounds(
            min_x=world.min_x, min_z=world.min_z, max_x=world.max_x, max_z=world.max_z
        )
    )
    for name, r in rects.items():
        zone_map.zones.add(
            zone=name,
            address="127.0.0.1:1",
            state=zone_pb2.ZONE_STATE_ACTIVE,
            bounds=common_pb2.Bounds(min_x=r.min_x, min_z=r.min_z, max_x=r.max_x, max_z=r.max_z),
        )
    await redis.set(keys.zone_map, zone_map.SerializeToString())
    for i in range(100):
        zone = f"{WORLD}-{i % len(rects)}"
        await redis.xadd(keys.events, {"decision": "Split", "zone": zone, "reason": f"event {i}"})


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
        "max": round(ordered[-1], 3),
    }


async def relays() -> list[RelayRow]:
    return [RelayRow(f"relay-{i}:50051", f"relay-{i}", 10_000 // 4, True) for i in range(4)]


async def measure(redis_url: str, zones: int, players: int, frames: int) -> dict[str, Any]:
    redis = store.connect(redis_url)
    rects = layout(zones)
    world = Synthetic(rects, players)
    await prepare(redis, rects)
    await world.write(redis)
    console_store = ConsoleStore(redis, WORLD)
    aggregator = Aggregator(console_store, relays, cells=CELLS, aura_m=60.0)
    aggregate_ms, build_ms, delta_ms, delta_bytes = [], [], [], []
    previous = await aggregator.frame()
    full_bytes = len(event("full", previous))
    for _ in range(frames):
        world.move()
        await world.write(redis)
        started = time.perf_counter()
        current = await aggregator.frame()
        aggregate_ms.append((time.perf_counter() - started) * 1000)
        snap = await console_store.snapshot()
        view = World(
            WORLD,
            snap.zone_map.bounds,
            snap.zone_map.version,
            snap.zone_map.zones,
            snap.zones,
            snap.events,
            await relays(),
            snap.matches,
            time.time() * 1000,
        )
        started = time.perf_counter()
        frame.build(view, aggregator.rates, cells=CELLS, aura_m=60.0)
        build_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        data = event("delta", frame.delta(previous, current))
        delta_ms.append((time.perf_counter() - started) * 1000)
        delta_bytes.append(len(data))
        previous = current
    idle = len(event("delta", frame.delta(previous, await aggregator.frame())))

    feed = Feed(aggregator.frame, 1.0)
    await feed.step()
    queues = [feed.subscribe() for _ in range(VIEWERS)]
    fanout_ms = []
    for _ in range(5):
        world.move()
        await world.write(redis)
        started = time.perf_counter()
        await feed.step()
        fanout_ms.append((time.perf_counter() - started) * 1000)
        for q in queues:
            while not q.empty():
                q.get_nowait()
    await redis.aclose()
    return {
        "zones": zones,
        "players": players,
        "frames": frames,
        "grid_cells": CELLS,
        "aggregate_ms": stats(aggregate_ms),
        "build_ms": stats(build_ms),
        "delta_ms": stats(delta_ms),
        "full_bytes": full_bytes,
        "delta_bytes": stats([float(b) for b in delta_bytes]),
        "idle_delta_bytes": idle,
        "fanout_ms": stats(fanout_ms),
        "viewers": VIEWERS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--zones", type=int, default=50)
    parser.add_argument("--players", type=int, default=10_000)
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    server = LocalRedis(Path(tempfile.mkdtemp(prefix="tessera-bench-console-")))
    server.start()
    try:
        results = asyncio.run(measure(server.url, args.zones, args.players, args.frames))
    finally:
        server.stop()
    print(f"{args.zones} zones, {args.players:,} players, {args.frames} frames")
    print(f"{'metric':<22}{'p50':>10}{'p99':>10}{'max':>10}")
    for name in ("aggregate_ms", "build_ms", "delta_ms", "delta_bytes", "fanout_ms"):
        s = results[name]
        print(f"{name:<22}{s['p50']:>10,.1f}{s['p99']:>10,.1f}{s['max']:>10,.1f}")
    print(f"full_bytes {results['full_bytes']:,}; idle_delta_bytes {results['idle_delta_bytes']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
