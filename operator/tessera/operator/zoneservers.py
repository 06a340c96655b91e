"""A World's zones as ZoneServer resources: the Kubernetes runtime's
:class:`~tessera.operator.reconcile.Workloads`, and :func:`reconcile_world`,
the body of the kopf timer.

The planner memory and the intent log (``status.pending``) live in the World's
status, so a restarted or newly elected operator continues where the last one
stopped. Each pass patches the ZoneServer statuses from the heartbeats (at once
when something urgent changed, see :func:`resources.status_due`) and posts an
Event on the World per decision. The ZoneServers' Deployments and Services are
made by the ZoneServer handlers (:mod:`tessera.operator.handlers`).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tessera.operator import metrics, resources
from tessera.operator.kube import Kube, KubeError
from tessera.operator.planner.actions import (
    Action,
    Adopt,
    AssignStandby,
    CreateZone,
    Drain,
    Plan,
    Rebound,
)
from tessera.operator.planner.model import Memory, WorldSpec, ZoneView
from tessera.operator.reconcile import Observation, reconcile
from tessera.operator.store import OperatorStore
from tessera.operator.zonectl import ZoneControl
from tessera.v1 import zone_pb2

log = logging.getLogger(__name__)


def iso(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, tz=datetime.UTC).isoformat(timespec="seconds")


class ZoneServers:
    """The ZoneServers of one World, seen by one pass (the World object is the
    one the pass started from)."""

    def __init__(
        self, kube: Kube, world_obj: Mapping[str, Any], *, world: WorldSpec, instance: str
    ) -> None:
        self.kube = kube
        self.world_obj = world_obj
        self.world = world
        # The reporting instance on Events (this operator replica).
        self.instance = instance
        self.namespace: str = world_obj["metadata"]["namespace"]
        self.previous: dict[str, Any] = dict(world_obj.get("status") or {})

    async def resume(self, now: float) -> None:
        """Re-apply the intent log of a pass that stopped halfway."""
        for raw in self.previous.get("pending") or []:
            await self.apply(resources.action_of(raw), now)

    async def observe(self, store: OperatorStore, now: float) -> Observation:
        """List the World's ZoneServers, read their heartbeats, find those whose
        pod is on a draining node (pods and nodes listed), patch their statuses."""
        objs = await self.kube.list_zoneservers(self.namespace, self.world.name)
        names = [o["metadata"]["name"] for o in objs]
        statuses = await store.zone_statuses(self.world.name, names)
        leaving = await self._evicting()
        views = [
            resources.zone_view(o, statuses.get(name), evicting=name in leaving)
            for o, name in zip(objs, names, strict=True)
        ]
        await self._patch_zone_statuses(objs, views, statuses, now)
        return Observation(
            views=views,
            statuses=statuses,
            drain_targets={
                o["metadata"]["name"]: (o.get("spec") or {}).get("drainTarget") for o in objs
            },
            memory=Memory.from_dict(self.previous.get("planner")),
        )

    async def _evicting(self) -> frozenset[str]:
        """The zones on draining nodes; none (logged, counted) when pods or nodes
        cannot be listed, e.g. RBAC from an older chart: the world goes on."""
        try:
            pods = await self.kube.list_zone_pods(self.namespace, self.world.name)
            nodes = await self.kube.list_nodes()
        except KubeError as err:
            if err.status != 403:
                raise
            metrics.RECONCILE_ERRORS.labels("nodes").inc()
            log.warning("cannot list zone pods or nodes", extra={"error": str(err)})
            return frozenset()
        return resources.evicting(pods, nodes)

    async def intend(self, memory: Memory, actions: Sequence[Action]) -> None:
        """Write the planner memory and the actions as ``status.pending`` (when
        there are any; otherwise the memory goes with :meth:`report`)."""
        if actions:
            await self.kube.patch_world_status(
                self.namespace,
                self.world.name,
                {
                    "planner": memory.to_dict(),
                    "pending": [resources.action_dict(a) for a in actions],
                },
            )

    async def apply(self, action: Action, now: float) -> None:
        """Create, patch or delete the ZoneServer."""
        if isinstance(action, CreateZone):
            try:
                await self.kube.create_zoneserver(
                    self.namespace, resources.zoneserver(self.world_obj, action)
                )
            except KubeError as err:
                if err.status != 409:  # already created by an earlier, interrupted pass
                    raise
        elif isinstance(action, AssignStandby | Rebound | Adopt | Drain):
            await self.kube.patch_zoneserver(
                self.namespace, action.zone, resources.zoneserver_patch(action)
            )
        else:
            await self.kube.delete_zoneserver(self.namespace, action.zone)

    async def announce(self, action: Action, now: float) -> None:
        """A Kubernetes Event on the World (a failure is counted and logged)."""
        event = resources.event(self.world_obj, action, iso(now), instance=self.instance)
        try:
            await self.kube.post_event(self.namespace, event)
        except KubeError:
            metrics.RECONCILE_ERRORS.labels("event").inc()
            log.exception("posting an event failed", extra={"world": self.world.name})

    async def report(
        self, zones: Sequence[ZoneView], result: Plan, *, map_version: int, now: float
    ) -> None:
        """The World's status, with the intent log emptied."""
        status = resources.world_status(
            self.world, zones, result, map_version=map_version, previous=self.previous, now=iso(now)
        )
        status["pending"] = []
        await self.kube.patch_world_status(self.namespace, self.world.name, status)

    async def _patch_zone_statuses(
        self,
        objs: Sequence[Mapping[str, Any]],
        views: Sequence[ZoneView],
        statuses: Mapping[str, zone_pb2.ZoneStatus],
        now: float,
    ) -> None:
        stamp = iso(now)
        for obj, view in zip(objs, views, strict=True):
            patch = resources.zone_status(obj, view, statuses.get(view.name), self.world, stamp)
            if resources.status_due(obj.get("status") or {}, patch, now):
                try:
                    await self.kube.patch_zoneserver_status(self.namespace, view.name, patch)
                except KubeError as err:
                    if err.status != 404:  # deleted meanwhile
                        raise


async def reconcile_world(
    world_obj: Mapping[str, Any],
    *,
    kube: Kube,
    store: OperatorStore,
    zones: ZoneControl,
    instance: str,
    now: float,
) -> Plan:
    """One reconcile pass over a World resource; returns the plan it carried out."""
    world = resources.world_spec(world_obj)
    return await reconcile(
        world,
        workloads=ZoneServers(kube, world_obj, world=world, instance=instance),
        store=store,
        zones=zones,
        now=now,
    )
