"""Autoscaling: when a zone splits and when two zones merge back.

One decision function per policy, each returning what it decided (cf. Agones'
``applyBufferPolicy``): in Density mode :func:`density_splits` cuts zones that
stayed over the high-water mark for the split window and :func:`density_merges`
joins sibling pairs that stayed under the low-water mark for the merge window;
in External mode :func:`external_splits` and :func:`external_merges` split the
busiest zones or merge the quietest pairs until there are ``spec.replicas``.
:func:`autoscale` keeps both windows, picks the policy of the world's mode and
carries its decisions into the draft. Cooldowns and the limits (maxZones,
minZones, maxDepth, minZoneSize) hold in both modes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tessera.operator.planner.actions import AssignStandby, CreateZone, Drain, Rebound
from tessera.operator.planner.draft import Draft
from tessera.operator.planner.geometry import Pair, cut_text, split_rect
from tessera.operator.planner.model import Phase, Policy, WorldSpec, ZoneView
from tessera.wire.geometry import Rect


@dataclass(frozen=True)
class Split:
    """Cut ``zone``: it keeps ``low``, a new zone takes ``high``; ``why`` for the record."""

    zone: ZoneView
    low: Rect
    high: Rect
    why: str


@dataclass(frozen=True)
class Merge:
    """Re-bound ``pair.parent`` to the pair's union and drain ``pair.child`` into it."""

    pair: Pair
    why: str


@dataclass(frozen=True)
class Decision:
    """What one policy decided, in order, and notes on what the limits held back."""

    splits: tuple[Split, ...] = ()
    merges: tuple[Merge, ...] = ()
    notes: tuple[str, ...] = ()


# A zone whose overload ladder is at this rung (its ticks ran over budget for
# windows in a row) counts as over the high-water mark, whatever its players.
OVERLOAD_SPLIT_LEVEL = 2


def over_split_mark(z: ZoneView, policy: Policy) -> bool:
    """Whether ``z`` is over the split high-water mark: more players than
    ``split_threshold``, or overloaded at ``OVERLOAD_SPLIT_LEVEL`` or above."""
    return z.players > policy.split_threshold or z.overload_level >= OVERLOAD_SPLIT_LEVEL


def over_mark_since(
    zones: Sequence[ZoneView], *, policy: Policy, since: Mapping[str, float], now: float
) -> dict[str, float]:
    """When each zone's stay over the high-water mark began: a Ready zone over
    the mark (:func:`over_split_mark`) keeps (or starts) its time, any other of
    ``zones`` loses it."""
    out = dict(since)
    for z in zones:
        if over_split_mark(z, policy) and z.phase == Phase.READY:
            out.setdefault(z.name, now)
        else:
            out.pop(z.name, None)
    return out


def under_mark_since(
    pairs: Sequence[Pair], *, policy: Policy, since: Mapping[str, float], now: float
) -> dict[str, float]:
    """When each sibling pair's stay under the low-water mark began (keyed by
    child): both Ready and together under ``merge_threshold``, or the time is lost."""
    out = dict(since)
    for child, parent, _ in pairs:
        quiet = child.players + parent.players < policy.merge_threshold
        if quiet and Phase.READY == child.phase == parent.phase:
            out.setdefault(child.name, now)
        else:
            out.pop(child.name, None)
    return out


def density_splits(
    zones: Sequence[ZoneView],
    *,
    policy: Policy,
    over_since: Mapping[str, float],
    count: int,
    now: float,
) -> Decision:
    """Split each of ``zones`` (free to split) that has been over the high-water
    mark for the split window, busiest first, while there are fewer than
    ``max_zones`` of the world's ``count`` zones."""
    due = sorted(
        (
            z
            for z in zones
            if z.name in over_since and now - over_since[z.name] >= policy.split_window_s
        ),
        key=_busiest,
    )
    splits: list[Split] = []
    notes: list[str] = []
    for z in due:
        if count + len(splits) >= policy.max_zones:
            notes.append(f"{z.name} has {z.players} players but maxZones={policy.max_zones}")
            break
        halves = _halves(z, policy)
        if isinstance(halves, str):
            notes.append(halves)
            continue
        load = (
            f"{z.players} players > {policy.split_threshold}"
            if z.players > policy.split_threshold
            else f"overload level {z.overload_level}"
        )
        why = f"{load} for {now - over_since[z.name]:g}s"
        splits.append(Split(z, *halves, why))
    return Decision(splits=tuple(splits), notes=tuple(notes))


