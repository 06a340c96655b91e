"""The zone planner: when does a zone split, when do two zones merge, which zone
drains where. Pure and deterministic: the same inputs give the same plan, and
nothing outside the arguments is read or written.

Both runtimes (the kopf operator and the local process runner) call :func:`plan`
with the world's spec, the zones they observe and the planner :class:`Memory`
they kept from the previous call, then carry out the returned actions and keep
the returned memory. :func:`advance` is the layout a plan leads to, for tests,
benchmarks and simulations.

The layout is a binary split tree kept in the zones themselves: a split gives
the parent the lower half of its rectangle and a new zone (``parent`` = the
split zone, ``split_depth`` = the new depth) the upper half, both one level
deeper. A zone merges only with the zone it was split from while both still sit
at its ``split_depth``, i.e. after every later split of either has been merged
back, so a merge always restores the parent's earlier rectangle and the zones
keep partitioning the world exactly.

Instance zones (a private copy of the world's area for one match) stand outside
that tree: the planner creates them from the matchmaker's requests it is given
(at most ``maxInstances`` at once), ends them by the rules of
:class:`InstancePolicy` (drained with no target, so their players go back to the
open-world zone that owns their position) and leaves them out of the partition,
the sibling pairs, autoscaling, deletions and the standby pool.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np

from tessera.wire.geometry import Rect


class Desired(StrEnum):
    """What the operator wants a zone to do (ZoneServer ``spec.desiredState``)."""

    ACTIVE = "Active"
    DRAINING = "Draining"
    STANDBY = "Standby"


class Phase(StrEnum):
    """What a zone is observed doing (ZoneServer ``status.phase``)."""

    PENDING = "Pending"
    STARTING = "Starting"
    READY = "Ready"
    DRAINING = "Draining"
    DRAINED = "Drained"
    FAILED = "Failed"


@dataclass(frozen=True)
class Policy:
    """Autoscaling policy (World ``spec.autoscaling``); defaults match the CRD."""

    enabled: bool = True
    mode: str = "Density"
    target_players: int = 200
    split_threshold: int = 300
    merge_threshold: int = 100
    split_window_s: float = 10.0
    merge_window_s: float = 60.0
    cooldown_s: float = 30.0
    min_zones: int = 1
    max_zones: int = 64
    min_zone_size: float = 100.0
    max_depth: int = 8


@dataclass(frozen=True)
class InstancePolicy:
    """Instance zone limits and timers (World ``spec.instances``); defaults match the CRD."""

    max_instances: int = 100
    start_timeout_s: float = 120.0
    idle_s: float = 30.0
    end_grace_s: float = 10.0
    max_lifetime_s: float = 3600.0


@dataclass(frozen=True)
class WorldSpec:
    """What the planner needs of a World; defaults match the CRD."""

    name: str
    bounds: Rect
    policy: Policy = field(default_factory=Policy)
    layout: str = "Managed"
    standby: int = 0
    drain_timeout_s: float = 60.0
    replicas: int | None = None
    instances: InstancePolicy = field(default_factory=InstancePolicy)


@dataclass(frozen=True)
class ZoneView:
    """One zone as observed: its spec (desired state, bounds, lineage) and its load."""

    name: str
    desired: Desired = Desired.ACTIVE
    bounds: Rect | None = None
    parent: str | None = None
    depth: int = 0
    split_depth: int = 0
    phase: Phase = Phase.PENDING
    players: int = 0
    sample_x: Sequence[float] = ()
    sample_z: Sequence[float] = ()
    managed: bool = True
    deleting: bool = False
    # The match id of an instance zone (None: an open-world zone).
    instance: str | None = None
    # When the zone was created (seconds since the epoch), if known.
    created: float | None = None


@dataclass(frozen=True)
class InstanceRequest:
    """One entry of the matchmaker's instance stream of this world: ``create`` an
    instance zone for a match, or ``end`` it (the match result was reported)."""

    id: str
    kind: str
    match: str
    zone: str
    at: float
    players: tuple[str, ...] = ()


@dataclass(frozen=True)
class Memory:
    """What the planner remembers between calls (kept by the runtime, e.g. in the
    World's status, so a restarted or newly elected operator continues)."""

    next_id: int = 0
    over_since: Mapping[str, float] = field(default_factory=dict)
    under_since: Mapping[str, float] = field(default_factory=dict)
    cooldown_until: Mapping[str, float] = field(default_factory=dict)
    drain_since: Mapping[str, float] = field(default_factory=dict)
    # Instance zones: first seen with players, empty since, end requested at.
    joined: Mapping[str, float] = field(default_factory=dict)
    idle_since: Mapping[str, float] = field(default_factory=dict)
    end_at: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "nextId": self.next_id,
            "overSince": dict(self.over_since),
            "underSince": dict(self.under_since),
            "cooldownUntil": dict(self.cooldown_until),
            "drainSince": dict(self.drain_since),
            "instanceJoined": dict(self.joined),
            "instanceIdleSince": dict(self.idle_since),
            "instanceEndAt": dict(self.end_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> Memory:
        data = data or {}

        def floats(key: str) -> dict[str, float]:
            raw = data.get(key)
            if not isinstance(raw, Mapping):
                return {}
            return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}

        next_id = data.get("nextId", 0)
        return cls(
            next_id=next_id if isinstance(next_id, int) else 0,
            over_since=floats("overSince"),
            under_since=floats("underSince"),
            cooldown_until=floats("cooldownUntil"),
            drain_since=floats("drainSince"),
            joined=floats("instanceJoined"),
            idle_since=floats("instanceIdleSince"),
            end_at=floats("instanceEndAt"),
        )


@dataclass(frozen=True)
class CreateZone:
    """Start a new zone with these bounds (None: a warm standby); ``instance``:
    the match id of an instance zone."""

    zone: str
    bounds: Rect | None
    parent: str | None
    depth: int
    split_depth: int
    decision: str
    reason: str
    instance: str | None = None


@dataclass(frozen=True)
class AssignStandby:
    """Give a running standby zone bounds: it becomes an active zone."""

    zone: str
    bounds: Rect
    parent: str | None
    depth: int
    split_depth: int
    decision: str
    reason: str


@dataclass(frozen=True)
class Rebound:
    """Give an active zone new bounds (smaller on split, larger on merge)."""

    zone: str
    bounds: Rect
    depth: int
    decision: str
    reason: str


@dataclass(frozen=True)
class Drain:
    """Stop joins and hand every entity to ``target`` (None: the owner by position)."""

    zone: str
    target: str | None
    decision: str
    reason: str


@dataclass(frozen=True)
class Delete:
    """Remove a drained (or timed-out, or standby) zone."""

    zone: str
    forced: bool
    decision: str
    reason: str


Action = CreateZone | AssignStandby | Rebound | Drain | Delete


@dataclass(frozen=True)
class Plan:
    """Actions in the order to carry them out, notes on what was held back, the
    memory for the next call, and the ids of the instance requests this plan has
    taken care of (acknowledge them once its actions are carried out and its
    memory kept; the others must be given again)."""

    actions: tuple[Action, ...]
    notes: tuple[str, ...]
    memory: Memory
    done: tuple[str, ...] = ()


def zone_name(world: str, number: int) -> str:
    """The name of the world's ``number``-th zone (a DNS label)."""
    suffix = f"-{number}"
    return world[: 63 - len(suffix)] + suffix


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


def _siblings(zones: Mapping[str, ZoneView]) -> list[tuple[ZoneView, ZoneView, Rect]]:
    """Mergeable pairs (child, parent, union): the child was split from the parent,
    both are active at the same depth and together form a rectangle."""
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
            pairs.append((child, parent, union))
    return pairs


class _Builder:
    """Accumulates one plan: actions, notes, memory updates, zones already used."""

    def __init__(self, world: WorldSpec, zones: Mapping[str, ZoneView], memory: Memory) -> None:
        self.world = world
        self.zones = zones
        self.actions: list[Action] = []
        self.notes: list[str] = []
        self.busy: set[str] = set()
        self.next_id = memory.next_id
        self.over_since = dict(memory.over_since)
        self.under_since = dict(memory.under_since)
        self.cooldown_until = dict(memory.cooldown_until)
        self.drain_since = dict(memory.drain_since)
        self.joined = dict(memory.joined)
        self.idle_since = dict(memory.idle_since)
        self.end_at = dict(memory.end_at)
        self.done: list[str] = []
        self.standby = sorted(
            z.name
            for z in zones.values()
            if z.desired == Desired.STANDBY and z.phase == Phase.READY and not z.deleting
        )

    def new_name(self) -> str:
        while True:
            name = zone_name(self.world.name, self.next_id)
            self.next_id += 1
            if name not in self.zones:
                return name

    def place(
        self,
        bounds: Rect,
        *,
        parent: str | None,
        depth: int,
        split_depth: int,
        decision: str,
        reason: str,
    ) -> str:
        """Put a zone on ``bounds``: a ready standby if there is one, else a new zone."""
        if self.standby:
            name = self.standby.pop(0)
            self.actions.append(
                AssignStandby(name, bounds, parent, depth, split_depth, decision, reason)
            )
        else:
            name = self.new_name()
            self.actions.append(
                CreateZone(name, bounds, parent, depth, split_depth, decision, reason)
            )
        self.busy.add(name)
        return name

    def cool(self, now: float, *names: str) -> None:
        for name in names:
            self.cooldown_until[name] = now + self.world.policy.cooldown_s
            self.over_since.pop(name, None)
            self.under_since.pop(name, None)

    def memory(self, now: float) -> Memory:
        alive = set(self.zones) | {a.zone for a in self.actions}
        return Memory(
            next_id=self.next_id,
            over_since={k: v for k, v in self.over_since.items() if k in alive},
            under_since={k: v for k, v in self.under_since.items() if k in alive},
            cooldown_until={k: v for k, v in self.cooldown_until.items() if k in alive and v > now},
            drain_since={k: v for k, v in self.drain_since.items() if k in alive},
            joined={k: v for k, v in self.joined.items() if k in alive},
            idle_since={k: v for k, v in self.idle_since.items() if k in alive},
            end_at={k: v for k, v in self.end_at.items() if k in alive},
        )

    def plan(self, now: float) -> Plan:
        return Plan(tuple(self.actions), tuple(self.notes), self.memory(now), tuple(self.done))


def plan(
    world: WorldSpec,
    zones: Sequence[ZoneView],
    now: float,
    memory: Memory | None = None,
    requests: Sequence[InstanceRequest] = (),
) -> Plan:
    """Decide what to do with the world's zones at time ``now`` (seconds), given
    the instance requests not yet taken care of (oldest first)."""
    by_name = {z.name: z for z in sorted(zones, key=lambda z: z.name)}
    b = _Builder(world, by_name, memory or Memory())
    _finish_drains(b, now)
    _instances(b, requests, now)
    if world.layout == "Static":
        for z in by_name.values():
            if z.deleting and z.desired != Desired.DRAINING and z.instance is None:
                b.actions.append(Drain(z.name, None, "Delete", f"{z.name} is being deleted"))
                b.drain_since[z.name] = now
        return b.plan(now)

    active = [
        z
        for z in by_name.values()
        if z.desired == Desired.ACTIVE and z.managed and z.instance is None
    ]
    draining = any(z.desired == Desired.DRAINING and z.instance is None for z in by_name.values())
    if not active and not draining:
        _initial_layout(b)
    else:
        errors = partition_errors(world.bounds, [z.bounds for z in active if z.bounds])
        if errors or any(z.bounds is None for z in active):
            b.notes.append("zones do not partition the world; scaling held: " + "; ".join(errors))
        else:
            _deletions(b, now)
            if world.policy.enabled:
                _autoscale(b, active, now)
    _standby_pool(b)
    return b.plan(now)


def _finish_drains(b: _Builder, now: float) -> None:
    for z in b.zones.values():
        if z.desired != Desired.DRAINING:
            continue
        since = b.drain_since.setdefault(z.name, now)
        if z.phase in (Phase.DRAINED, Phase.PENDING, Phase.FAILED):
            why = (
                "drained"
                if z.phase == Phase.DRAINED
                else f"{z.phase.value.lower()}, nothing to drain"
            )
            b.actions.append(Delete(z.name, False, "Drained", f"{z.name} {why}"))
        elif now - since >= b.world.drain_timeout_s:
            b.actions.append(
                Delete(
                    z.name,
                    True,
                    "DrainTimeout",
                    f"{z.name} still draining after {b.world.drain_timeout_s:g}s; removed",
                )
            )
        b.busy.add(z.name)


def _instances(b: _Builder, requests: Sequence[InstanceRequest], now: float) -> None:
    """Create the requested instance zones (oldest first, up to ``maxInstances``
    at once; the rest wait, un-acknowledged, for a later plan), record the ends
    of reported matches, and end instances by the rules of the world's policy."""
    policy = b.world.instances
    present = {z.name: z for z in b.zones.values() if z.instance is not None}
    ended = {r.zone for r in requests if r.kind == "end"}
    for r in requests:
        if r.kind == "end":
            if r.zone in present:
                b.end_at.setdefault(r.zone, min(r.at, now))
            b.done.append(r.id)
    count = len(present)
    waiting = 0
    for r in requests:
        if r.kind != "create":
            continue
        if r.zone in present or r.zone in ended or r.zone in b.busy:
            # Already created, a repeated request, or its match is already over.
            b.done.append(r.id)
            continue
        if r.zone in b.zones:
            b.notes.append(f"instance {r.zone} of match {r.match}: an open-world zone has its name")
            b.done.append(r.id)
            continue
        if now - r.at >= policy.start_timeout_s:
            # Waited too long: its players' connect tokens have expired and their
            # instance would only idle out; they queue again.
            b.notes.append(
                f"instance {r.zone} of match {r.match} dropped: requested {now - r.at:g}s ago, "
                f"startTimeoutSeconds={policy.start_timeout_s:g}"
            )
            b.done.append(r.id)
            continue
        if count >= policy.max_instances:
            waiting += 1
            continue
        reason = f"match {r.match}: instance zone for {len(r.players)} players"
        b.actions.append(
            CreateZone(r.zone, b.world.bounds, None, 0, 0, "Instance", reason, instance=r.match)
        )
        b.busy.add(r.zone)
        b.done.append(r.id)
        count += 1
    if waiting:
        b.notes.append(f"{waiting} instance requests wait: maxInstances={policy.max_instances}")
    for z in present.values():
        if z.desired == Desired.DRAINING or z.name in b.busy:
            continue
        why = _instance_end(b, z, now)
        if why is not None:
            b.actions.append(Drain(z.name, None, "InstanceEnd", f"end instance {z.name}: {why}"))
            b.drain_since[z.name] = now
            b.busy.add(z.name)


def _instance_end(b: _Builder, z: ZoneView, now: float) -> str | None:
    """Why instance ``z`` ends now (None: it goes on); updates its timers."""
    policy = b.world.instances
    if z.phase == Phase.READY:  # players are only known from a live heartbeat
        if z.players > 0:
            b.joined.setdefault(z.name, now)
            b.idle_since.pop(z.name, None)
        elif z.name in b.joined:
            b.idle_since.setdefault(z.name, now)
    if z.deleting:
        return "the ZoneServer is being deleted"
    end_at = b.end_at.get(z.name)
    if end_at is not None and now - end_at >= policy.end_grace_s:
        return f"match {z.instance} was reported {now - end_at:g}s ago"
    idle = b.idle_since.get(z.name)
    if idle is not None and now - idle >= policy.idle_s:
        return f"no players for {now - idle:g}s"
    if z.created is not None:
        age = now - z.created
        if z.name not in b.joined and age >= policy.start_timeout_s:
            return f"no player joined within {age:g}s"
        if age >= policy.max_lifetime_s:
            return f"{age:g}s old, maxLifetimeSeconds={policy.max_lifetime_s:g}"
    return None


def _initial_layout(b: _Builder) -> None:
    """The first zones of a managed world: the whole world, halved at the middle
    (largest zone first) until there are ``min_zones`` (or nothing can be cut)."""
    policy = b.world.policy
    want = (
        max(policy.min_zones, b.world.replicas or 0)
        if policy.mode == "External"
        else policy.min_zones
    )
    want = min(want, policy.max_zones)
    root = b.new_name()
    # name -> (bounds, parent, depth, split depth)
    layout: dict[str, tuple[Rect, str | None, int, int]] = {root: (b.world.bounds, None, 0, 0)}
    while len(layout) < want:
        for name, (rect, parent, depth, born) in sorted(
            layout.items(), key=lambda item: (-item[1][0].area, item[0])
        ):
            halves = split_rect(rect, policy.min_zone_size, (), ())
            if halves is not None and depth < policy.max_depth:
                child = b.new_name()
                layout[name] = (halves[0], parent, depth + 1, born)
                layout[child] = (halves[1], name, depth + 1, depth + 1)
                break
        else:
            b.notes.append(f"only {len(layout)} of {want} initial zones fit the minimum size")
            break
    for name, (rect, parent, depth, born) in layout.items():
        reason = f"initial layout: {name} at {rect.text()}"
        b.actions.append(CreateZone(name, rect, parent, depth, born, "Initial", reason))
        b.busy.add(name)


def _deletions(b: _Builder, now: float) -> None:
    """A zone being deleted hands its area to its sibling (a merge) or, when that
    is impossible or would go below min_zones, to a replacement zone."""
    active = [
        z
        for z in b.zones.values()
        if z.desired == Desired.ACTIVE and z.managed and z.instance is None
    ]
    count = len(active)
    pairs = _siblings(b.zones)
    for z in active:
        if not z.deleting or z.name in b.busy or z.bounds is None:
            continue
        partner = None
        for child, parent, union in pairs:
            other = parent if child.name == z.name else child if parent.name == z.name else None
            if other is not None and not other.deleting and other.name not in b.busy:
                partner = (other, union)
                break
        if partner is not None and count - 1 >= b.world.policy.min_zones:
            other, union = partner
            reason = f"{z.name} is being deleted; {other.name} absorbs {z.bounds.text()}"
            b.actions.append(Rebound(other.name, union, other.depth - 1, "Merge", reason))
            target = other.name
            count -= 1
        else:
            reason = f"{z.name} is being deleted; a new zone takes over {z.bounds.text()}"
            target = b.place(
                z.bounds,
                parent=z.parent,
                depth=z.depth,
                split_depth=z.split_depth,
                decision="Replace",
                reason=reason,
            )
        b.actions.append(Drain(z.name, target, "Delete", reason))
        b.drain_since[z.name] = now
        b.busy.update({z.name, target})
        b.cool(now, target)


def _autoscale(b: _Builder, active: list[ZoneView], now: float) -> None:
    policy = b.world.policy
    count = len([z for z in active if not z.deleting]) + sum(
        1
        for a in b.actions
        if isinstance(a, CreateZone | AssignStandby)
        and a.bounds is not None
        and not (isinstance(a, CreateZone) and a.instance is not None)
    )
    external = policy.mode == "External" and b.world.replicas is not None
    target = min(max(b.world.replicas or 0, policy.min_zones), policy.max_zones)

    # Track how long each zone has been over the high-water mark.
    for z in active:
        if z.players > policy.split_threshold and z.phase == Phase.READY:
            b.over_since.setdefault(z.name, now)
        else:
            b.over_since.pop(z.name, None)
    pairs = _siblings(b.zones)
    for child, parent, _ in pairs:
        if (
            child.players + parent.players < policy.merge_threshold
            and Phase.READY == child.phase == parent.phase
        ):
            b.under_since.setdefault(child.name, now)
        else:
            b.under_since.pop(child.name, None)

    def cooling(name: str) -> bool:
        return now < b.cooldown_until.get(name, -math.inf)

    def splittable(z: ZoneView) -> bool:
        return (
            z.phase == Phase.READY
            and not z.deleting
            and z.name not in b.busy
            and not cooling(z.name)
            and z.bounds is not None
        )

    if external:
        candidates = sorted(
            (z for z in active if splittable(z)), key=lambda z: (-z.players, z.name)
        )
        wanted_splits = max(0, target - count)
    else:
        candidates = sorted(
            (
                z
                for z in active
                if splittable(z)
                and z.name in b.over_since
                and now - b.over_since[z.name] >= policy.split_window_s
            ),
            key=lambda z: (-z.players, z.name),
        )
        wanted_splits = len(candidates)
    for z in candidates:
        if wanted_splits <= 0:
            break
        if count >= policy.max_zones:
            b.notes.append(f"{z.name} has {z.players} players but maxZones={policy.max_zones}")
            break
        assert z.bounds is not None
        if z.depth >= policy.max_depth:
            b.notes.append(
                f"{z.name} has {z.players} players but is at maxDepth={policy.max_depth}"
            )
            continue
        halves = split_rect(z.bounds, policy.min_zone_size, z.sample_x, z.sample_z)
        if halves is None:
            b.notes.append(f"{z.name} has {z.players} players but is at the minimum zone size")
            continue
        why = (
            f"spec.replicas={target} > {count} zones"
            if external
            else f"{z.players} players > {policy.split_threshold} for "
            f"{now - b.over_since[z.name]:g}s"
        )
        low, high = halves
        reason = f"split {z.name} {z.bounds.text()} at {_cut_text(low, high)}: {why}"
        b.actions.append(Rebound(z.name, low, z.depth + 1, "Split", reason))
        new = b.place(
            high,
            parent=z.name,
            depth=z.depth + 1,
            split_depth=z.depth + 1,
            decision="Split",
            reason=reason,
        )
        b.busy.add(z.name)
        b.cool(now, z.name, new)
        count += 1
        wanted_splits -= 1

    def mergeable(child: ZoneView, parent: ZoneView) -> bool:
        return not (
            {child.name, parent.name} & b.busy
            or child.deleting
            or parent.deleting
            or cooling(child.name)
            or cooling(parent.name)
            or child.phase != Phase.READY
            or parent.phase != Phase.READY
        )

    if external:
        merges = sorted(
            (p for p in pairs if mergeable(p[0], p[1])),
            key=lambda p: (p[0].players + p[1].players, p[0].name),
        )[: max(0, count - target)]
    else:
        merges = sorted(
            (
                p
                for p in pairs
                if mergeable(p[0], p[1])
                and p[0].name in b.under_since
                and now - b.under_since[p[0].name] >= policy.merge_window_s
            ),
            key=lambda p: (p[0].players + p[1].players, p[0].name),
        )
    for child, parent, union in merges:
        if count - 1 < policy.min_zones:
            b.notes.append(
                f"{child.name} and {parent.name} are quiet but minZones={policy.min_zones}"
            )
            break
        players = child.players + parent.players
        why = (
            f"spec.replicas={target} < {count} zones"
            if external
            else f"{players} players < {policy.merge_threshold} for "
            f"{now - b.under_since[child.name]:g}s"
        )
        reason = f"merge {child.name} into {parent.name} ({union.text()}): {why}"
        b.actions.append(Rebound(parent.name, union, parent.depth - 1, "Merge", reason))
        b.actions.append(Drain(child.name, parent.name, "Merge", reason))
        b.drain_since[child.name] = now
        b.busy.update({child.name, parent.name})
        b.cool(now, child.name, parent.name)
        count -= 1


def _cut_text(low: Rect, high: Rect) -> str:
    return f"x={low.max_x:g}" if low.max_z == high.max_z else f"z={low.max_z:g}"


def _standby_pool(b: _Builder) -> None:
    """Keep ``standby`` idle zones: start more, or remove the surplus."""
    pool = [z.name for z in b.zones.values() if z.desired == Desired.STANDBY and not z.deleting]
    assigned = {a.zone for a in b.actions if isinstance(a, AssignStandby)}
    left = [name for name in pool if name not in assigned]
    for _ in range(b.world.standby - len(left)):
        name = b.new_name()
        b.actions.append(CreateZone(name, None, None, 0, 0, "Standby", "refill the standby pool"))
    for name in sorted(left, reverse=True)[: max(0, len(left) - b.world.standby)]:
        b.actions.append(Delete(name, False, "Standby", "standby pool above its size"))
    for z in b.zones.values():
        if z.desired == Desired.STANDBY and z.deleting and z.name not in assigned:
            b.actions.append(Delete(z.name, False, "Delete", f"standby {z.name} is being deleted"))


def advance(zones: Sequence[ZoneView], actions: Iterable[Action]) -> list[ZoneView]:
    """The zones after carrying out ``actions`` (load and phases unchanged; new
    zones start Pending). For simulations and tests."""
    out = {z.name: z for z in zones}
    for a in actions:
        if isinstance(a, CreateZone):
            desired = Desired.ACTIVE if a.bounds is not None else Desired.STANDBY
            out[a.zone] = ZoneView(
                a.zone, desired, a.bounds, a.parent, a.depth, a.split_depth, instance=a.instance
            )
        elif isinstance(a, AssignStandby):
            out[a.zone] = replace(
                out[a.zone],
                desired=Desired.ACTIVE,
                bounds=a.bounds,
                parent=a.parent,
                depth=a.depth,
                split_depth=a.split_depth,
            )
        elif isinstance(a, Rebound):
            out[a.zone] = replace(out[a.zone], bounds=a.bounds, depth=a.depth)
        elif isinstance(a, Drain):
            out[a.zone] = replace(out[a.zone], desired=Desired.DRAINING)
        else:
            out.pop(a.zone, None)
    return sorted(out.values(), key=lambda z: z.name)
