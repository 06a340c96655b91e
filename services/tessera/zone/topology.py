"""The world's zone map as plain data: who owns a point, who borders whom, and
which entities must move to another zone.

Pure functions over a :class:`Topology` (the shell builds it from a ``ZoneMap``:
:func:`tessera.zone.messages.topology`); the zone keeps the newest version it
has seen and re-evaluates on every change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tessera.wire.geometry import Rect

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ZoneArea:
    """One zone of the map."""

    zone: str
    address: str
    rect: Rect


@dataclass(frozen=True)
class Topology:
    """A versioned partition of the world into zone rectangles."""

    version: int
    world: Rect
    zones: tuple[ZoneArea, ...]

    def area(self, zone: str) -> ZoneArea | None:
        return next((a for a in self.zones if a.zone == zone), None)

    def owner(self, x: float, z: float) -> str | None:
        """The zone whose half-open rectangle contains the point."""
        for a in self.zones:
            r = a.rect
            if r.min_x <= x < r.max_x and r.min_z <= z < r.max_z:
                return a.zone
        return None

    def owners(self, xz: F64, *, exclude: str = "") -> list[str | None]:
        """Owner of each point (``None`` where no zone, or only ``exclude``, owns it)."""
        out: list[str | None] = [None] * len(xz)
        left = np.ones(len(xz), bool)
        for a in self.zones:
            if a.zone == exclude or not left.any():
                continue
            r = a.rect
            inside = (
                left
                & (xz[:, 0] >= r.min_x)
                & (xz[:, 0] < r.max_x)
                & (xz[:, 1] >= r.min_z)
                & (xz[:, 1] < r.max_z)
            )
            for i in np.flatnonzero(inside).tolist():
                out[i] = a.zone
            left &= ~inside
        return out

    def neighbours(self, zone: str, margin: float) -> list[ZoneArea]:
        """Zones whose rectangle comes within ``margin`` of ``zone``'s (corners included)."""
        me = self.area(zone)
        if me is None:
            return []
        grown = expand(me.rect, margin)
        return [a for a in self.zones if a.zone != zone and overlaps(grown, a.rect)]


def expand(r: Rect, margin: float) -> Rect:
    return Rect(r.min_x - margin, r.min_z - margin, r.max_x + margin, r.max_z + margin)


def clip(r: Rect, to: Rect) -> Rect:
    return Rect(
        max(r.min_x, to.min_x),
        max(r.min_z, to.min_z),
        min(r.max_x, to.max_x),
        min(r.max_z, to.max_z),
    )


def overlaps(a: Rect, b: Rect) -> bool:
    """True when the open interiors of the rectangles intersect."""
    return a.min_x < b.max_x and b.min_x < a.max_x and a.min_z < b.max_z and b.min_z < a.max_z


def outside(xz: F64, r: Rect, margin: float) -> npt.NDArray[np.bool_]:
    """Points more than ``margin`` outside the rectangle (0 = simply not inside)."""
    return (
        (xz[:, 0] < r.min_x - margin)
        | (xz[:, 0] >= r.max_x + margin)
        | (xz[:, 1] < r.min_z - margin)
        | (xz[:, 1] >= r.max_z + margin)
    )


def movement_area(own: Rect, topo: Topology | None, zone: str, reach: float) -> Rect:
    """Where movement may take this zone's entities: its bounds grown by ``reach``
    (clipped to the world) when it has neighbours to hand them to, else its bounds."""
    if topo is None or not topo.neighbours(zone, 1.0):
        return own
    return clip(expand(own, reach), topo.world)


def departures(
    xz: F64,
    own: Rect,
    topo: Topology,
    *,
    zone: str,
    hysteresis: float,
    everything: bool = False,
    target: str = "",
) -> list[tuple[int, str]]:
    """``(row, target zone)`` for every entity that must leave this zone: past its
    bounds by more than ``hysteresis`` (all entities when ``everything``, i.e.
    draining), going to ``target`` if given, else to the zone owning its position.
    Rows whose position no other zone owns stay (nowhere to go)."""
    if len(xz) == 0:
        return []
    rows = np.arange(len(xz)) if everything else np.flatnonzero(outside(xz, own, hysteresis))
    if rows.size == 0:
        return []
    if target:
        return [(int(r), target) for r in rows.tolist()]
    owners = topo.owners(xz[rows], exclude=zone)
    if everything:
        near = [a for a in topo.zones if a.zone != zone]
        owners = [o or _nearest(near, xz[r]) for r, o in zip(rows.tolist(), owners, strict=True)]
    return [(int(r), o) for r, o in zip(rows.tolist(), owners, strict=True) if o is not None]


def _nearest(areas: list[ZoneArea], p: F64) -> str | None:
    """The zone whose rectangle is closest to the point (a drain with no map owner,
    e.g. the draining zone already left the map)."""
    best, best_d = None, float("inf")
    for a in areas:
        r = a.rect
        dx = max(r.min_x - p[0], 0.0, p[0] - r.max_x)
        dz = max(r.min_z - p[1], 0.0, p[1] - r.max_z)
        if dx * dx + dz * dz < best_d:
            best, best_d = a.zone, dx * dx + dz * dz
    return best
