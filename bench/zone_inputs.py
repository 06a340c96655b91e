"""What a relay's input batch costs a zone, by batch size: the ZoneLink message
decoded from its bytes (as gRPC hands it over) and taken by the zone's link
reader (``Links._inputs``: attachment check, columns, validation, rate bucket,
buffer), for 1,000 attached players.

The relay flushes each zone link's inputs every ``RELAY_BATCH_MS`` (0.5 ms), so
a zone whose players send 30 inputs a second gets batches of a few to a few tens
of inputs; one batch per tick (the zone tick benchmark's way) is the cheap end.
Reported per batch size: thread CPU microseconds per batch and per input
(median of ``--repeats`` rounds, each of at least ``--inputs`` inputs).

    python bench/zone_inputs.py --json PATH [--sizes 1,4,16,64,1000] [--inputs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from tessera.common.config import Env
from tessera.v1 import zone_pb2
from tessera.zone import inputs
from tessera.zone.config import ZoneConfig
from tessera.zone.links import Link, Links
from tessera.zone.simulation import Simulation, warm_up

PLAYERS = 1000
HZ = 30


def zone() -> tuple[Links, Link, Simulation]:
    """A zone of PLAYERS attached players on one relay link."""
    cfg = ZoneConfig.from_env(
        Env({"TESSERA_ZONE_BOUNDS": "-500,-500,500,500", "TESSERA_TICK_HZ": str(HZ)})
    )
    assert cfg.bounds is not None
    warm_up(cfg)
    sim = Simulation(cfg, area=cfg.bounds, seed=1)
    links = Links(sim=sim, world="w", queue_size=16)
    link = Link(1, "relay-0", asyncio.Queue(16))
    for i in range(PLAYERS):
        sim.add_player(entity_id=i + 1, player_id=f"p{i}", pos=(0.0, 0.0, 0.0), team=0)
        sim.attach(f"p{i}")
        link.players.add(f"p{i}")
    return links, link, sim


def batches(size: int, count: int, first: int) -> list[bytes]:
    """``count`` serialized ZoneLinkUp input batches of ``size`` inputs, players in
    turn, sequences rising from ``first``."""
    out = []
    for k in range(count):
        up = zone_pb2.ZoneLinkUp()
        for j in range(size):
            n = k * size + j
            up.inputs.inputs.add(
                player_id=f"p{n % PLAYERS}",
                sequence=first + n // PLAYERS,
                move_x=0.6,
                move_z=0.8,
                yaw=1.0,
                actions=0,
                rtt_ms=40.0,
                interp_delay_ms=100.0,
                client_time_ms=float(n),
            )
        out.append(up.SerializeToString())
    return out


def measure(size: int, total: int, repeats: int) -> dict[str, Any]:
    links, link, sim = zone()
    count = max(1, total // size)
    per_batch = []
    first = 1
    for _ in range(repeats):
        raw = batches(size, count, first)
        first += count * size // PLAYERS + 1
        sim.ents.tokens[: sim.ents.n] = inputs.BURST_S * HZ  # a full bucket: all are taken
        cpu = time.thread_time()
        for k, data in enumerate(raw):
            links._inputs(link, zone_pb2.ZoneLinkUp.FromString(data).inputs)
            if k % 16 == 15:  # a tick takes one from each buffer
                sim.ents.queued[: sim.ents.n] = 0
        per_batch.append((time.thread_time() - cpu) / count)
    accepted = sim.counts["accepted"]
    assert accepted == count * size * repeats, (accepted, sim.counts)
    us = statistics.median(per_batch) * 1e6
    return {
        "batch": size,
        "batches": count * repeats,
        "accepted": accepted,
        "cpu_us_per_batch": round(us, 2),
        "cpu_us_per_input": round(us / size, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--sizes", default="1,4,16,64,1000")
    parser.add_argument("--inputs", type=int, default=10000, help="per round, at most 10 a player")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    records = [measure(int(s), args.inputs, args.repeats) for s in args.sizes.split(",")]
    report = {"bench": "zone_inputs", "load_average": load, "records": records}
    args.json.write_text(json.dumps(report, indent=2))
    print(f"{'batch':>6} {'us/batch':>10} {'us/input':>9}")
    for r in records:
        print(f"{r['batch']:6d} {r['cpu_us_per_batch']:10.1f} {r['cpu_us_per_input']:9.2f}")


if __name__ == "__main__":
    main()
