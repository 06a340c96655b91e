"""One reconcile pass over a World, the same for both runtimes. The runtime is
a :class:`Workloads`: ZoneServer resources on Kubernetes
(:mod:`tessera.operator.zoneservers`), zone processes on this machine
(:mod:`tessera.operator.processes`).

1. Finish what an interrupted pass left (:meth:`Workloads.resume`).
2. Observe the zones and their heartbeats; read the matchmaker's instance
   requests of the world.
3. Run the planner; keep its memory and the actions as the intent
   (:meth:`Workloads.intend`), then carry them out: new zones first, then
   re-bounds, drains and deletions (:func:`order`).
4. Publish the zone map of the resulting layout to Redis; tell zones their new
   bounds or to drain over gRPC (best effort, repeated every pass until the
   heartbeat shows it).
5. Announce each decision (and append it to the world's Redis event stream),
   count it, report the World's status; then acknowledge the instance requests
   the plan took care of (its memory, e.g. an end's time, is kept).

Every step is idempotent (create tolerates "exists", delete "not found"), so
a pass cut short by an error or a leader change is finished by the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tessera.operator import metrics, resources
from tessera.operator.planner.actions import (
    Action,
    Adopt,
    AssignStandby,
    CreateZone,
    Delete,
    Drain,
    Plan,
    Rebound,
    advance,
)
from tessera.operator.planner.model import Desired, InstanceRequest, Memory, WorldSpec, ZoneView
from tessera.operator.planner.rules import plan
from tessera.operator.store import Entry, OperatorStore
from tessera.operator.zonectl import ZoneControl
from tessera.v1 import zone_pb2
from tessera.wire.bounds import to_bounds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observation:
    """A World's zones as a pass finds them."""

    # Each zone's spec and load, as the planner sees it.
    views: Sequence[ZoneView]
    # The live heartbeat of each zone that has one.
    statuses: Mapping[str, zone_pb2.ZoneStatus]
    # The zone each draining zone was told to drain into (None: by position).
    drain_targets: Mapping[str, str | None]
    # The planner memory the previous pass kept.
    memory: Memory


class Workloads(Protocol):
    """Where a World's zones run: all a pass needs of its runtime."""

    async def resume(self, now: float) -> None:
        """Bring the workloads back to what was decided: carry out the intent a
        pass left unfinished, restart a zone that died while it should run."""

    async def observe(self, store: OperatorStore, now: float) -> Observation:
        """The zones, their heartbeats (read through ``store``) and what the
        runtime kept from the last pass."""

    async def intend(self, memory: Memory, actions: Sequence[Action]) -> None:
        """Keep the planner memory, and the actions about to be carried out so
        that the next pass can finish them if this one stops halfway."""

    async def apply(self, action: Action, now: float) -> None:
        """Carry out one action: start, re-bound, drain or remove a zone."""

    async def announce(self, action: Action, now: float) -> None:
        """Tell the world's operators about one decision."""

    async def report(
        self, zones: Sequence[ZoneView], result: Plan, *, map_version: int, now: float
    ) -> None:
        """Record the World's state after the pass (the intent is carried out)."""


