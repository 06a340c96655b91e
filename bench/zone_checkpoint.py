"""What a zone's checkpoint costs its loop, by player count: the payloads of
every player built at once (``messages.Checkpoints``, the checkpoint's path: a
kernel writes the numeric fields, the rest is kept per player) against one
``EntityState`` message per player built from its record and serialised (the
handoff's path, and the checkpoint's before), on a zone that has ticked, with a
game module's components and one player in ten changing relay between rounds.
Reported: thread CPU milliseconds per checkpoint and microseconds per player
(median of ``--repeats`` rounds); both paths' payloads are checked to parse to
the same messages. No Redis: the ``HSET`` is the same for both.

    python bench/zone_checkpoint.py --json PATH [--players 100,1000,4000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tessera.common.config import Env
from tessera.v1 import zone_pb2
from tessera.zone import messages
from tessera.zone.config import ZoneConfig
from tessera.zone.simulation import Simulation, warm_up

GAME = "tessera.examples.resources"  # a module with components


def zone(players: int) -> Simulation:
    cfg = ZoneConfig.from_env(
        Env({"TESSERA_ZONE_BOUNDS": "-500,-500,500,500", "TESSERA_GAME_MODULE": GAME})
    )
    assert cfg.bounds is not None
    warm_up(cfg)
    messages.warm_up()
    sim = Simulation(cfg, area=cfg.bounds, seed=1)
    for i in range(players):
        pos = (float(i % 100) * 5 - 250, 0.0, float(i // 100) * 5 - 250)
        sim.add_player(entity_id=i + 1, player_id=f"p{i}", pos=pos, team=i % 3)
        sim.ents.move[i] = (0.6, 0.8)
    for _ in range(5):
        sim.step()
    return sim


def per_message(sim: Simulation, players: list[str]) -> dict[str, bytes]:
    return {
        p: messages.entity_state(sim.export_player(p, "z")).SerializeToString() for p in players
    }


def timed(build: Callable[[], dict[str, bytes]], sim: Simulation, round_: int) -> float:
    for k, eid in enumerate(sim.ents.players.values()):
        if k % 10 == round_ % 10:
            sim.ents.extra[eid].relay_id = f"relay-{round_}"
    cpu = time.thread_time()
    build()
    return time.thread_time() - cpu


def measure(players: int, repeats: int) -> dict[str, Any]:
    sim = zone(players)
    ids = list(sim.ents.players)
    checkpoints = messages.Checkpoints("z")
    fast, slow = checkpoints.payloads(sim.ents, ids), per_message(sim, ids)
    parse = zone_pb2.EntityState.FromString
    assert all(parse(fast[p]) == parse(slow[p]) for p in ids)
    times: dict[str, list[float]] = {"kernel": [], "messages": []}
    for r in range(repeats):
        times["kernel"].append(timed(lambda: checkpoints.payloads(sim.ents, ids), sim, r))
        times["messages"].append(timed(lambda: per_message(sim, ids), sim, r))
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {
        "players": players,
        "kernel_ms": round(ms["kernel"], 3),
        "messages_ms": round(ms["messages"], 3),
        "kernel_us_per_player": round(ms["kernel"] * 1e3 / players, 3),
        "messages_us_per_player": round(ms["messages"] * 1e3 / players, 3),
        "ratio": round(ms["messages"] / ms["kernel"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--players", default="100,1000,4000")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    records = [measure(int(n), args.repeats) for n in args.players.split(",")]
    report = {"bench": "zone_checkpoint", "load_average": load, "records": records}
    args.json.write_text(json.dumps(report, indent=2))
    print(f"{'players':>8} {'kernel ms':>10} {'messages ms':>12} {'ratio':>6}")
    for r in records:
        print(
            f"{r['players']:8d} {r['kernel_ms']:10.2f} {r['messages_ms']:12.2f} {r['ratio']:6.1f}"
        )


if __name__ == "__main__":
    main()
