"""One plan being put together. The planner's rules run in turn over a
:class:`Draft`: each adds its actions and notes, updates the timers it owns and
marks the zones it used, so a later rule leaves them alone. :meth:`Draft.plan`
is the result."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cached_property

from tessera.operator.planner.actions import Action, AssignStandby, CreateZone, Plan
from tessera.operator.planner.geometry import Pair, pairs_by_zone, sibling_pairs
from tessera.operator.planner.model import Desired, Memory, Phase, WorldSpec, ZoneView
from tessera.wire.geometry import Rect


def zone_name(world: str, number: int) -> str:
    """The name of the world's ``number``-th zone (a DNS label)."""
    suffix = f"-{number}"
    return world[: 63 - len(suffix)] + suffix


def fresh(z: ZoneView, world: WorldSpec) -> bool:
    """Whether ``z`` runs the world's current zone template on a node that stays."""
    return not z.evicting and (not world.revision or z.revision == world.revision)


class Draft:
    """Actions, notes, memory updates and the zones already used (``busy``)."""

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
        # The ids of the instance requests taken care of.
        self.done: list[str] = []
        # Ready standbys that run the current template on a node that stays.
        self.standby = sorted(
            z.name
            for z in zones.values()
            if z.desired == Desired.STANDBY
            and z.phase == Phase.READY
            and not z.deleting
            and fresh(z, world)
        )
        # Standbys a rollout wants beyond the pool's size (its surge).
        self.surge = 0

    @cached_property
    def pairs(self) -> list[Pair]:
        """The sibling pairs of the observed zones, found once per plan (the rules
        that use them skip the zones an earlier rule made ``busy``)."""
        return sibling_pairs(self.zones)

    @cached_property
    def pairs_of(self) -> dict[str, list[Pair]]:
        """:attr:`pairs` by the zones in them."""
        return pairs_by_zone(self.pairs)

    def new_name(self) -> str:
        """The next zone name no zone has."""
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
        """Start the cooldown of zones that took part in a scaling decision."""
        for name in names:
            self.cooldown_until[name] = now + self.world.policy.cooldown_s
            self.over_since.pop(name, None)
            self.under_since.pop(name, None)

    def cooling(self, name: str, now: float) -> bool:
        return now < self.cooldown_until.get(name, -math.inf)

    def memory(self, now: float) -> Memory:
        """The memory for the next call: timers of zones that still exist."""
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
