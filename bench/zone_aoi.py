"""AOI structure comparison: scipy cKDTree k-nearest vs a numpy uniform grid.

Both answer the zone's interest query for every player: the nearest ``cap``
entities within the far radius (200 m), on crowd-shaped positions (players
gathered around a few hotspots plus NPCs spread uniformly). The zone uses the
faster one (cKDTree); this benchmark is the evidence.

    python bench/zone_aoi.py --json PATH
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

FAR, CAP, CELL, HALF = 200.0, 125, 50.0, 500.0


def crowd(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.uniform(-HALF * 0.6, HALF * 0.6, (8, 2))
    group = rng.choice(8, n, p=rng.dirichlet(np.ones(8) * 2.0))
    players = centres[group] + rng.normal(0.0, 25.0, (n, 2))
    out: np.ndarray = np.clip(
        np.concatenate([players, rng.uniform(-HALF, HALF, (200, 2))]), -HALF, HALF
    )
    return out


def kdtree(pts: np.ndarray, n: int) -> np.ndarray:
    _, idx = cKDTree(pts).query(pts[:n], k=CAP, distance_upper_bound=FAR)
    out: np.ndarray = idx
    return out


def grid(pts: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Candidate pairs from the cells covering the far radius, filtered and ranked."""
    width = int(2 * HALF / CELL) + 1
    reach = int(np.ceil(FAR / CELL))
    cell = np.floor((pts + HALF) / CELL).astype(np.int64)
    key = cell[:, 0] * width + cell[:, 1]
    order = np.argsort(key)
    sorted_key = key[order]
    cells = np.arange(width * width)
    starts = np.searchsorted(sorted_key, cells)
    ends = np.searchsorted(sorted_key, cells, side="right")
    offs = np.array(
        [(dx, dz) for dx in range(-reach, reach + 1) for dz in range(-reach, reach + 1)]
    )
    vc = cell[:n][:, None, :] + offs[None]
    ok = (vc >= 0).all(2) & (vc < width).all(2)
    ck = np.where(ok, vc[..., 0] * width + vc[..., 1], 0)
    a, b = np.where(ok, starts[ck], 0), np.where(ok, ends[ck], 0)
    cnt = (b - a).ravel()
    viewer = np.repeat(np.repeat(np.arange(n), offs.shape[0]), cnt)
    run = np.repeat(np.cumsum(cnt) - cnt, cnt)
    ent = order[np.repeat(a.ravel(), cnt) + np.arange(cnt.sum()) - run]
    dist = np.linalg.norm(pts[ent] - pts[viewer], axis=1)
    keep = dist <= FAR
    viewer, ent, dist = viewer[keep], ent[keep], dist[keep]
    o = np.lexsort((dist, viewer))
    viewer, ent = viewer[o], ent[o]
    rank = np.arange(viewer.size) - np.searchsorted(viewer, np.arange(n))[viewer]
    return ent[rank < CAP], int(cnt.sum())


def best_ms(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - began)
    return round(min(times) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--players", default="500,1000,2000")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    records = []
    print(f"{'players':>7} {'kdtree ms':>10} {'grid ms':>10} {'grid pairs':>11}")
    for n in (int(p) for p in args.players.split(",")):
        pts = crowd(n, rng)
        _, pairs = grid(pts, n)
        record = {
            "players": n,
            "kdtree_ms": best_ms(lambda pts=pts, n=n: kdtree(pts, n), 5),
            "grid_ms": best_ms(lambda pts=pts, n=n: grid(pts, n), 3),
            "grid_candidate_pairs": pairs,
        }
        records.append(record)
        print(
            f"{n:>7} {record['kdtree_ms']:>10.2f} {record['grid_ms']:>10.2f} {pairs:>11}",
            flush=True,
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bench": "zone_aoi", "records": records}, indent=2))


if __name__ == "__main__":
    main()
