"""The local runtime: the same planner and the same reconcile pass driving zone
*processes* on this machine.

    python -m tessera.operator.local --world world.yaml --auth-address HOST:PORT [--redis-url URL]

The world is a World resource in a YAML file (the same schema and defaults as
on Kubernetes). Each zone is a ``python -m tessera.zone`` child process
(:mod:`tessera.operator.processes`); state is in Redis (heartbeats in, the zone
map and scaling events out, as on Kubernetes); zones are told their bounds and
to drain over gRPC with the runtime's service credentials (``ServiceLogin`` at
``--auth-address`` as TESSERA_SERVICE_CLIENT_ID, default ``operator``, with
TESSERA_SERVICE_CLIENT_SECRET), and zones verify tokens with auth's keys. Zone
processes inherit the runtime's environment (not its secret), so with
TESSERA_TLS_CA_FILE set both the runtime and its zones call auth over TLS. Without
``--redis-url`` a redis-server is started on a free loopback port.

Instance zones run the module the World names for their match's mode
(``spec.game.modes``), else the world's. With ``--matchmaking-address`` and
TESSERA_ZONE_SERVICE_CLIENT_SECRET (the secret of auth's ``zone`` client) they,
and only they, get what reporting their match result takes (docs/GAME.md, "Rules").

Each pass is :func:`tessera.operator.reconcile.reconcile`, as on Kubernetes:
restart zone processes that died, read heartbeats and the matchmaker's instance
requests, plan, carry out the actions (start, re-bound, drain, stop processes),
publish the zone map, converge zones over gRPC, record the decisions, and
acknowledge the requests taken care of. The planner memory lives in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import yaml

from tessera.authclient.credentials import ServiceCredentials
from tessera.common import logs, store
from tessera.common.config import Env, ServiceClient, load_or_exit
from tessera.common.heap import settle_heap
from tessera.harness.redis import LocalRedis
from tessera.operator import metrics, resources
from tessera.operator.planner.actions import Plan
from tessera.operator.planner.model import WorldSpec
from tessera.operator.processes import LocalZone, ZoneProcesses
from tessera.operator.reconcile import reconcile
from tessera.operator.store import OperatorStore
from tessera.operator.zonectl import ZoneControl

log = logging.getLogger("tessera.operator.local")


def load_world(path: Path) -> dict[str, Any]:
    """A World resource from a YAML file (namespace defaults to ``local``)."""
    obj = yaml.safe_load(path.read_text())
    if not isinstance(obj, dict) or obj.get("kind") != "World":
        raise resources.SpecError(f"{path} does not hold a World resource")
    obj.setdefault("metadata", {}).setdefault("namespace", "local")
    return obj


class LocalRuntime:
    """Zone processes on this machine, driven by the planner. ``zone_env`` must
    tell zones whose tokens to trust (TESSERA_AUTH_ADDRESS or
    TESSERA_AUTH_PUBLIC_KEYS) and ``channel`` open channels whose calls carry a
    ``service`` token they accept."""

    def __init__(
        self,
        world_obj: Mapping[str, Any],
        redis_url: str,
        *,
        zone_env: Mapping[str, str],
        channel: Callable[[str], grpc.aio.Channel],
        zone_redis_url: str | None = None,
        instance_env: Mapping[str, str] | None = None,
    ) -> None:
        self.world: WorldSpec = resources.world_spec(world_obj)
        self.redis = store.connect(redis_url)
        self.store = OperatorStore(self.redis)
        self.control = ZoneControl(channel)
        self.zone_env = dict(zone_env)
        self.processes = ZoneProcesses(
            self.world,
            redis_url=zone_redis_url or redis_url,
            env=self._env(world_obj),
            modules=resources.game_modules(world_obj.get("spec") or {}),
            instance_env=instance_env,
        )

    def _env(self, world_obj: Mapping[str, Any]) -> dict[str, str]:
        """What every zone process gets from the World's zone template."""
        template = resources.zone_template(world_obj.get("spec") or {})
        game = template.get("gameModule")
        return {
            "TESSERA_TICK_HZ": str(template.get("tickRate", 30)),
            **({"TESSERA_GAME_MODULE": str(game)} if game else {}),
            **{e["name"]: str(e.get("value", "")) for e in template.get("env", [])},
            **self.zone_env,
        }

    def update(self, world_obj: Mapping[str, Any]) -> None:
        """A changed World (e.g. its zone template): later passes plan with it,
        replacing the zones that run an old template one by one."""
        self.world = resources.world_spec(world_obj)
        modules = resources.game_modules(world_obj.get("spec") or {})
        self.processes.update(self.world, self._env(world_obj), modules)

    @property
    def zones(self) -> dict[str, LocalZone]:
        """The world's zones by name."""
        return self.processes.zones

    async def step(self, now: float | None = None) -> Plan:
        """One pass: observe, plan, act, publish the map, converge the zones."""
        return await reconcile(
            self.world,
            workloads=self.processes,
            store=self.store,
            zones=self.control,
            now=time.time() if now is None else now,
        )

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
        await self.processes.close()
        await self.control.close()
        await self.redis.aclose()


async def _main(args: argparse.Namespace) -> None:
    world_obj = load_world(args.world)
    client = load_or_exit(lambda: ServiceClient.from_env(Env(), "operator"))
    # Zone processes inherit this environment: they must not get the runtime's secret,
    # and only instance zones get the zone client's.
    os.environ.pop("TESSERA_SERVICE_CLIENT_SECRET", None)
    zone_secret = os.environ.pop("TESSERA_ZONE_SERVICE_CLIENT_SECRET", "")
    instance_env = (
        {
            "TESSERA_MATCHMAKING_ADDRESS": args.matchmaking_address,
            "TESSERA_SERVICE_CLIENT_ID": "zone",
            "TESSERA_SERVICE_CLIENT_SECRET": zone_secret,
        }
        if args.matchmaking_address and zone_secret
        else {}
    )
    credentials = ServiceCredentials(args.auth_address, client.client_id, client.secret)
    local_redis = None
    redis_url, zone_redis_url = args.redis_url, args.zone_redis_url
    if redis_url is None:
        local_redis = LocalRedis()
        local_redis.start()
        redis_url, zone_redis_url = local_redis.url_for("operator"), local_redis.url_for("zone")
    runtime = LocalRuntime(
        world_obj,
        redis_url,
        zone_redis_url=zone_redis_url,
        zone_env={"TESSERA_AUTH_ADDRESS": args.auth_address},
        channel=credentials.zone_channel,
        instance_env=instance_env,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving", extra={"world": runtime.world.name})
    # What start-up made lives as long as the process: frozen, the cyclic GC's
    # full collections skip it (~50 ms of a pass at 500 zones otherwise).
    settle_heap()
    try:
        await runtime.run(stop, args.interval)
    finally:
        await runtime.close()
        await credentials.close()
        if local_redis is not None:
            local_redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="run a World's zones as local processes")
    parser.add_argument("--world", type=Path, required=True, help="a World resource (YAML)")
    parser.add_argument(
        "--auth-address",
        required=True,
        help="auth's gRPC host:port: the runtime logs in there, zones fetch its keys",
    )
    parser.add_argument("--redis-url", default=None, help="default: start a local redis-server")
    parser.add_argument(
        "--zone-redis-url", default=None, help="the zones' Redis address (default: --redis-url)"
    )
    parser.add_argument(
        "--matchmaking-address",
        default="",
        help="matchmaking's gRPC host:port, where instance zones report match results "
        "(with TESSERA_ZONE_SERVICE_CLIENT_SECRET)",
    )
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
