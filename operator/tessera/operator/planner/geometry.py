"""The geometry of a world's split tree: where a zone is cut in two, whether the
zones partition the world exactly, and which sibling pairs may merge back.
Rectangles themselves are :class:`tessera.wire.geometry.Rect`."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from tessera.operator.planner.model import Desired, ZoneView
from tessera.wire.geometry import Rect


def split_rect(
    rect: Rect, min_size: float, sample_x: Sequence[float], sample_z: Sequence[float]
) -> tuple[Rect, Rect] | None:
    """Cut ``rect`` across its longer axis at the median player position, on a
    whole metre, keeping both halves at least ``min_size`` wide; the shorter axis
    if the longer one is too small. None if neither axis can be cut."""
    axes = ("x", "z") if rect.width >= rect.height else ("z", "x")
    for axis in axes:
        lo_edge, hi_edge = (rect.min_x, rect.max_x) if axis == "x" else (rect.min_z, rect.max_z)
        samples = sample_x if axis == "x" else sample_z
        lo = math.ceil(lo_edge + min_size)
        hi = math.floor(hi_edge - min_size)
        if lo > hi:
            continue
        inside = [s for s in samples if lo_edge <= s < hi_edge]
        middle = statistics.median(inside) if inside else (lo_edge + hi_edge) / 2
        cut = float(min(max(round(middle), lo), hi))
        if axis == "x":
            return Rect(rect.min_x, rect.min_z, cut, rect.max_z), Rect(
                cut, rect.min_z, rect.max_x, rect.max_z
            )
        return Rect(rect.min_x, rect.min_z, rect.max_x, cut), Rect(
            rect.min_x, cut, rect.max_x, rect.max_z
        )
    return None


def cut_text(low: Rect, high: Rect) -> str:
    """The cut between the two halves of a split, e.g. ``x=512``."""
    return f"x={low.max_x:g}" if low.max_z == high.max_z else f"z={low.max_z:g}"


def partition_errors(world: Rect, rects: Iterable[Rect]) -> list[str]:
    """Why ``rects`` do not partition ``world`` exactly (empty when they do)."""
    rects = list(rects)
    errors = [
        f"{r.text()} lies outside the world {world.text()}" for r in rects if not r.inside(world)
    ]
    if errors:
        return errors
    if not rects:
        return ["no zones"]
    coords = np.array([(r.min_x, r.min_z, r.max_x, r.max_z) for r in rects], dtype=np.float64)
    xs = np.unique(np.concatenate(([world.min_x, world.max_x], coords[:, 0], coords[:, 2])))
    zs = np.unique(np.concatenate(([world.min_z, world.max_z], coords[:, 1], coords[:, 3])))
    x0, x1 = np.searchsorted(xs, coords[:, 0]), np.searchsorted(xs, coords[:, 2])
    z0, z1 = np.searchsorted(zs, coords[:, 1]), np.searchsorted(zs, coords[:, 3])
    # Each rectangle adds 1 to its cells of the compressed grid: a 2-D difference
    # array, summed up along both axes.
    diff = np.zeros((len(xs), len(zs)), dtype=np.int32)
    np.add.at(diff, (x0, z0), 1)
    np.add.at(diff, (x1, z0), -1)
    np.add.at(diff, (x0, z1), -1)
    np.add.at(diff, (x1, z1), 1)
    cover = diff.cumsum(axis=0).cumsum(axis=1)[:-1, :-1]
    if (cover == 0).any():
        errors.append(f"{int((cover == 0).sum())} cells of the world belong to no zone")
    if (cover > 1).any():
        errors.append(f"{int((cover > 1).sum())} cells of the world belong to several zones")
    return errors


class Pair(NamedTuple):
    """Two sibling zones that may merge: ``child`` was split from ``parent`` and
    ``union`` is the rectangle they form together."""

    child: ZoneView
    parent: ZoneView
    union: Rect


def sibling_pairs(zones: Mapping[str, ZoneView]) -> list[Pair]:
    """Mergeable pairs: the child was split from the parent, both are active,
    managed, open-world zones back at the child's split depth, and together they
    form a rectangle."""
    pairs = []
    for child in zones.values():
        if child.parent is None or child.desired != Desired.ACTIVE or child.bounds is None:
            continue
        parent = zones.get(child.parent)
        if (
            parent is None
            or parent.desired != Desired.ACTIVE
            or parent.bounds is None
            or parent.depth != child.split_depth
            or child.depth != child.split_depth
            or child.split_depth == 0
            or not (child.managed and parent.managed)
            or child.instance is not None
            or parent.instance is not None
        ):
            continue
        union = parent.bounds.union(child.bounds)
        if union is not None:
            pairs.append(Pair(child, parent, union))
    return pairs


def pairs_by_zone(pairs: Iterable[Pair]) -> dict[str, list[Pair]]:
    """The pairs each zone belongs to, as child or parent, in the order of ``pairs``."""
    out: dict[str, list[Pair]] = {}
    for pair in pairs:
        for name in dict.fromkeys((pair.child.name, pair.parent.name)):
            out.setdefault(name, []).append(pair)
    return out
