"""A World's zones as ``python -m tessera.zone`` processes, forked from a template
that imported the zone's code once: the local runtime's
:class:`~tessera.operator.reconcile.Workloads`.

What Kubernetes keeps in resources is kept here in memory: each zone's spec (a
:class:`ZoneView`), the drain target it was given, and the planner memory. A
zone process that dies while it should run is started again (what its
Deployment does on Kubernetes); it recovers its players from Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from tessera.common.process import ForkedProcess, ServiceProcess
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
)
from tessera.operator.planner.model import Desired, Memory, Phase, WorldSpec, ZoneView
from tessera.operator.reconcile import Observation
from tessera.operator.store import OperatorStore

log = logging.getLogger(__name__)


ZONE_TEMPLATE = "tessera.zone.prefork"  # what the zone processes are forked from

# A zone's graceful stop (grace + hooks, after which it exits 1) stays inside the
# 15 s that ServiceProcess.terminate waits before SIGKILL; the zone env may override.
STOP_BOUND = {"TESSERA_SHUTDOWN_GRACE_S": "5", "TESSERA_SHUTDOWN_HOOKS_S": "5"}


@dataclass
class LocalZone:
    """One zone process and what the runtime wants of it."""

    view: ZoneView
    process: ServiceProcess
    drain_target: str | None = None
    mode: str = ""  # an instance zone's match mode


class ZoneProcesses:
    """The zone processes of one World."""

    def __init__(
        self,
        world: WorldSpec,
        *,
        redis_url: str,
        env: Mapping[str, str],
        modules: Mapping[str, str] | None = None,
        instance_env: Mapping[str, str] | None = None,
    ) -> None:
        self.world = world
        self.redis_url = redis_url
        # What every zone process gets besides its own variables.
        self.env = dict(env)
        # The game module of each instance mode that has its own, and what instance
        # zones get besides (where to report their match result, with what client).
        self.modules = dict(modules or {})
        self.instance_env = dict(instance_env or {})
        self.zones: dict[str, LocalZone] = {}
        self.memory = Memory()
        # Zones whose "node" is being drained (local drills of a node drain).
        self.cordoned: set[str] = set()

    def update(self, world: WorldSpec, env: Mapping[str, str], modules: Mapping[str, str]) -> None:
        """A new World spec, zone environment and modes' modules: zones started from
        now on get them; the running open-world ones are replaced by the planner when
        the template changed (instance zones play their match out as they started)."""
        self.world = world
        self.env = dict(env)
        self.modules = dict(modules)

    async def _start(self, name: str, view: ZoneView, mode: str = "") -> ServiceProcess:
        instance = {**self.instance_env} if view.instance else {}
        if mode in self.modules:
            instance["TESSERA_GAME_MODULE"] = self.modules[mode]
        env = {
            **STOP_BOUND,
            **self.env,
            **instance,
            "TESSERA_WORLD": self.world.name,
            "TESSERA_ZONE": name,
            "TESSERA_WORLD_BOUNDS": self.world.bounds.text(),
            "TESSERA_ZONE_BOUNDS": view.bounds.text() if view.bounds else "",
            "TESSERA_REDIS_URL": self.redis_url,
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_DRAIN_TIMEOUT_S": f"{self.world.drain_timeout_s:g}",
            **({"TESSERA_ZONE_INSTANCE": view.instance} if view.instance else {}),
        }
        # Forked from a template that loaded the zone's code once: a start costs
        # ~0.1 CPU-s instead of ~1, taken from the zones running beside it. The fork
        # server answers once it has forked (tens of ms; the first start, which
        # starts the template, seconds): waited for in a thread, not on the loop.
        process = ForkedProcess("tessera.zone", env, name=name, preload=ZONE_TEMPLATE)
        return await asyncio.to_thread(process.start)

    async def resume(self, now: float) -> None:
        """Start again a zone whose process died while it should run."""
        for name, zone in self.zones.items():
            if zone.process.alive() or zone.view.desired == Desired.DRAINING:
                continue
            log.warning(
                "zone process died; restarting",
                extra={"zone": name, "last_lines": list(zone.process.lines)[-3:]},
            )
            metrics.ZONE_RESTARTS.inc()
            zone.process = await self._start(name, zone.view, zone.mode)

    async def observe(self, store: OperatorStore, now: float) -> Observation:
        """Each zone's load and phase from its heartbeat; a zone whose process is
        gone has Failed (unless it drained)."""
        statuses = await store.zone_statuses(self.world.name, sorted(self.zones))
        for name, zone in self.zones.items():
            status = statuses.get(name)
            phase = resources.phase_of(status, zone.view.phase.value)
            if not zone.process.alive() and phase != Phase.DRAINED:
                phase = Phase.FAILED
            zone.view = replace(
                zone.view,
                phase=phase,
                players=int(status.players) if status else 0,
                overload_level=int(status.overload_level) if status else 0,
                sample_x=status.sample_x if status else (),
                sample_z=status.sample_z if status else (),
                evicting=name in self.cordoned,
            )
        return Observation(
            views=[z.view for z in self.zones.values()],
            statuses=statuses,
            drain_targets={name: z.drain_target for name, z in self.zones.items()},
            memory=self.memory,
        )

    async def intend(self, memory: Memory, actions: Sequence[Action]) -> None:
        """Keep the planner memory (the actions are carried out at once, in this process)."""
        self.memory = memory

    async def apply(self, action: Action, now: float) -> None:
        """Start, re-bound, drain or stop a zone process."""
        if isinstance(action, CreateZone):
            view = ZoneView(
                action.zone,
                Desired.ACTIVE if action.bounds else Desired.STANDBY,
                action.bounds,
                action.parent,
                action.depth,
                action.split_depth,
                instance=action.instance,
                created=now,
                revision=self.world.revision,
            )
            process = await self._start(action.zone, view, action.mode)
            self.zones[action.zone] = LocalZone(view, process, mode=action.mode)
            return
        zone = self.zones.get(action.zone)
        if zone is None:
            return
        if isinstance(action, AssignStandby):
            zone.view = replace(
                zone.view,
                desired=Desired.ACTIVE,
                bounds=action.bounds,
                parent=action.parent,
                depth=action.depth,
                split_depth=action.split_depth,
            )
        elif isinstance(action, Rebound):
            zone.view = replace(zone.view, bounds=action.bounds, depth=action.depth)
        elif isinstance(action, Adopt):
            zone.view = replace(zone.view, parent=action.parent)
        elif isinstance(action, Drain):
            zone.view = replace(zone.view, desired=Desired.DRAINING)
            zone.drain_target = action.target
        elif isinstance(action, Delete):
            del self.zones[action.zone]
            self.cordoned.discard(action.zone)
            await asyncio.to_thread(zone.process.terminate)

    async def announce(self, action: Action, now: float) -> None:
        """A log line."""
        log.info(action.reason, extra={"decision": action.decision, "zone": action.zone})

    async def report(
        self, zones: Sequence[ZoneView], result: Plan, *, map_version: int, now: float
    ) -> None:
        """Nothing to record: the state is in this process (and the zone map in Redis)."""

    async def close(self) -> None:
        """Stop every zone process."""
        zones = list(self.zones.values())
        self.zones.clear()
        await asyncio.gather(*(asyncio.to_thread(z.process.terminate) for z in zones))
