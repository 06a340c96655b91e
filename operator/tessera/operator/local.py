"""The local runtime: the same planner driving zone *processes* on this machine.

    python -m tessera.operator.local --world world.yaml [--redis-url URL]

The world is a World resource in a YAML file (the same schema and defaults as
on Kubernetes). Each zone is a ``python -m tessera.zone`` child process; state
is in Redis (heartbeats in, the zone map and scaling events out, as on
Kubernetes); zones are told their bounds and to drain over gRPC. Without
``--redis-url`` a redis-server is started on a free loopback port.

Each pass: restart zone processes that died, read heartbeats and the
matchmaker's instance requests, plan, carry out the actions (start, re-bound,
drain, stop processes), acknowledge the requests taken care of, publish the zone
map, converge zones over gRPC. The planner memory lives in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from tessera.common import logs, store
from tessera.common.localredis import LocalRedis
from tessera.common.process import ServiceProcess
from tessera.operator import metrics, resources
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
from tessera.operator.planner.model import Desired, Memory, Phase, WorldSpec, ZoneView
from tessera.operator.planner.rules import plan
from tessera.operator.reconcile import count_instances, instance_requests, order
from tessera.operator.store import OperatorStore
from tessera.operator.zonectl import ZoneControl
from tessera.wire.geometry import to_bounds

log = logging.getLogger("tessera.operator.local")


@dataclass
class LocalZone:
    """One zone process and what the runtime wants of it."""

    view: ZoneView
    process: ServiceProcess
    drain_target: str | None = None


def load_world(path: Path) -> dict[str, Any]:
    """A World resource from a YAML file (namespace defaults to ``local``)."""
    obj = yaml.safe_load(path.read_text())
    if not isinstance(obj, dict) or obj.get("kind") != "World":
        raise resources.SpecError(f"{path} does not hold a World resource")
    obj.setdefault("metadata", {}).setdefault("namespace", "local")
    return obj


class LocalRuntime:
    """Zone processes on this machine, driven by the planner."""

    def __init__(
        self,
        world_obj: Mapping[str, Any],
        redis_url: str,
        *,
        zone_env: Mapping[str, str] | None = None,
    ) -> None:
        self.world_obj = world_obj
        self.world: WorldSpec = resources.world_spec(world_obj)
        self.redis_url = redis_url
        self.redis = store.connect(redis_url)
        self.store = OperatorStore(self.redis)
        self.control = ZoneControl()
        self.zones: dict[str, LocalZone] = {}
        self.memory = Memory()
        self.map_version = 0
        template = (world_obj.get("spec") or {}).get("zoneTemplate") or {}
        self.zone_env = {
            "TESSERA_TICK_HZ": str(template.get("tickRate", 30)),
            **{e["name"]: str(e.get("value", "")) for e in template.get("env", [])},
            **(zone_env or {}),
        }

    def _env(self, name: str, view: ZoneView) -> dict[str, str]:
        return {
            **self.zone_env,
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

    async def _apply(self, action: Action, now: float) -> None:
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
            )
            process = ServiceProcess("tessera.zone", self._env(action.zone, view), name=action.zone)
            self.zones[action.zone] = LocalZone(view, process.start())
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
        elif isinstance(action, Drain):
            zone.view = replace(zone.view, desired=Desired.DRAINING)
            zone.drain_target = action.target
        elif isinstance(action, Delete):
            del self.zones[action.zone]
            await asyncio.to_thread(zone.process.terminate)

    def _restart_crashed(self) -> None:
        """Start again a zone whose process died while it should run (what the
        Deployment does on Kubernetes); it recovers its players from Redis."""
        for name, zone in self.zones.items():
            if zone.process.alive() or zone.view.desired == Desired.DRAINING:
                continue
            log.warning("zone process died; restarting", extra={"zone": name})
            metrics.ZONE_RESTARTS.inc()
            zone.process = ServiceProcess(
                "tessera.zone", self._env(name, zone.view), name=name
            ).start()

    async def step(self, now: float | None = None) -> Plan:
        """One pass: observe, plan, act, publish the map, converge the zones."""
        now = time.time() if now is None else now
        self._restart_crashed()
        statuses = await self.store.zone_statuses(self.world.name, sorted(self.zones))
        for name, zone in self.zones.items():
            status = statuses.get(name)
            phase = resources.phase_of(status, zone.view.phase.value)
            if not zone.process.alive() and phase != Phase.DRAINED:
                phase = Phase.FAILED
            zone.view = replace(
                zone.view,
                phase=phase,
                players=int(status.players) if status else 0,
                sample_x=tuple(status.sample_x) if status else (),
                sample_z=tuple(status.sample_z) if status else (),
            )
        views = [z.view for z in self.zones.values()]
        name = self.world.name
        requests, bad = instance_requests(name, await self.store.instance_entries(name))
        await self.store.ack_instances(name, bad)
        started = time.perf_counter()
        result = plan(self.world, views, now, self.memory, requests)
        metrics.PLANNER_SECONDS.observe(time.perf_counter() - started)
        before, self.memory = self.memory, result.memory
        actions = order(result.actions)
        for action in actions:
            await self._apply(action, now)
        await self.store.ack_instances(name, result.done)
        metrics.count(self.world.name, actions, before.drain_since, now)
        for action in actions:
            log.info(action.reason, extra={"decision": action.decision, "zone": action.zone})
            await self.store.append_event(
                self.world.name,
                {"decision": action.decision, "zone": action.zone, "reason": action.reason},
            )
        after = advance(views, actions)
        count_instances(name, after, requests, result)
        self.map_version = await self.store.publish_zone_map(
            self.world.name,
            to_bounds(self.world.bounds),
            resources.map_entries(self.world, after, statuses),
        )
        await self.control.converge(
            self.world.name,
            after,
            statuses=statuses,
            targets={name: z.drain_target for name, z in self.zones.items()},
            version=self.map_version,
            drain_deadline_s=self.world.drain_timeout_s,
        )
        return result

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Pass after pass until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.step()
            except Exception:
                metrics.RECONCILE_ERRORS.labels("local").inc()
                log.exception("local pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def close(self) -> None:
        """Stop every zone process and close the clients."""
        zones, self.zones = list(self.zones.values()), {}
        await asyncio.gather(*(asyncio.to_thread(z.process.terminate) for z in zones))
        await self.control.close()
        await self.redis.aclose()


async def _main(args: argparse.Namespace) -> None:
    world_obj = load_world(args.world)
    local_redis = None
    redis_url = args.redis_url
    if redis_url is None:
        local_redis = LocalRedis()
        local_redis.start()
        redis_url = local_redis.url
    runtime = LocalRuntime(world_obj, redis_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving", extra={"world": runtime.world.name, "redis_url": redis_url})
    try:
        await runtime.run(stop, args.interval)
    finally:
        await runtime.close()
        if local_redis is not None:
            local_redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="run a World's zones as local processes")
    parser.add_argument("--world", type=Path, required=True, help="a World resource (YAML)")
    parser.add_argument("--redis-url", default=None, help="default: start a local redis-server")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between passes")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    logs.setup("operator-local", args.log_level)
    try:
        asyncio.run(_main(args))
    except resources.SpecError as err:
        raise SystemExit(f"invalid world: {err}") from None


if __name__ == "__main__":
    main()
