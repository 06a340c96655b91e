"""The planner's entry point: :func:`plan` runs its rules in order over one draft.

1. finished drains (:mod:`.layout`); 2. instance zones (:mod:`.instances`);
3. a Static world only drains deleted zones; 4. a new managed world gets its
initial layout; 5. if the active zones do not partition the world exactly,
nothing scales; 6. deleted zones hand their area on (:mod:`.layout`);
7. zones on draining nodes or with an old template are replaced
(:mod:`.replace`); 8. splits and merges (:mod:`.autoscale`); 9. the standby
pool (:mod:`.layout`), with the replacements' surge.
"""

from __future__ import annotations

from collections.abc import Sequence

from tessera.operator.planner.actions import Plan
from tessera.operator.planner.autoscale import autoscale
from tessera.operator.planner.draft import Draft
from tessera.operator.planner.geometry import partition_errors
from tessera.operator.planner.instances import instances
from tessera.operator.planner.layout import (
    deletions,
    finish_drains,
    initial_layout,
    standby_pool,
    static_drains,
)
from tessera.operator.planner.model import Desired, InstanceRequest, Memory, WorldSpec, ZoneView
from tessera.operator.planner.replace import replacements


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
    draft = Draft(world, by_name, memory or Memory())
    finish_drains(draft, now)
    instances(draft, requests, now)
    if world.layout == "Static":
        static_drains(draft, now)
        return draft.plan(now)

    active = [
        z
        for z in by_name.values()
        if z.desired == Desired.ACTIVE and z.managed and z.instance is None
    ]
    draining = any(z.desired == Desired.DRAINING and z.instance is None for z in by_name.values())
    if not active and not draining:
        initial_layout(draft)
    else:
        errors = partition_errors(world.bounds, [z.bounds for z in active if z.bounds])
        if errors or any(z.bounds is None for z in active):
            draft.notes.append(
                "zones do not partition the world; scaling held: " + "; ".join(errors)
            )
        else:
            deletions(draft, active, now)
            replacements(draft, active, now)
            if world.policy.enabled:
                autoscale(draft, active, now)
    standby_pool(draft)
    return draft.plan(now)
