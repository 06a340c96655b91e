"""Autoscaling benchmark: how long the planner takes for a world of 1,000 zones.

    python bench/autoscale.py --json PATH [--zones 1000] [--rounds 200]

Builds a managed world of ``--zones`` zones with the planner's own initial
layout (so the split tree is real), then times ``plan()`` over ``--rounds``
rounds of changing load: every round a few percent of the zones are over the
high-water mark (with 512 position samples each) and many sibling pairs are
under the low-water mark, so splits, merges and the window bookkeeping all run.
Each round's plan is applied, so the layout keeps changing.

``split_reaction_s`` and ``merge_drain_s`` need zone processes with working
handoff (the local runtime end to end); they are reported as not measured.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

from tessera.operator.planner import (
    Desired,
    Memory,
    Phase,
    Policy,
    Rect,
    WorldSpec,
    ZoneView,
    advance,
    plan,
)

NOT_MEASURED = {
    "split_reaction_s": "needs the local runtime with zone handoff (issue 6); not run end to end",
    "merge_drain_s": "needs the local runtime with zone handoff (issue 6); not run end to end",
}


def build_world(zones: int) -> tuple[WorldSpec, list[ZoneView], Memory]:
    policy = Policy(
        min_zones=zones,
        max_zones=zones + zones // 20,
        min_zone_size=50,
        max_depth=16,
        split_window_s=2,
        merge_window_s=2,
        cooldown_s=4,
    )
    world = WorldSpec("bench", Rect(0, 0, 32_768, 32_768), policy, standby=4)
    first = plan(world, [], now=0.0)
    layout = [replace(z, phase=Phase.READY) for z in advance([], first.actions)]
    # Let the layout move within 5 % of the initial count.
    world = replace(world, policy=replace(policy, min_zones=zones - zones // 20))
    return world, layout, first.memory


def load(zones: list[ZoneView], rng: random.Random, hot: set[str]) -> list[ZoneView]:
    out = []
    for z in zones:
        if z.desired != Desired.ACTIVE or z.bounds is None:
            out.append(replace(z, phase=Phase.READY if z.phase == Phase.PENDING else z.phase))
            continue
        b = z.bounds
        is_hot = z.name in hot
        players = rng.randint(301, 900) if is_hot else rng.randint(0, 60)
        n = min(players, 512)
        out.append(
            replace(
                z,
                phase=Phase.READY,
                players=players,
                sample_x=[rng.uniform(b.min_x, b.max_x) for _ in range(n)] if is_hot else [],
                sample_z=[rng.uniform(b.min_z, b.max_z) for _ in range(n)] if is_hot else [],
            )
        )
    return out


def run(zone_count: int, rounds: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    world, zones, memory = build_world(zone_count)
    durations: list[float] = []
    actions = 0
    now = 0.0
    sizes = []
    hot: set[str] = set()
    for round_ in range(rounds):
        now += 1.0
        if round_ % 10 == 0:  # a new 3 % of the zones gets crowded for 10 s
            names = sorted(z.name for z in zones)
            hot = set(rng.sample(names, k=max(1, len(names) * 3 // 100)))
        observed = load(zones, rng, hot)
        # Draining zones finish: report them drained.
        observed = [
            replace(z, phase=Phase.DRAINED) if z.desired == Desired.DRAINING else z
            for z in observed
        ]
        sizes.append(sum(1 for z in observed if z.desired == Desired.ACTIVE))
        start = time.perf_counter()
        result = plan(world, observed, now, memory)
        durations.append((time.perf_counter() - start) * 1000)
        memory = result.memory
        actions += len(result.actions)
        zones = advance(observed, result.actions)
    durations.sort()
    return {
        "zones_min": min(sizes),
        "zones_max": max(sizes),
        "rounds": rounds,
        "actions_total": actions,
        "planner_ms_p50": round(statistics.median(durations), 3),
        "planner_ms_p99": round(durations[min(len(durations) - 1, int(0.99 * len(durations)))], 3),
        "planner_ms_max": round(durations[-1], 3),
        "not_measured": NOT_MEASURED,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--zones", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    results = run(args.zones, args.rounds, args.seed)
    print(f"{'metric':<22} value")
    for key, value in results.items():
        if key != "not_measured":
            print(f"{key:<22} {value}")
    for key, why in NOT_MEASURED.items():
        print(f"{key:<22} not measured: {why}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bench": "autoscale", **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