async def reconcile(
    world: WorldSpec,
    *,
    workloads: Workloads,
    store: OperatorStore,
    zones: ZoneControl,
    now: float,
) -> Plan:
    """One pass over the World; returns the plan it carried out."""
    await workloads.resume(now)
    seen = await workloads.observe(store, now)
    _count_phases(world.name, seen.views)
    requests = await _read_instance_requests(store, world.name)

    started = time.perf_counter()
    result = plan(world, seen.views, now, seen.memory, requests)
    metrics.PLANNER_SECONDS.observe(time.perf_counter() - started)
    actions = order(result.actions)
    await workloads.intend(result.memory, actions)
    for action in actions:
        await workloads.apply(action, now)

    after = advance(seen.views, actions, world.revision)
    version = await store.publish_zone_map(
        world.name, to_bounds(world.bounds), resources.map_entries(world, after, seen.statuses)
    )
    targets = {**seen.drain_targets, **{a.zone: a.target for a in actions if isinstance(a, Drain)}}
    await zones.converge(
        world.name,
        after,
        statuses=seen.statuses,
        targets=targets,
        version=version,
        drain_deadline_s=world.drain_timeout_s,
    )
    await _record(
        world.name, actions, workloads=workloads, store=store, before=seen.memory, now=now
    )
    await workloads.report(after, result, map_version=version, now=now)
    metrics.ZONES_OUTDATED.labels(world.name).set(
        sum(
            1
            for z in after
            if z.desired == Desired.ACTIVE
            and z.instance is None
            and not resources.updated(z, world)
        )
    )
    await store.ack_instances(world.name, result.done)
    _count_world(world, after, requests, result)
    for note in result.notes:
        log.info("planner note", extra={"world": world.name, "note": note})
    return result


def order(actions: Sequence[Action]) -> list[Action]:
    """New zones first, then re-bounds, drains and deletions, so the layout never
    has a gap (it may briefly overlap while a split is carried out)."""
    rank = {CreateZone: 0, AssignStandby: 0, Rebound: 1, Adopt: 1, Drain: 2, Delete: 3}
    return sorted(actions, key=lambda a: rank[type(a)])


def instance_requests(
    world: str, entries: Sequence[Entry]
) -> tuple[list[InstanceRequest], list[str]]:
    """The usable instance requests, and the ids of malformed entries (logged and
    counted; acknowledge them at once, they can never be used)."""
    requests, bad = [], []
    for entry_id, fields in entries:
        try:
            requests.append(resources.instance_request(world, entry_id, fields))
        except resources.SpecError as err:
            metrics.INSTANCE_REQUESTS_DROPPED.inc()
            log.warning(
                "instance request dropped",
                extra={"world": world, "entry": entry_id, "error": str(err)},
            )
            bad.append(entry_id)
    return requests, bad


async def _read_instance_requests(store: OperatorStore, world: str) -> list[InstanceRequest]:
    """The world's instance requests not yet taken care of; malformed entries are
    acknowledged at once."""
    requests, bad = instance_requests(world, await store.instance_entries(world))
    await store.ack_instances(world, bad)
    return requests


async def _record(
    world: str,
    actions: Sequence[Action],
    *,
    workloads: Workloads,
    store: OperatorStore,
    before: Memory,
    now: float,
) -> None:
    """Counters for the actions carried out; one announcement and one entry in
    the world's event stream per decision (the actions of one split or merge
    share their reason)."""
    metrics.count(world, actions, before.drain_since, now)
    seen: set[tuple[str, str]] = set()
    for action in actions:
        key = (action.decision, action.reason)
        if key in seen:
            continue
        seen.add(key)
        await workloads.announce(action, now)
        await store.append_event(
            world, {"decision": action.decision, "zone": action.zone, "reason": action.reason}
        )


def _count_phases(world: str, views: Sequence[ZoneView]) -> None:
    """The zone gauge by phase."""
    counts: dict[str, int] = {}
    for z in views:
        counts[z.phase.value] = counts.get(z.phase.value, 0) + 1
    for phase in ("Pending", "Starting", "Ready", "Draining", "Drained", "Failed"):
        metrics.ZONES.labels(world, phase).set(counts.get(phase, 0))


def _count_world(
    spec: WorldSpec,
    views: Sequence[ZoneView],
    requests: Sequence[InstanceRequest],
    result: Plan,
) -> None:
    """The instance gauges and the recommended zone count after a plan."""
    world = spec.name
    metrics.RECOMMENDED_ZONES.labels(world).set(resources.recommended_zones(spec, views))
    metrics.INSTANCES.labels(world).set(sum(1 for z in views if z.instance is not None))
    done = set(result.done)
    waiting = sum(1 for r in requests if r.kind == "create" and r.id not in done)
    metrics.INSTANCE_REQUESTS_WAITING.labels(world).set(waiting)
