"""AOI query comparison: scipy cKDTree k-nearest (the zone's query until issue 16)
vs the compiled uniform-grid kernel the zone uses (tessera.zone.kernels.visible).

Both answer the zone's whole interest rule for every player on crowd-shaped
positions (players gathered around a few hotspots plus NPCs spread uniformly):
the ``cap + cap // 4`` nearest within the far radius, then the ``cap`` of lowest
distance minus the combat bonus. Thread CPU time, best of several runs.

    python bench/zone_aoi.py --json PATH [--players 500,1000,2000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from tessera.zone.interest import Tiers, visible

HALF = 500.0
TIERS = Tiers()


def crowd(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.uniform(-HALF * 0.6, HALF * 0.6, (8, 2))
    group = rng.choice(8, n, p=rng.dirichlet(np.ones(8) * 2.0))
    players = centres[group] + rng.normal(0.0, 25.0, (n, 2))
    out: np.ndarray = np.clip(
        np.concatenate([players, rng.uniform(-HALF, HALF, (200, 2))]), -HALF, HALF
    )
    return out


def kdtree(pts: np.ndarray, n: int, boost: np.ndarray) -> np.ndarray:
    """The cKDTree query and top-``cap`` selection the zone ran before the kernel."""
    cap = TIERS.cap
    dist, idx = cKDTree(pts).query(pts[:n], k=cap + cap // 4, distance_upper_bound=TIERS.far)
    score = np.where(idx < len(pts), dist - boost[np.minimum(idx, len(pts) - 1)], np.inf)
    keep = np.argpartition(score, cap - 1, axis=1)[:, :cap]
    out: np.ndarray = np.take_along_axis(idx, keep, axis=1)
    return out


def grid(pts: np.ndarray, n: int, boost: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The zone's query now: the compiled grid kernel, views in id order."""
    return visible(pts, pts[:n], boost, ids, tiers=TIERS, width=TIERS.cap)


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.thread_time()
        fn()
        times.append(time.thread_time() - began)
    return round(min(times) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--players", default="500,1000,2000")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    records = []
    print(f"{'players':>7} {'kdtree ms':>10} {'grid kernel ms':>15}")
    for n in (int(p) for p in args.players.split(",")):
        pts = crowd(n, rng)
        ids = np.arange(1, len(pts) + 1, dtype=np.uint64)
        boost = np.where(rng.random(len(pts)) < 0.1, TIERS.combat_bonus_m, 0.0)
        grid(pts, n, boost, ids)  # compile or load
        record = {
            "players": n,
            "kdtree_ms": best_ms(partial(kdtree, pts, n, boost), 5),
            "grid_kernel_ms": best_ms(partial(grid, pts, n, boost, ids), 5),
        }
        records.append(record)
        print(f"{n:>7} {record['kdtree_ms']:>10.2f} {record['grid_kernel_ms']:>15.2f}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bench": "zone_aoi", "records": records}, indent=2))


if __name__ == "__main__":
    main()
