"""A burst of attaches: a zone that adopted a whole zone's players attaches them all.

Each round builds a fresh simulation, adopts ``--players`` players (as a
committed handoff does) and times attaching every one of them, which the zone
does on its event loop between ticks, then the first tick (a full snapshot for
each). Rounds alternate between per-client state grown by doubling on attach
and state reserved beforehand (what the zone does while the offers are held).

    python bench/zone_attach.py --json PATH [--players 200] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from tessera.common.config import Env
from tessera.zone.config import ZoneConfig
from tessera.zone.entities import Record
from tessera.zone.simulation import Simulation, warm_up

SIDE = 512.0


def records(cfg: ZoneConfig, players: int) -> list[Record]:
    """The durable state of ``players`` players spread over the zone."""
    assert cfg.bounds is not None
    src = Simulation(cfg, area=cfg.bounds, seed=1)
    rng = np.random.default_rng(1)
    for i in range(players):
        pos = (float(rng.uniform(0, SIDE)), 0.0, float(rng.uniform(0, SIDE)))
        src.add_player(entity_id=i + 1, player_id=f"p{i}", pos=pos, team=0)
    return [src.export_player(f"p{i}", "old") for i in range(players)]


def burst(cfg: ZoneConfig, recs: list[Record], *, reserve: bool) -> tuple[float, float]:
    """Milliseconds to attach every adopted player, and of the first tick."""
    assert cfg.bounds is not None
    sim = Simulation(cfg, area=cfg.bounds, seed=2)
    sim.step()
    if reserve:
        sim.reserve(len(recs))
    for rec in recs:
        sim.adopt(rec, epoch=2, now=time.monotonic())
    began = time.perf_counter()
    for rec in recs:
        sim.attach(rec.player_id)
    attach_ms = (time.perf_counter() - began) * 1000
    began = time.perf_counter()
    sim.step()
    return attach_ms, (time.perf_counter() - began) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the records")
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    cfg = ZoneConfig.from_env(
        Env({"TESSERA_ZONE_BOUNDS": f"0,0,{SIDE},{SIDE}", "TESSERA_TICK_HZ": "40"})
    )
    warm_up(cfg)
    recs = records(cfg, args.players)
    runs: dict[str, list[tuple[float, float]]] = {"grown": [], "reserved": []}
    for _ in range(args.rounds):
        for mode, samples in runs.items():
            samples.append(burst(cfg, recs, reserve=mode == "reserved"))
    out: list[dict[str, Any]] = []
    for mode, samples in runs.items():
        attach = [a for a, _ in samples]
        first = [f for _, f in samples]
        out.append(
            {
                "mode": mode,
                "players": args.players,
                "attach_ms_median": round(statistics.median(attach), 2),
                "attach_ms_max": round(max(attach), 2),
                "first_tick_ms_median": round(statistics.median(first), 2),
                "attach_ms": [round(a, 2) for a in attach],
            }
        )
        print(
            f"{mode:9} attach {args.players}: median {out[-1]['attach_ms_median']} ms,"
            f" max {out[-1]['attach_ms_max']} ms; first tick median"
            f" {out[-1]['first_tick_ms_median']} ms"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bench": "zone_attach", "records": out}, indent=2))


if __name__ == "__main__":
    main()
