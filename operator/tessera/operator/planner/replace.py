"""Replacing zones by handoff: a zone's whole rectangle goes to a fresh zone
(a ready standby running the current template) and the old zone drains into it
through the two-phase handoff, then is deleted like any drained zone. No
player is disconnected and no checkpoint restore is involved.

Two reasons to replace a zone: its node is being drained (``evicting``, first)
and its zone template is out of date (a rolling update). Replacements need a
ready standby; :func:`surge` asks the standby pool for the ones still missing.
The World's ``spec.rollout`` bounds how many run at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from tessera.operator.planner.actions import Adopt, Drain
from tessera.operator.planner.draft import Draft, fresh
from tessera.operator.planner.model import Desired, Phase, WorldSpec, ZoneView


def outdated(zones: Sequence[ZoneView], world: WorldSpec) -> list[ZoneView]:
    """The zones to replace whatever their phase, those on draining nodes first:
    evicting ones always, out-of-date ones unless the rollout is paused."""
    out = [
        z
        for z in zones
        if z.bounds is not None
        and not z.deleting
        and not fresh(z, world)
        and (z.evicting or not world.rollout.paused)
    ]
    return sorted(out, key=lambda z: (not z.evicting, z.name))


def due(zones: Sequence[ZoneView], world: WorldSpec) -> list[ZoneView]:
    """The zones to replace now: the Ready ones of :func:`outdated`."""
    return [z for z in outdated(zones, world) if z.phase == Phase.READY]


def handing_over(zones: Sequence[ZoneView]) -> int:
    """Open-world zones draining now (each holds a place of ``maxUnavailable``)."""
    return sum(1 for z in zones if z.desired == Desired.DRAINING and z.instance is None)


def surge(world: WorldSpec, *, waiting: int, draining: int) -> int:
    """Standbys the rollout wants beyond the pool: one per zone still waiting
    for a replacement, while the extra zones (these and the draining ones) stay
    within ``maxSurge``."""
    return max(0, min(waiting, world.rollout.max_surge - draining))


def replacements(draft: Draft, active: Sequence[ZoneView], now: float) -> None:
    """Hand each due zone's rectangle to a ready standby and drain it into that
    standby, within ``maxUnavailable``; the zones the old one was split from
    and split off go on with the new one (its lineage, so merges still work)."""
    world = draft.world
    todo = [z for z in due(active, world) if z.name not in draft.busy]
    draining = handing_over(list(draft.zones.values()))
    # Zones not Ready at this pass (a heartbeat that lapsed on a loaded node)
    # still wait: their standby is kept, not deleted and started again.
    waiting = sum(1 for z in outdated(active, world) if z.name not in draft.busy)
    for z in todo:
        assert z.bounds is not None
        if draining >= world.rollout.max_unavailable:
            draft.notes.append(
                f"{waiting} zones wait for replacement (maxUnavailable="
                f"{world.rollout.max_unavailable})"
            )
            break
        if not draft.standby:
            break
        decision = "NodeDrain" if z.evicting else "Rollout"
        why = "its node is being drained" if z.evicting else "its zone template is out of date"
        reason = f"replace {z.name} {z.bounds.text()}: {why}"
        new = draft.place(
            z.bounds,
            parent=z.parent,
            depth=z.depth,
            split_depth=z.split_depth,
            decision=decision,
            reason=reason,
        )
        for child in draft.zones.values():
            if child.parent == z.name and child.desired == Desired.ACTIVE:
                draft.actions.append(Adopt(child.name, new, decision, reason))
        draft.actions.append(Drain(z.name, new, decision, reason))
        draft.drain_since[z.name] = now
        draft.busy.update({z.name, new})
        draft.cool(now, new)
        draining += 1
        waiting -= 1
    draft.surge = surge(world, waiting=waiting, draining=draining)
