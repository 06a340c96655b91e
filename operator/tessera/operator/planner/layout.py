"""The layout rules besides autoscaling: drained zones go, a new managed world
gets its first zones, a deleted zone hands its area on, a Static world only
drains what is deleted, and the standby pool is kept at its size."""

from __future__ import annotations

import heapq

from tessera.operator.planner.actions import AssignStandby, CreateZone, Delete, Drain, Rebound
from tessera.operator.planner.draft import Draft, fresh
from tessera.operator.planner.geometry import split_rect
from tessera.operator.planner.model import Desired, Phase, ZoneView
from tessera.wire.geometry import Rect

# After the drain timeout the zone forces its remaining handoffs itself (it got
# the same timeout in its Drain, a little after the pass that started the clock
# here); it is removed only this much later, so a stop never cuts those off.
FORCE_MARGIN_S = 10.0


def finish_drains(draft: Draft, now: float) -> None:
    """Delete a draining zone once it reports Drained or never heartbeated (nothing
    to hand away), or :data:`FORCE_MARGIN_S` after the world's drain timeout. A zone whose
    heartbeat stopped (Failed) waits for the timeout too: on a loaded machine a
    zone still handing players away can miss heartbeats, and deleting it would
    stop it with those players inside."""
    timeout = draft.world.drain_timeout_s
    for z in draft.zones.values():
        if z.desired != Desired.DRAINING:
            continue
        since = draft.drain_since.setdefault(z.name, now)
        if z.phase in (Phase.DRAINED, Phase.PENDING):
            why = "drained" if z.phase == Phase.DRAINED else "pending, nothing to drain"
            draft.actions.append(Delete(z.name, False, "Drained", f"{z.name} {why}"))
        elif now - since >= timeout + FORCE_MARGIN_S:
            reason = f"{z.name} still draining {timeout:g}s after its drain timeout began; removed"
            draft.actions.append(Delete(z.name, True, "DrainTimeout", reason))
        draft.busy.add(z.name)


def static_drains(draft: Draft, now: float) -> None:
    """A Static world's zones are the user's: only a deleted one is told to drain."""
    for z in draft.zones.values():
        if z.deleting and z.desired != Desired.DRAINING and z.instance is None:
            draft.actions.append(Drain(z.name, None, "Delete", f"{z.name} is being deleted"))
            draft.drain_since[z.name] = now


def initial_layout(draft: Draft) -> None:
    """The first zones of a managed world: the whole world, halved at the middle
    (largest zone first) until there are ``min_zones`` (``spec.replicas`` in
    External mode, if more) or nothing can be cut."""
    policy = draft.world.policy
    want = (
        max(policy.min_zones, draft.world.replicas or 0)
        if policy.mode == "External"
        else policy.min_zones
    )
    want = min(want, policy.max_zones)
    root = draft.new_name()
    # name -> (bounds, parent, depth, split depth)
    layout: dict[str, tuple[Rect, str | None, int, int]] = {root: (draft.world.bounds, None, 0, 0)}
    # The zones that may still be cut, largest first (then by name). A zone that
    # cannot be cut never can (its rectangle and depth stay), so it leaves the heap.
    heap = [(-draft.world.bounds.area, root)]
    while len(layout) < want:
        if not heap:
            draft.notes.append(f"only {len(layout)} of {want} initial zones fit the minimum size")
            break
        _, name = heapq.heappop(heap)
        rect, parent, depth, born = layout[name]
        halves = split_rect(rect, policy.min_zone_size, (), ())
        if halves is None or depth >= policy.max_depth:
            continue
        child = draft.new_name()
        layout[name] = (halves[0], parent, depth + 1, born)
        layout[child] = (halves[1], name, depth + 1, depth + 1)
        heapq.heappush(heap, (-halves[0].area, name))
        heapq.heappush(heap, (-halves[1].area, child))
    for name, (rect, parent, depth, born) in layout.items():
        reason = f"initial layout: {name} at {rect.text()}"
        draft.actions.append(CreateZone(name, rect, parent, depth, born, "Initial", reason))
        draft.busy.add(name)


def deletions(draft: Draft, active: list[ZoneView], now: float) -> None:
    """A zone being deleted hands its area to its sibling (a merge) or, when that
    is impossible or would go below ``min_zones``, to a replacement zone; then it
    drains into that zone."""
    count = len(active)
    for z in active:
        if not z.deleting or z.name in draft.busy or z.bounds is None:
            continue
        partner = _free_sibling(draft, z)
        if partner is not None and count - 1 >= draft.world.policy.min_zones:
            other, union = partner
            reason = f"{z.name} is being deleted; {other.name} absorbs {z.bounds.text()}"
            draft.actions.append(Rebound(other.name, union, other.depth - 1, "Merge", reason))
            target = other.name
            count -= 1
        else:
            reason = f"{z.name} is being deleted; a new zone takes over {z.bounds.text()}"
            target = draft.place(
                z.bounds,
                parent=z.parent,
                depth=z.depth,
                split_depth=z.split_depth,
                decision="Replace",
                reason=reason,
            )
        draft.actions.append(Drain(z.name, target, "Delete", reason))
        draft.drain_since[z.name] = now
        draft.busy.update({z.name, target})
        draft.cool(now, target)


def _free_sibling(draft: Draft, z: ZoneView) -> tuple[ZoneView, Rect] | None:
    """The sibling ``z`` can merge with (not being deleted, not used yet), and their union."""
    for child, parent, union in draft.pairs_of.get(z.name, ()):
        other = parent if child.name == z.name else child
        if not other.deleting and other.name not in draft.busy:
            return other, union
    return None


def standby_pool(draft: Draft) -> None:
    """Keep ``standby`` idle zones (plus a rollout's surge) running the current
    template: start more, remove the surplus and the out-of-date ones."""
    zones = draft.zones.values()
    assigned = {a.zone for a in draft.actions if isinstance(a, AssignStandby)}
    pool = [
        z
        for z in zones
        if z.desired == Desired.STANDBY and not z.deleting and z.name not in assigned
    ]
    left = [z.name for z in pool if fresh(z, draft.world)]
    size = draft.world.standby + draft.surge
    for _ in range(size - len(left)):
        name = draft.new_name()
        draft.actions.append(
            CreateZone(name, None, None, 0, 0, "Standby", "refill the standby pool")
        )
    for name in sorted(left, reverse=True)[: max(0, len(left) - size)]:
        draft.actions.append(Delete(name, False, "Standby", "standby pool above its size"))
    for z in pool:
        if z.evicting:
            reason = f"standby {z.name} is on a draining node"
            draft.actions.append(Delete(z.name, False, "NodeDrain", reason))
        elif not fresh(z, draft.world):
            reason = f"standby {z.name} runs an old zone template"
            draft.actions.append(Delete(z.name, False, "Rollout", reason))
    for z in zones:
        if z.desired == Desired.STANDBY and z.deleting and z.name not in assigned:
            reason = f"standby {z.name} is being deleted"
            draft.actions.append(Delete(z.name, False, "Delete", reason))