def external_splits(
    zones: Sequence[ZoneView], *, policy: Policy, target: int, count: int
) -> Decision:
    """Split the busiest of ``zones`` (free to split) until the world's ``count``
    zones reach ``target`` (``spec.replicas`` within the limits), never above
    ``max_zones``."""
    splits: list[Split] = []
    notes: list[str] = []
    for z in sorted(zones, key=_busiest):
        now_zones = count + len(splits)
        if now_zones >= target:
            break
        if now_zones >= policy.max_zones:
            notes.append(f"{z.name} has {z.players} players but maxZones={policy.max_zones}")
            break
        halves = _halves(z, policy)
        if isinstance(halves, str):
            notes.append(halves)
            continue
        splits.append(Split(z, *halves, f"spec.replicas={target} > {now_zones} zones"))
    return Decision(splits=tuple(splits), notes=tuple(notes))


def density_merges(
    pairs: Sequence[Pair],
    *,
    policy: Policy,
    under_since: Mapping[str, float],
    count: int,
    now: float,
) -> Decision:
    """Merge each of ``pairs`` (free to merge) that has been under the low-water
    mark for the merge window, quietest first, while the world's ``count`` zones
    stay at least ``min_zones``."""
    due = sorted(
        (
            p
            for p in pairs
            if p.child.name in under_since
            and now - under_since[p.child.name] >= policy.merge_window_s
        ),
        key=_quietest,
    )
    merges: list[Merge] = []
    notes: list[str] = []
    for p in due:
        if count - len(merges) - 1 < policy.min_zones:
            notes.append(_min_zones_note(p, policy))
            break
        players = p.child.players + p.parent.players
        quiet_s = now - under_since[p.child.name]
        why = f"{players} players < {policy.merge_threshold} for {quiet_s:g}s"
        merges.append(Merge(p, why))
    return Decision(merges=tuple(merges), notes=tuple(notes))


def external_merges(pairs: Sequence[Pair], *, policy: Policy, target: int, count: int) -> Decision:
    """Merge the quietest of ``pairs`` (free to merge) until the world's ``count``
    zones come down to ``target``, never below ``min_zones``."""
    merges: list[Merge] = []
    notes: list[str] = []
    for p in sorted(pairs, key=_quietest)[: max(0, count - target)]:
        now_zones = count - len(merges)
        if now_zones - 1 < policy.min_zones:
            notes.append(_min_zones_note(p, policy))
            break
        merges.append(Merge(p, f"spec.replicas={target} < {now_zones} zones"))
    return Decision(merges=tuple(merges), notes=tuple(notes))


def external_target(world: WorldSpec) -> int | None:
    """The zone count External mode scales to (``spec.replicas`` within
    minZones..maxZones); None in Density mode, or without ``spec.replicas``."""
    policy = world.policy
    if policy.mode != "External" or world.replicas is None:
        return None
    return min(max(world.replicas, policy.min_zones), policy.max_zones)


def autoscale(draft: Draft, active: Sequence[ZoneView], now: float) -> None:
    """Split and merge the active open-world zones by the world's mode: first the
    splits, then the merges of pairs no split has used."""
    policy = draft.world.policy
    pairs = draft.pairs
    draft.over_since = over_mark_since(active, policy=policy, since=draft.over_since, now=now)
    draft.under_since = under_mark_since(pairs, policy=policy, since=draft.under_since, now=now)
    count = _zone_count(draft, active)
    candidates = _splittable(draft, active, now)
    target = external_target(draft.world)
    if target is None:
        splits = density_splits(
            candidates, policy=policy, over_since=draft.over_since, count=count, now=now
        )
        count += _carry_out_splits(draft, splits, now)
        merges = density_merges(
            _mergeable(draft, pairs, now),
            policy=policy,
            under_since=draft.under_since,
            count=count,
            now=now,
        )
    else:
        splits = external_splits(candidates, policy=policy, target=target, count=count)
        count += _carry_out_splits(draft, splits, now)
        merges = external_merges(
            _mergeable(draft, pairs, now), policy=policy, target=target, count=count
        )
    _carry_out_merges(draft, merges, now)


