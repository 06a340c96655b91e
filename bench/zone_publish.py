"""What a tick's snapshots cost a zone on their way to its relay links, by player
count: ``Links.publish`` (the tick's snapshots grouped per link and queued) and
the link's messages as gRPC writes them (``Links.outgoing``: chunks of 32, each
serialised), for players on ``--links`` relays. Two cases: ``delta`` (every
snapshot acknowledged, players standing still: small deltas, the steady case)
and ``full`` (nothing acknowledged: full snapshots, as when many players arrive
at once). Reported: thread CPU milliseconds per tick and microseconds per
snapshot (median of ``--repeats`` ticks). No gRPC or network: the bytes are what
a link's stream would carry.

    python bench/zone_publish.py --json PATH [--players 100,1000,4000] [--links 1] [--repeats 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from tessera.common.config import Env
from tessera.zone.config import ZoneConfig
from tessera.zone.links import Links
from tessera.zone.simulation import Frame, Simulation, warm_up

CHUNK = 32


def frames(players: int, *, acked: bool) -> tuple[Simulation, list[Frame]]:
    """A zone of ``players`` attached players spread over 400 m × 400 m (about
    100 entities in each view), and three consecutive frames of it."""
    cfg = ZoneConfig.from_env(Env({"TESSERA_ZONE_BOUNDS": "-500,-500,500,500"}))
    assert cfg.bounds is not None
    warm_up(cfg)
    sim = Simulation(cfg, area=cfg.bounds, seed=1)
    rng = np.random.default_rng(1)
    for i in range(players):
        x, z = rng.uniform(-200, 200, 2)
        sim.add_player(entity_id=i + 1, player_id=f"player-{i:05d}", pos=(x, 0.0, z), team=0)
        sim.attach(f"player-{i:05d}")
    out = []
    for _ in range(8):
        frame = sim.step()
        if acked:
            for p, s, q in zip(
                frame.players,
                frame.batch.stream.tolist(),
                frame.batch.sequence.tolist(),
                strict=True,
            ):
                sim.ack(p, s, q)
        out.append(frame)
    return sim, out[-3:]


async def measure(players: int, links_n: int, repeats: int, *, acked: bool) -> dict[str, Any]:
    sim, ticks = frames(players, acked=acked)
    links = Links(sim=sim, world="w", queue_size=1000, chunk=CHUNK)

    async def silent() -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield None

    opened = [links.open(f"relay-{k}", silent()) for k in range(links_n)]
    for i, player in enumerate(ticks[0].players):
        links.player_link[player] = opened[i % links_n].id
    streams = [aiter(links.outgoing(link)) for link in opened]
    chunks = [-(-len(range(k, players, links_n)) // CHUNK) for k in range(links_n)]
    per_tick = []
    for r in range(repeats + 3):
        cpu = time.thread_time()
        links.publish(ticks[r % 3])
        for stream, want in zip(streams, chunks, strict=True):
            for _ in range(want):
                msg = await anext(stream)
                if not isinstance(msg, bytes):  # as gRPC would
                    msg.SerializeToString()
        spent = time.thread_time() - cpu
        if r >= 3:  # the first rounds warm the allocator
            per_tick.append(spent)
        assert all(link.queue.empty() for link in opened)
    ms = statistics.median(per_tick) * 1e3
    return {
        "players": players,
        "links": links_n,
        "case": "delta" if acked else "full",
        "payload_bytes_per_tick": sum(len(p) for p in ticks[-1].batch.payloads),
        "ms_per_tick": round(ms, 3),
        "us_per_snapshot": round(ms * 1e3 / players, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--players", default="100,1000,4000")
    parser.add_argument("--links", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    records = []
    print(f"{'players':>8} {'case':>6} {'payload B':>10} {'ms/tick':>8} {'us/snapshot':>11}")
    for n in (int(p) for p in args.players.split(",")):
        for acked in (True, False):
            r = asyncio.run(measure(n, args.links, args.repeats, acked=acked))
            records.append(r)
            print(
                f"{n:>8} {r['case']:>6} {r['payload_bytes_per_tick']:>10} "
                f"{r['ms_per_tick']:>8.3f} {r['us_per_snapshot']:>11.3f}",
                flush=True,
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "links": args.links}
    args.json.write_text(
        json.dumps({"bench": "zone_publish", **meta, "records": records}, indent=2)
    )


if __name__ == "__main__":
    main()
