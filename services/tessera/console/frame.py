"""What the console shows, as one JSON-ready frame, and the delta between frames
(pure: plain data in, plain data out; the store converts Redis and gRPC records).

A frame is a dict of sections, each a dict keyed by a stable id: ``meta``,
``zones`` (by name), ``borders`` (by zone pair), ``density`` (by grid cell index,
non-empty cells only), ``events`` (by stream entry id), ``relays`` (by address)
and ``matches`` (by match id). :func:`delta` compares two frames section by
section, so a viewer that holds the previous frame needs only the entries that
changed and the keys that went away; a full frame is the delta from nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tessera.wire.geometry import Rect

Section = dict[str, Any]
Frame = dict[str, Section]
SECTIONS = ("meta", "zones", "borders", "density", "events", "relays", "matches")


@dataclass(frozen=True)
class ZoneRow:
    """One zone's heartbeat, reduced to what the console shows."""

    name: str
    state: str  # STARTING, STANDBY, ACTIVE, DRAINING, DRAINED
    bounds: Rect | None
    players: int
    tick_p50_ms: float
    tick_p99_ms: float
    overload_level: int
    handoffs_received: int
    drain_remaining: int
    updated_at_ms: float
    instance: str = ""
    address: str = ""
    xs: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    zs: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))


@dataclass(frozen=True)
class RelayRow:
    """One relay as its GetStatus answered (``up`` False when it did not)."""

    address: str
    relay_id: str
    sessions: int
    up: bool


@dataclass(frozen=True)
class MatchRow:
    """The newest instance request of a match (``kind`` create or end)."""

    match: str
    zone: str
    kind: str
    at_ms: float


@dataclass(frozen=True)
class Rate:
    """Handoffs into a zone per second, from two heartbeats' cumulative counts."""

    count: int
    at_ms: float
    per_s: float = 0.0


@dataclass(frozen=True)
class World:
    """Everything one frame is made of."""

    name: str
    bounds: Rect | None  # the zone map's world bounds
    map_version: int
    map_zones: Mapping[str, Rect]  # open-world zones in the zone map
    zones: Sequence[ZoneRow]
    events: Sequence[tuple[str, Mapping[str, str]]]  # (entry id, fields), oldest first
    relays: Sequence[RelayRow]
    matches: Sequence[MatchRow]
    now_ms: float


def phase(z: ZoneRow) -> str:
    """How the map draws a zone: instance, standby, draining, starting or active."""
    if z.instance:
        return "instance"
    if z.state == "STANDBY":
        return "standby"
    if z.state in ("DRAINING", "DRAINED"):
        return "draining"
    return "starting" if z.state == "STARTING" else "active"


def handoff_rates(zones: Sequence[ZoneRow], before: Mapping[str, Rate]) -> dict[str, Rate]:
    """Each zone's handoffs-in per second between its previous heartbeat and this
    one; a heartbeat seen before keeps its rate, a restarted zone starts over."""
    out: dict[str, Rate] = {}
    for z in zones:
        prev = before.get(z.name)
        if prev is None or z.handoffs_received < prev.count:
            out[z.name] = Rate(z.handoffs_received, z.updated_at_ms)
        elif z.updated_at_ms <= prev.at_ms:
            out[z.name] = prev
        else:
            per_s = (z.handoffs_received - prev.count) * 1000.0 / (z.updated_at_ms - prev.at_ms)
            out[z.name] = Rate(z.handoffs_received, z.updated_at_ms, per_s)
    return out


def grid_shape(world: Rect, cells: int) -> tuple[int, int, float]:
    """(columns, rows, cell size): ``cells`` square cells along the longer side."""
    size = max(world.width, world.height) / cells
    return (max(1, math.ceil(world.width / size)), max(1, math.ceil(world.height / size)), size)


def density(zones: Sequence[ZoneRow], world: Rect, cells: int) -> dict[str, int]:
    """Estimated players per grid cell (non-empty cells, by row-major index).

    A heartbeat carries a sample of at most 512 player positions; each sample
    stands for ``players / samples`` players of its zone.
    """
    cols, rows, size = grid_shape(world, cells)
    total = np.zeros(cols * rows, np.float64)
    for z in zones:
        if z.instance or len(z.xs) == 0:
            continue
        cx = np.clip(((z.xs - world.min_x) / size).astype(np.int64), 0, cols - 1)
        cz = np.clip(((z.zs - world.min_z) / size).astype(np.int64), 0, rows - 1)
        weight = z.players / len(z.xs)
        total += np.bincount(cz * cols + cx, minlength=cols * rows) * weight
    counts = np.rint(total).astype(np.int64)
    cells_set = np.flatnonzero(counts)
    return {
        str(i): int(c) for i, c in zip(cells_set.tolist(), counts[cells_set].tolist(), strict=True)
    }