def _busiest(z: ZoneView) -> tuple[int, str]:
    return -z.players, z.name


def _quietest(p: Pair) -> tuple[int, str]:
    return p.child.players + p.parent.players, p.child.name


def _halves(z: ZoneView, policy: Policy) -> tuple[Rect, Rect] | str:
    """The halves ``z`` splits into, or why it cannot split."""
    assert z.bounds is not None
    if z.depth >= policy.max_depth:
        return f"{z.name} has {z.players} players but is at maxDepth={policy.max_depth}"
    halves = split_rect(z.bounds, policy.min_zone_size, z.sample_x, z.sample_z)
    if halves is None:
        return f"{z.name} has {z.players} players but is at the minimum zone size"
    return halves


def _min_zones_note(p: Pair, policy: Policy) -> str:
    return f"{p.child.name} and {p.parent.name} are quiet but minZones={policy.min_zones}"


def _zone_count(draft: Draft, active: Sequence[ZoneView]) -> int:
    """Open-world zones with bounds once the earlier rules are carried out: the
    active ones not being deleted or drained and the ones placed in their stead."""
    placed = sum(
        1
        for a in draft.actions
        if isinstance(a, CreateZone | AssignStandby)
        and a.bounds is not None
        and not (isinstance(a, CreateZone) and a.instance is not None)
    )
    drained = {a.zone for a in draft.actions if isinstance(a, Drain)}
    return len([z for z in active if not z.deleting and z.name not in drained]) + placed


def _splittable(draft: Draft, active: Sequence[ZoneView], now: float) -> list[ZoneView]:
    """Ready zones with bounds, not being deleted, not used or cooling down."""
    return [
        z
        for z in active
        if z.phase == Phase.READY
        and not z.deleting
        and z.name not in draft.busy
        and not draft.cooling(z.name, now)
        and z.bounds is not None
    ]


def _mergeable(draft: Draft, pairs: Sequence[Pair], now: float) -> list[Pair]:
    """Pairs of Ready zones, neither being deleted, used or cooling down."""
    return [
        p
        for p in pairs
        if not (
            {p.child.name, p.parent.name} & draft.busy
            or p.child.deleting
            or p.parent.deleting
            or draft.cooling(p.child.name, now)
            or draft.cooling(p.parent.name, now)
            or p.child.phase != Phase.READY
            or p.parent.phase != Phase.READY
        )
    ]


def _carry_out_splits(draft: Draft, decision: Decision, now: float) -> int:
    """Each split: the zone keeps the lower half, a standby or a new zone takes the
    upper half, both cool down. Returns the number of zones added."""
    draft.notes.extend(decision.notes)
    for split in decision.splits:
        z = split.zone
        assert z.bounds is not None
        reason = f"split {z.name} {z.bounds.text()} at {cut_text(split.low, split.high)}: "
        reason += split.why
        draft.actions.append(Rebound(z.name, split.low, z.depth + 1, "Split", reason))
        new = draft.place(
            split.high,
            parent=z.name,
            depth=z.depth + 1,
            split_depth=z.depth + 1,
            decision="Split",
            reason=reason,
        )
        draft.busy.add(z.name)
        draft.cool(now, z.name, new)
    return len(decision.splits)


def _carry_out_merges(draft: Draft, decision: Decision, now: float) -> None:
    """Each merge: the parent takes the union, the child drains into it, both cool down."""
    draft.notes.extend(decision.notes)
    for merge in decision.merges:
        child, parent, union = merge.pair
        reason = f"merge {child.name} into {parent.name} ({union.text()}): {merge.why}"
        draft.actions.append(Rebound(parent.name, union, parent.depth - 1, "Merge", reason))
        draft.actions.append(Drain(child.name, parent.name, "Merge", reason))
        draft.drain_since[child.name] = now
        draft.busy.update({child.name, parent.name})
        draft.cool(now, child.name, parent.name)
