"""Area of interest: which entities each client sees, and how often each refreshes.

Uses scipy's cKDTree: one tree over all entities per tick, then a batched
k-nearest query (k = cap plus slack, bounded by the far radius) for the clients
whose membership is due. The query is C code returning a dense (clients, k)
matrix, which is exactly the per-client cap; a numpy grid needs a ragged
gather plus a per-client top-k over every entity within 200 m, which measured
slower at crowd densities (docs/ZONE.md). Priority is distance, minus a bonus
for entities in combat recently, so fights near the edge of a crowded view are
not the ones dropped.

Tiers: near entities refresh in every snapshot, mid every ``mid_every``-th tick
and far every ``far_every``-th tick (staggered by entity id so far updates are
spread over ticks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Tiers:
    """AOI radii, refresh rates and the per-client cap."""

    near: float = 50.0
    mid: float = 100.0
    far: float = 200.0
    mid_every: int = 3
    far_every: int = 6
    cap: int = 100
    combat_bonus_m: float = 30.0
    refresh_every: int = 3


def visible(
    tree: cKDTree, viewers: F64, n_entities: int, boost: F64, *, tiers: Tiers
) -> tuple[I64, F64]:
    """Rows (C, cap) of the entities each viewer sees (``n_entities`` where empty)
    and their distances, chosen by priority among the nearest candidates."""
    c = viewers.shape[0]
    if c == 0 or n_entities == 0:
        return np.full((c, tiers.cap), n_entities, np.int64), np.full((c, tiers.cap), np.inf)
    k = min(n_entities, tiers.cap + tiers.cap // 4)
    dist, idx = tree.query(viewers, k=k, distance_upper_bound=tiers.far)
    dist = np.asarray(dist, np.float64).reshape(c, k)
    idx = np.asarray(idx, np.int64).reshape(c, k)
    if k > tiers.cap:
        found = idx < n_entities
        score = np.where(found, dist - boost[np.minimum(idx, n_entities - 1)], np.inf)
        keep = np.argpartition(score, tiers.cap - 1, axis=1)[:, : tiers.cap]
        idx = np.take_along_axis(idx, keep, axis=1)
        dist = np.take_along_axis(dist, keep, axis=1)
    if idx.shape[1] < tiers.cap:
        pad = tiers.cap - idx.shape[1]
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=n_entities)
        dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
    return idx, dist


def due(dist: F64, ids: U64, tick: int, *, tiers: Tiers) -> Bools:
    """Whether each visible entity's state refreshes in this tick's snapshot."""
    phase = (ids + np.uint64(tick)).astype(np.int64)
    mid_due = phase % tiers.mid_every == 0
    far_due = phase % tiers.far_every == 0
    return np.where(dist <= tiers.near, True, np.where(dist <= tiers.mid, mid_due, far_due))