def borders(map_zones: Mapping[str, Rect]) -> dict[str, list[float]]:
    """The edges two zones of the map share, as ``[x1, z1, x2, z2]`` by "a|b"."""
    out: dict[str, list[float]] = {}
    names = sorted(map_zones)
    for i, a in enumerate(names):
        ra = map_zones[a]
        for b in names[i + 1 :]:
            edge = _shared_edge(ra, map_zones[b])
            if edge is not None:
                out[f"{a}|{b}"] = edge
    return out


def _shared_edge(a: Rect, b: Rect) -> list[float] | None:
    for x in {a.max_x, a.min_x} & {b.min_x, b.max_x}:
        if (x == a.max_x and x == b.min_x) or (x == a.min_x and x == b.max_x):
            lo, hi = max(a.min_z, b.min_z), min(a.max_z, b.max_z)
            if lo < hi:
                return [x, lo, x, hi]
    for z in {a.max_z, a.min_z} & {b.min_z, b.max_z}:
        if (z == a.max_z and z == b.min_z) or (z == a.min_z and z == b.max_z):
            lo, hi = max(a.min_x, b.min_x), min(a.max_x, b.max_x)
            if lo < hi:
                return [lo, z, hi, z]
    return None


def build(world: World, rates: Mapping[str, Rate], *, cells: int, aura_m: float) -> Frame:
    """The frame of ``world``: one pass over the zones, relays, events and matches."""
    bounds = world.bounds or _covering([z.bounds for z in world.zones if not z.instance])
    cols, rows, size = grid_shape(bounds, cells) if bounds is not None else (0, 0, 0.0)
    live = {z.instance: z for z in world.zones if z.instance}
    return {
        "meta": {
            "world": world.name,
            "bounds": _box(bounds),
            "map_version": world.map_version,
            "grid": [cols, rows, size],
            "aura_m": aura_m,
            "players": sum(z.players for z in world.zones),
            "zones": sum(1 for z in world.zones if not z.instance and z.bounds is not None),
        },
        "zones": {z.name: _zone_entry(z, rates.get(z.name), world.now_ms) for z in world.zones},
        "borders": borders(world.map_zones),
        "density": density(world.zones, bounds, cells) if bounds is not None else {},
        "events": {eid: dict(fields) for eid, fields in world.events},
        "relays": {
            r.address: {"id": r.relay_id, "sessions": r.sessions, "up": r.up} for r in world.relays
        },
        "matches": {
            m.match: {
                "zone": m.zone,
                "kind": m.kind,
                "at_ms": m.at_ms,
                "players": live[m.match].players if m.match in live else None,
            }
            for m in world.matches
        },
    }


def _zone_entry(z: ZoneRow, rate: Rate | None, now_ms: float) -> dict[str, Any]:
    return {
        "phase": phase(z),
        "state": z.state,
        "bounds": _box(z.bounds),
        "players": z.players,
        "p50_ms": round(z.tick_p50_ms, 1),
        "p99_ms": round(z.tick_p99_ms, 1),
        "overload": z.overload_level,
        "handoffs_s": round(rate.per_s, 1) if rate is not None else 0.0,
        "drain_remaining": z.drain_remaining,
        "instance": z.instance,
        "stale": now_ms - z.updated_at_ms > 5000.0,
    }


def _box(r: Rect | None) -> list[float] | None:
    return None if r is None else [r.min_x, r.min_z, r.max_x, r.max_z]


def _covering(rects: Sequence[Rect | None]) -> Rect | None:
    present = [r for r in rects if r is not None]
    if not present:
        return None
    return Rect(
        min(r.min_x for r in present),
        min(r.min_z for r in present),
        max(r.max_x for r in present),
        max(r.max_z for r in present),
    )


def delta(before: Frame, after: Frame) -> Frame:
    """Per section, ``set``: the entries of ``after`` that are new or differ from
    ``before``, and ``del``: the keys ``after`` no longer has. Sections without
    a change are left out, so a quiet world sends an almost empty delta."""
    out: Frame = {}
    for name in SECTIONS:
        old, new = before.get(name, {}), after.get(name, {})
        changed = {k: v for k, v in new.items() if old.get(k, _MISSING) != v}
        gone = [k for k in old if k not in new]
        if changed or gone:
            out[name] = {"set": changed, "del": gone}
    return out


def apply(frame: Frame, change: Frame) -> Frame:
    """``frame`` with ``change`` (a :func:`delta`) applied: what a viewer does."""
    out: Frame = {name: dict(frame.get(name, {})) for name in SECTIONS}
    for name, part in change.items():
        section = out.setdefault(name, {})
        section.update(part.get("set", {}))
        for key in part.get("del", []):
            section.pop(key, None)
    return out


_MISSING = object()
