"""Instance zones: a private copy of the world's area for one match, created
from the matchmaker's requests (oldest first, at most ``maxInstances`` at once)
and ended by the rules of :class:`InstancePolicy`. An instance ends by draining
with no target, so its players go back to the open-world zone that owns their
position. Instance zones stand outside the world's partition: every other rule
leaves them alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tessera.operator.planner.actions import CreateZone, Drain
from tessera.operator.planner.draft import Draft
from tessera.operator.planner.model import Desired, InstancePolicy, InstanceRequest, Phase, ZoneView


def instances(draft: Draft, requests: Sequence[InstanceRequest], now: float) -> None:
    """Record the ends of reported matches, create the requested instance zones
    (the rest wait, unacknowledged, for a later plan) and end instances whose
    time has come."""
    present = {z.name: z for z in draft.zones.values() if z.instance is not None}
    _record_ends(draft, requests, present, now)
    _create_requested(draft, requests, present, now)
    _end_instances(draft, present, now)


def _record_ends(
    draft: Draft, requests: Sequence[InstanceRequest], present: Mapping[str, ZoneView], now: float
) -> None:
    """Remember when each running instance's match was reported (not later than now)."""
    for r in requests:
        if r.kind == "end":
            if r.zone in present:
                draft.end_at.setdefault(r.zone, min(r.at, now))
            draft.done.append(r.id)


def _create_requested(
    draft: Draft, requests: Sequence[InstanceRequest], present: Mapping[str, ZoneView], now: float
) -> None:
    """One zone per requested instance, oldest request first, up to ``max_instances``."""
    policy = draft.world.instances
    ended = {r.zone for r in requests if r.kind == "end"}
    count = len(present)
    waiting = 0
    for r in requests:
        if r.kind != "create":
            continue
        if r.zone in present or r.zone in ended or r.zone in draft.busy:
            # Already created, a repeated request, or its match is already over.
            draft.done.append(r.id)
            continue
        if r.zone in draft.zones:
            draft.notes.append(
                f"instance {r.zone} of match {r.match}: an open-world zone has its name"
            )
            draft.done.append(r.id)
            continue
        if now - r.at >= policy.start_timeout_s:
            # Waited too long: its players' connect tokens have expired and their
            # instance would only idle out; they queue again.
            draft.notes.append(
                f"instance {r.zone} of match {r.match} dropped: requested {now - r.at:g}s ago, "
                f"startTimeoutSeconds={policy.start_timeout_s:g}"
            )
            draft.done.append(r.id)
            continue
        if count >= policy.max_instances:
            waiting += 1
            continue
        reason = f"match {r.match}: instance zone for {len(r.players)} players"
        draft.actions.append(
            CreateZone(
                r.zone,
                draft.world.bounds,
                None,
                0,
                0,
                "Instance",
                reason,
                instance=r.match,
                mode=r.mode,
            )
        )
        draft.busy.add(r.zone)
        draft.done.append(r.id)
        count += 1
    if waiting:
        draft.notes.append(f"{waiting} instance requests wait: maxInstances={policy.max_instances}")


def _end_instances(draft: Draft, present: Mapping[str, ZoneView], now: float) -> None:
    """Drain (with no target) each running instance that ends now."""
    for z in present.values():
        if z.desired == Desired.DRAINING or z.name in draft.busy:
            continue
        _watch_players(draft, z, now)
        why = end_reason(
            z,
            policy=draft.world.instances,
            joined=draft.joined,
            idle_since=draft.idle_since,
            end_at=draft.end_at,
            now=now,
        )
        if why is not None:
            draft.actions.append(
                Drain(z.name, None, "InstanceEnd", f"end instance {z.name}: {why}")
            )
            draft.drain_since[z.name] = now
            draft.busy.add(z.name)


def _watch_players(draft: Draft, z: ZoneView, now: float) -> None:
    """Update the instance's timers: when it first had players, since when it has
    none. Players are only known from a live (Ready) heartbeat."""
    if z.phase != Phase.READY:
        return
    if z.players > 0:
        draft.joined.setdefault(z.name, now)
        draft.idle_since.pop(z.name, None)
    elif z.name in draft.joined:
        draft.idle_since.setdefault(z.name, now)


def end_reason(
    z: ZoneView,
    *,
    policy: InstancePolicy,
    joined: Mapping[str, float],
    idle_since: Mapping[str, float],
    end_at: Mapping[str, float],
    now: float,
) -> str | None:
    """Why instance ``z`` ends now (None: it goes on): deleted, its match reported
    ``end_grace_s`` ago, idle for ``idle_s`` after it had players, nobody joined
    within ``start_timeout_s``, or ``max_lifetime_s`` old."""
    if z.deleting:
        return "the ZoneServer is being deleted"
    reported = end_at.get(z.name)
    if reported is not None and now - reported >= policy.end_grace_s:
        return f"match {z.instance} was reported {now - reported:g}s ago"
    idle = idle_since.get(z.name)
    if idle is not None and now - idle >= policy.idle_s:
        return f"no players for {now - idle:g}s"
    if z.created is not None:
        age = now - z.created
        if z.name not in joined and age >= policy.start_timeout_s:
            return f"no player joined within {age:g}s"
        if age >= policy.max_lifetime_s:
            return f"{age:g}s old, maxLifetimeSeconds={policy.max_lifetime_s:g}"
    return None
