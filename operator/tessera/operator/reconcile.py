"""One reconcile pass over a World (the kopf timer's body): observe, plan, act.

1. Re-apply the intent log (``status.pending``) of a pass that stopped halfway.
2. Read the World's ZoneServers and their heartbeats from Redis; patch each
   ZoneServer's status. Read the matchmaker's instance requests of the world.
3. Run the planner; record the actions as the intent log with the planner's
   memory in the World's status, then carry them out: ZoneServers created,
   re-bounded, told to drain, deleted.
4. Publish the zone map of the resulting layout to Redis; tell zones their new
   bounds or to drain over gRPC (best effort, repeated every pass until the
   heartbeat shows it).
5. Post an Event per decision, append it to the world's Redis event stream,
   count it, and write the World's status; then acknowledge the instance
   requests the plan took care of (its memory, e.g. an end's time, is kept).

Every step is idempotent (create tolerates "exists", delete "not found"), so
a pass cut short by an error or a leader change is finished by the next one.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tessera.operator import metrics, resources
from tessera.operator.kube import Kube, KubeError
from tessera.operator.planner.actions import (
    Action,
    AssignStandby,
    CreateZone,
    Delete,
    Drain,
    Plan,
    Rebound,
    advance,
)
from tessera.operator.planner.model import InstanceRequest, Memory, WorldSpec, ZoneView
from tessera.operator.planner.rules import plan
from tessera.operator.store import Entry, OperatorStore
from tessera.operator.zonectl import ZoneControl
from tessera.v1 import zone_pb2
from tessera.wire.geometry import to_bounds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deps:
    """The adapters a pass works through."""

    kube: Kube
    store: OperatorStore
    zones: ZoneControl
    instance: str


def iso(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, tz=datetime.UTC).isoformat(timespec="seconds")


async def apply_action(deps: Deps, world_obj: Mapping[str, Any], action: Action) -> None:
    """Carry out one planner action on the Kubernetes objects."""
    namespace = world_obj["metadata"]["namespace"]
    if isinstance(action, CreateZone):
        try:
            await deps.kube.create_zoneserver(namespace, resources.zoneserver(world_obj, action))
        except KubeError as err:
            if err.status != 409:  # already created by an earlier, interrupted pass
                raise
    elif isinstance(action, AssignStandby | Rebound | Drain):
        await deps.kube.patch_zoneserver(namespace, action.zone, resources.zoneserver_patch(action))
    else:
        await deps.kube.delete_zoneserver(namespace, action.zone)


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


def count_instances(
    world: str, views: Sequence[ZoneView], requests: Sequence[InstanceRequest], result: Plan
) -> None:
    """The instance gauges after a plan."""
    metrics.INSTANCES.labels(world).set(sum(1 for z in views if z.instance is not None))
    done = set(result.done)
    waiting = sum(1 for r in requests if r.kind == "create" and r.id not in done)
    metrics.INSTANCE_REQUESTS_WAITING.labels(world).set(waiting)


def order(actions: Sequence[Action]) -> list[Action]:
    """New zones first, then re-bounds, drains and deletions, so the layout never
    has a gap (it may briefly overlap while a split is carried out)."""
    rank = {CreateZone: 0, AssignStandby: 0, Rebound: 1, Drain: 2, Delete: 3}
    return sorted(actions, key=lambda a: rank[type(a)])


async def reconcile_world(
    world_obj: Mapping[str, Any], deps: Deps, now: float | None = None
) -> Plan:
    """One pass over the World; returns the plan it carried out."""
    now = time.time() if now is None else now
    stamp = iso(now)
    meta = world_obj["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    previous: dict[str, Any] = dict(world_obj.get("status") or {})
    world = resources.world_spec(world_obj)

    for raw in previous.get("pending") or []:
        await apply_action(deps, world_obj, resources.action_of(raw))

    objs = await deps.kube.list_zoneservers(namespace, name)
    statuses = await deps.store.zone_statuses(name, [o["metadata"]["name"] for o in objs])
    views = [resources.zone_view(o, statuses.get(o["metadata"]["name"])) for o in objs]
    await _patch_zone_statuses(
        deps, world=world, objs=objs, views=views, statuses=statuses, stamp=stamp, now=now
    )
    _count_phases(world.name, views)
    requests, bad = instance_requests(name, await deps.store.instance_entries(name))
    await deps.store.ack_instances(name, bad)

    started = time.perf_counter()
    result = plan(world, views, now, Memory.from_dict(previous.get("planner")), requests)
    metrics.PLANNER_SECONDS.observe(time.perf_counter() - started)
    actions = order(result.actions)
    if actions:
        await deps.kube.patch_world_status(
            namespace,
            name,
            {
                "planner": result.memory.to_dict(),
                "pending": [resources.action_dict(a) for a in actions],
            },
        )
        for action in actions:
            await apply_action(deps, world_obj, action)

    after = advance(views, actions)
    version = await deps.store.publish_zone_map(
        name, to_bounds(world.bounds), resources.map_entries(world, after, statuses)
    )
    targets = {o["metadata"]["name"]: (o.get("spec") or {}).get("drainTarget") for o in objs}
    targets.update({a.zone: a.target for a in actions if isinstance(a, Drain)})
    await deps.zones.converge(
        world.name,
        after,
        statuses=statuses,
        targets=targets,
        version=version,
        drain_deadline_s=world.drain_timeout_s,
    )
    await _record(
        deps,
        world_obj=world_obj,
        world=world,
        actions=actions,
        before=Memory.from_dict(previous.get("planner")),
        now=now,
    )

    status = resources.world_status(
        world, after, result, map_version=version, previous=previous, now=stamp
    )
    status["pending"] = []
    await deps.kube.patch_world_status(namespace, name, status)
    await deps.store.ack_instances(name, result.done)
    count_instances(name, after, requests, result)
    for note in result.notes:
        log.info("planner note", extra={"world": name, "note": note})
    return result


async def _patch_zone_statuses(
    deps: Deps,
    *,
    world: WorldSpec,
    objs: Sequence[Mapping[str, Any]],
    views: Sequence[ZoneView],
    statuses: Mapping[str, zone_pb2.ZoneStatus],
    stamp: str,
    now: float,
) -> None:
    for obj, view in zip(objs, views, strict=True):
        patch = resources.zone_status(obj, view, statuses.get(view.name), world, stamp)
        if resources.status_due(obj.get("status") or {}, patch, now):
            try:
                await deps.kube.patch_zoneserver_status(
                    obj["metadata"]["namespace"], view.name, patch
                )
            except KubeError as err:
                if err.status != 404:  # deleted meanwhile
                    raise


def _count_phases(world: str, views: Sequence[ZoneView]) -> None:
    counts: dict[str, int] = {}
    for z in views:
        counts[z.phase.value] = counts.get(z.phase.value, 0) + 1
    for phase in ("Pending", "Starting", "Ready", "Draining", "Drained", "Failed"):
        metrics.ZONES.labels(world, phase).set(counts.get(phase, 0))


async def _record(
    deps: Deps,
    *,
    world_obj: Mapping[str, Any],
    world: WorldSpec,
    actions: Sequence[Action],
    before: Memory,
    now: float,
) -> None:
    """Events, the Redis event stream and counters for the decisions taken."""
    seen: set[tuple[str, str]] = set()
    namespace = world_obj["metadata"]["namespace"]
    metrics.count(world.name, actions, before.drain_since, now)
    for action in actions:
        key = (action.decision, action.reason)
        if key in seen:
            continue
        seen.add(key)
        try:
            await deps.kube.post_event(
                namespace, resources.event(world_obj, action, iso(now), instance=deps.instance)
            )
        except KubeError:
            metrics.RECONCILE_ERRORS.labels("event").inc()
            log.exception("posting an event failed", extra={"world": world.name})
        await deps.store.append_event(
            world.name,
            {"decision": action.decision, "zone": action.zone, "reason": action.reason},
        )
