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

from tessera.zone import kernels

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


def take_due(
    views: Views,
    clients: I64,
    *,
    viewers: F64,
    pos: F64,
    entity_ids: U64,
    table: npt.NDArray[np.int32],
    beat: int,
    tiers: Tiers,
) -> Bools:
    """Refresh the values each client (view row ``clients``, standing at ``viewers``
    (C, 2) as x, z) is sent in its ``beat``-th snapshot, in ``views.sent``; which
    view slots hold an entity (C, cap). Due slots (near; mid every ``mid_every``-th
    and far every ``far_every``-th beat, staggered by entity id; new to the
    client) take fresh values from the quantized ``table``, the rest keep what was
    last sent."""
    c = clients.size
    valid = np.empty((c, views.cap), np.bool_)
    kernels.take_due(
        np.ascontiguousarray(clients, np.int64),
        np.ascontiguousarray(viewers, np.float64).reshape(c, 2),
        views.rows,
        views.known,
        views.sent,
        np.ascontiguousarray(pos, np.float64).reshape(-1, 3),
        np.ascontiguousarray(entity_ids, np.uint64),
        np.ascontiguousarray(table, np.int32).reshape(-1, views.columns),
        beat,
        tiers.near**2,
        tiers.mid**2,
        tiers.mid_every,
        tiers.far_every,
        valid,
    )
    return valid


class Views:
    """Each client's current view: member ids (ascending), their entity rows, the
    values last sent for them, and a membership version.

    Members are recomputed every ``refresh_every`` ticks per client; between
    refreshes the set is fixed and only the values change. An entity removed
    from the zone stays in place as an invalid member (row -1) until then.
    """

    def __init__(self, cap: int, columns: int, pad: np.uint64, rows: int = 16) -> None:
        self.cap, self.columns, self.pad = cap, columns, pad
        self.ids = np.full((rows, cap), pad, np.uint64)
        self.rows = np.full((rows, cap), -1, np.int64)
        self.sent = np.zeros((rows, cap, columns), np.int32)
        self.known = np.zeros((rows, cap), np.bool_)
        self.version = np.zeros(rows, np.int64)

    def reset(self, row: int) -> None:
        """Empty a client's view (grows the arrays to hold ``row``)."""
        if row >= self.ids.shape[0]:
            size = max(row + 1, self.ids.shape[0] * 2)
            for name in ("ids", "rows", "sent", "known", "version"):
                old = getattr(self, name)
                grown = np.zeros((size, *old.shape[1:]), old.dtype)
                grown[: old.shape[0]] = old
                setattr(self, name, grown)
        self.ids[row] = self.pad
        self.rows[row] = -1
        self.known[row] = False
        self.version[row] += 1

    def refresh(self, clients: I64, ids: U64, rows: I64) -> None:
        """New members for some clients; values already sent carry over
        (:func:`tessera.zone.kernels.refresh_views`). Rows matter too: an entity
        that left (row -1) and came back under the same id (handed away, then
        mirrored here as a ghost) must get its new row."""
        kernels.refresh_views(
            np.ascontiguousarray(clients, np.int64),
            np.ascontiguousarray(ids, np.uint64),
            np.ascontiguousarray(rows, np.int64),
            self.pad,
            self.ids,
            self.rows,
            self.sent,
            self.known,
            self.version,
        )

    def removed(self, row: int, last: int) -> None:
        """Entity ``row`` was swap-removed: it vanishes, the last row moves into its place."""
        self.rows[self.rows == row] = -1
        if last != row:
            self.rows[self.rows == last] = row
