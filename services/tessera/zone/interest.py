"""Area of interest: which entities each client sees, and how often each refreshes.

Each client sees at most ``cap`` entities within the far radius: of the
``cap + cap // 4`` nearest, those of lowest priority (distance, minus a bonus
for entities in combat recently, so fights near the edge of a crowded view are
not the ones dropped). The search is :func:`tessera.zone.kernels.visible`, a
compiled uniform-grid kernel searched ring by ring from each viewer
(docs/ZONE.md "Compiled kernels").

Tiers: near entities refresh in every snapshot, mid every ``mid_every``-th tick
and far every ``far_every``-th tick (staggered by entity id so far updates are
spread over ticks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.zone import kernels

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]


GRID_CELL_M = 25.0  # interest grid cell: a few rings hold a crowded view
NO_COMPONENTS = np.zeros(3, np.int64)  # tier bitmasks of a world replicating no component


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


def visible(xz: F64, viewers: F64, boost: F64, entity_ids: U64, *, tiers: Tiers, width: int) -> I64:
    """Rows (C, ``width``) of the entities each viewer (x, z) sees among the
    entities at ``xz``, ascending by entity id, padded with -1 (``width`` >= cap)."""
    c, n = viewers.shape[0], xz.shape[0]
    out = np.empty((c, width), np.int64)
    kernels.visible(
        np.ascontiguousarray(xz, np.float64).reshape(n, 2),
        np.ascontiguousarray(viewers, np.float64).reshape(c, 2),
        np.ascontiguousarray(boost, np.float64),
        np.ascontiguousarray(entity_ids, np.uint64),
        tiers.far,
        min(n, tiers.cap + tiers.cap // 4),
        tiers.cap,
        GRID_CELL_M,
        out,
    )
    return out


@dataclass(frozen=True)
class Due:
    """The tier schedule of one tick's snapshots: the clients (view rows) standing
    at ``viewers`` (C, 2) as x, z, the entities' ``pos`` and ids, the quantized
    ``table`` due slots take their values from, the replicated components each
    tier carries (``tier_bits``, near, mid, far) and ``valid`` (C, cap), filled
    with which view slots hold an entity. Built by :func:`due`, applied by
    :meth:`tessera.zone.snapshot.SnapshotEncoder.encode_due` as it encodes."""

    clients: I64
    viewers: F64
    pos: F64
    entity_ids: U64
    table: npt.NDArray[np.int32]
    beat: int
    near2: float
    mid2: float
    mid_every: int
    far_every: int
    tier_bits: I64
    valid: Bools


def due(
    views: Views,
    clients: I64,
    *,
    viewers: F64,
    pos: F64,
    entity_ids: U64,
    table: npt.NDArray[np.int32],
    beat: int,
    tiers: Tiers,
    tier_bits: I64 = NO_COMPONENTS,
) -> Due:
    """The schedule of the ``beat``-th snapshot of each client (view row
    ``clients``, standing at ``viewers``): due slots (near; mid every
    ``mid_every``-th and far every ``far_every``-th beat, staggered by entity id;
    new to the client) take fresh values from the quantized ``table``, with the
    replicated components their tier carries (``tier_bits``), the rest keep
    what was last sent."""
    c = clients.size
    return Due(
        clients=np.ascontiguousarray(clients, np.int64),
        viewers=np.ascontiguousarray(viewers, np.float64).reshape(c, 2),
        pos=np.ascontiguousarray(pos, np.float64).reshape(-1, 3),
        entity_ids=np.ascontiguousarray(entity_ids, np.uint64),
        table=np.ascontiguousarray(table, np.int32).reshape(-1, views.columns),
        beat=beat,
        near2=tiers.near**2,
        mid2=tiers.mid**2,
        mid_every=tiers.mid_every,
        far_every=tiers.far_every,
        tier_bits=np.ascontiguousarray(tier_bits, np.int64),
        valid=np.empty((c, views.cap), np.bool_),
    )


_VIEW_ARRAYS = ("ids", "rows", "sent", "known", "version")


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

    def allocate(self, clients: int) -> dict[str, npt.NDArray[Any]] | None:
        """Arrays for at least ``clients`` client rows (at least doubling), faulted in
        now; None if there is room. Safe on a worker thread, as
        :meth:`tessera.zone.snapshot.SnapshotEncoder.allocate`."""
        held = self.ids.shape[0]
        if clients <= held:
            return None
        size = max(clients, held * 2)
        held_arrays = {name: getattr(self, name) for name in _VIEW_ARRAYS}
        return {name: np.full((size, *a.shape[1:]), 0, a.dtype) for name, a in held_arrays.items()}

    def install(self, grown: dict[str, npt.NDArray[Any]] | None) -> None:
        """Take arrays from :meth:`allocate`, the rows held copied in (nothing happens
        if as many rows are held already)."""
        if grown is None or grown["ids"].shape[0] <= self.ids.shape[0]:
            return
        for name, new in grown.items():
            old = getattr(self, name)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def reserve(self, clients: int) -> None:
        """Room for at least ``clients`` client rows, in one allocation (at least doubling)."""
        self.install(self.allocate(clients))

    def reset(self, row: int) -> None:
        """Empty a client's view (grows the arrays to hold ``row``)."""
        self.reserve(row + 1)
        self.ids[row] = self.pad
        self.rows[row] = -1
        self.known[row] = False
        self.version[row] += 1

    def refresh(self, clients: I64, rows: I64, entity_ids: U64) -> None:
        """New members for some clients: entity ``rows`` (C, cap) in ascending id
        order, -1 padded, as :func:`visible` returns them; values already sent
        carry over (:func:`tessera.zone.kernels.refresh_views`). Rows matter too:
        an entity that left (row -1) and came back under the same id (handed
        away, then mirrored here as a ghost) must get its new row."""
        kernels.refresh_views(
            np.ascontiguousarray(clients, np.int64),
            np.ascontiguousarray(rows, np.int64),
            np.ascontiguousarray(entity_ids, np.uint64),
            self.pad,
            self.ids,
            self.rows,
            self.sent,
            self.known,
            self.version,
        )

    def removed(self, row: int, last: int) -> None:
        """Entity ``row`` was swap-removed: it vanishes, the last row moves into its place
        (``rows`` is C-contiguous, as allocated here, so the flat view writes through)."""
        kernels.swap_removed(self.rows.reshape(-1), row, last)
