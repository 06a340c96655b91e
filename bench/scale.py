"""Scale run: one world of synthetic players and real UDP bots, autoscaled by the
operator's local runtime on a real Redis Cluster (issue #22, items 3 and 4).

    python bench/scale.py --json PATH [--players 10000] [--bots 200] [--seconds 300]
        [--tick-hz 10] [--single-redis] [--png PATH]

- Redis: a local Redis Cluster (3 masters, 1 replica each; ``LocalRedisCluster``),
  or one redis-server with ``--single-redis``. Every process uses it.
- Zones: :class:`~tessera.operator.local.LocalRuntime` (the same planner and
  reconcile pass as on Kubernetes) runs ``python -m tessera.zone`` processes,
  one pass every ``--pass-interval`` s in this process; each pass is timed.
  The zones run with ``TESSERA_SYNTHETIC=true`` at ``--tick-hz``.
- Synthetic players (docs/ZONE.md, "Synthetic players"): joined over the zones'
  ``Join`` with ``synthetic`` set, 250 at a time spread over ``--ramp`` s, to the
  active zones by area; those not joined when the ramp is over are left out
  (``players`` vs ``players_asked``). They walk to ``--hotspots`` drifting hotspots.
- Real bots: PostgreSQL, auth and one relay as processes; ``--bots`` bots of
  ``tessera.load`` (the ``hotspot`` scenario) log in, connect over UDP and play
  for the whole run.
- Every ``--scan-every`` s the invariant checker (``tessera.zone.audit.scan``)
  asks every zone for its entities, between two reads of the routing table: a
  player in no zone (lost) or an entity in two (duplicated) that persists for 3 s
  is counted; a player whose route changed during a scan (handed over while the
  zones were read) is judged by the next scan, not that one, and a player whose
  COMMIT waits in its new zone's inbox is in transit, not lost.

Reported: players, zones over time (min/max/final), handoffs/s (entities handed
over, from the zones' heartbeats), lost (with where their routes pointed),
duplicated (with the first ids of each), the most players one scan saw handed
over and in transit, the longest a player stayed in transit over scans and how
many were in transit at the last scan, bot disconnects and their reasons,
each zone's worst tick p99 against its budget (1000 / tick Hz ms), Redis commands/s and CPU
per node (``INFO stats`` / ``INFO cpu``), operator pass p50/p99, the cores each
role used over the run phase (``cores``: zones, relay, bots, auth, Redis,
PostgreSQL and this process, from /proc) and the zones' cores per 1,000 players
(synthetic players and bots);
the picture (``--png``) is the demo's: zone layouts at key moments over players per zone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import redis as sync_redis
from prometheus_client.parser import text_string_to_metric_families

from tessera.common import store
from tessera.common.process import ServiceProcess, free_udp_port
from tessera.demo import picture
from tessera.demo.monitor import RelaySample, ZoneSample, zone_sample
from tessera.demo.timeline import (
    Sample,
    Timeline,
    over_budget,
    tick_budget_per_zone,
    tick_p99_per_zone,
)
from tessera.harness.cpu import TreeCpu, cores
from tessera.harness.postgres import LocalPostgres
from tessera.harness.redis import LocalRedis, LocalRedisCluster
from tessera.harness.synthetic import spawn
from tessera.harness.tokens import LOCAL, relay_login_env, service_clients
from tessera.load import scenario
from tessera.load.swarm import Swarm, SwarmConfig
from tessera.operator.local import LocalRuntime
from tessera.wire.geometry import Rect
from tessera.zone import audit, invariants
from tessera.zone.store import read_routes

WORLD = "scale"
CHUNK = 250  # synthetic players joined per step of the ramp


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--png", type=Path, default=None, help="the picture (default: beside --json)")
    p.add_argument("--players", type=int, default=10_000, help="synthetic players")
    p.add_argument("--bots", type=int, default=200, help="real UDP bots through the relay")
    p.add_argument("--seconds", type=float, default=300.0, help="the run, after the ramp")
    p.add_argument(
        "--ramp", type=float, default=120.0, help="seconds to add the players over (at most)"
    )
    p.add_argument("--tick-hz", type=int, default=10, help="every zone's tick rate")
    p.add_argument("--world-m", type=float, default=4096.0)
    p.add_argument("--split", type=int, default=600, help="split threshold, players")
    p.add_argument("--merge", type=int, default=250, help="merge threshold, players")
    p.add_argument("--max-zones", type=int, default=40)
    p.add_argument("--hotspots", type=int, default=6)
    p.add_argument("--hotspot-speed", type=float, default=4.0, help="m/s")
    p.add_argument("--hotspot-spread", type=float, default=250.0, help="m")
    p.add_argument("--pass-interval", type=float, default=1.0, help="seconds between passes")
    p.add_argument("--scan-every", type=float, default=15.0, help="seconds between scans")
    p.add_argument("--single-redis", action="store_true", help="one redis-server, no cluster")
    args = p.parse_args(argv)
    if args.players < 1 or args.seconds <= 0 or args.bots < 0 or args.merge >= args.split:
        p.error("--players and --seconds must be positive, --bots >= 0, --merge < --split")
    if not 5 <= args.tick_hz <= 60:
        p.error("--tick-hz must be from 5 to 60 (the zone's TESSERA_TICK_HZ range)")
    return args


def world_resource(args: argparse.Namespace) -> dict[str, Any]:
    """The World the local runtime runs: one root zone, density autoscaling."""
    env = {
        "TESSERA_SYNTHETIC": "true",
        "TESSERA_HOTSPOTS": str(args.hotspots),
        "TESSERA_HOTSPOT_SPEED_MPS": f"{args.hotspot_speed:g}",
        "TESSERA_HOTSPOT_SPREAD_M": f"{args.hotspot_spread:g}",
        "TESSERA_MAX_SPEED_MPS": "12",
        "TESSERA_HEARTBEAT_S": "1",
        "TESSERA_CHECKPOINT_S": "1",
        "TESSERA_MAP_POLL_S": "1",
    }
    return {
        "apiVersion": "tessera.io/v1alpha1",
        "kind": "World",
        "metadata": {"name": WORLD, "namespace": "local"},
        "spec": {
            "layout": "Managed",
            "bounds": {"minX": 0, "minZ": 0, "maxX": args.world_m, "maxZ": args.world_m},
            "zoneTemplate": {
                "image": "local",
                "tickRate": args.tick_hz,
                "env": [{"name": k, "value": v} for k, v in env.items()],
            },
            "standby": 1,
            "drainTimeoutSeconds": 60,
            "autoscaling": {
                "enabled": True,
                "mode": "Density",
                "targetPlayersPerZone": (args.split + args.merge) // 2,
                "splitThreshold": args.split,
                "mergeThreshold": args.merge,
                "splitStabilizationSeconds": 5,
                "mergeStabilizationSeconds": 15,
                "cooldownSeconds": 5,
                "minZones": 1,
                "maxZones": args.max_zones,
                "minZoneSize": 128,
                "maxDepth": 8,
            },
        },
    }


class Servers:
    """Redis (a cluster or one server), then PostgreSQL, auth and a relay when
    there are bots; :meth:`stop` ends what was started."""

    def __init__(self, directory: Path, *, single: bool, bots: bool) -> None:
        self.redis: LocalRedis | LocalRedisCluster = (
            LocalRedis(directory / "redis") if single else LocalRedisCluster(directory / "redis")
        )
        self.directory = directory
        self.bots = bots
        self.postgres: LocalPostgres | None = None
        self.procs: dict[str, ServiceProcess] = {}

    @property
    def nodes(self) -> list[LocalRedis]:
        return self.redis.nodes if isinstance(self.redis, LocalRedisCluster) else [self.redis]

    def start(self) -> None:
        if isinstance(self.redis, LocalRedis):
            self.redis.dir.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        if not self.bots:
            return
        self.postgres = LocalPostgres()
        self.postgres.start()
        common = {
            "TESSERA_DATABASE_URL": self.postgres.create_database("tessera"),
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_LOG_LEVEL": "info",  # the "serving" line is an info line
            "TESSERA_WORLD": WORLD,
            "TESSERA_SHUTDOWN_GRACE_S": "2",
        }
        connect_key = base64.b64encode(os.urandom(32)).decode()
        udp = free_udp_port()
        auth = ServiceProcess(
            "tessera.auth",
            {
                **common,
                "TESSERA_REDIS_URL": self.redis.url_for("auth"),
                # Auth signs with the harness key the zones trust (LOCAL.env()).
                **LOCAL.auth_env(self.directory / "keys"),
                "TESSERA_AUTH_SERVICE_CLIENTS": service_clients(),
                "TESSERA_CONNECT_KEY": connect_key,
                "TESSERA_AUTH_RELAYS": f"default=127.0.0.1:{udp}",
                "TESSERA_AUTH_REGISTRATIONS_PER_ADDRESS": "1000000",
                "TESSERA_AUTH_CONNECT_TTL_S": "120",
            },
            name="auth",
        ).start()
        self.procs["auth"] = auth
        auth.wait_serving(60.0)
        self.procs["relay"] = ServiceProcess(
            "tessera.relay",
            {
                **common,
                **relay_login_env(),
                "TESSERA_REDIS_URL": self.redis.url_for("relay"),
                "TESSERA_UDP_HOST": "127.0.0.1",
                "TESSERA_UDP_PORT": str(udp),
                "TESSERA_AUTH_ADDRESS": auth.grpc_address,
                "TESSERA_CONNECT_KEY": connect_key,
                "TESSERA_RELAY_ID": "relay-0",
                # Every bot shares 127.0.0.1: one source, so no per-source limits.
                "TESSERA_RELAY_HANDSHAKES_PER_SOURCE_S": "1000000",
                "TESSERA_RELAY_PINGS_PER_SOURCE_S": "1000000",
            },
            name="relay",
            keep_lines=200_000,  # for relay_counters: the whole run's log
        ).start()
        self.procs["relay"].wait_serving(60.0)

    @property
    def auth_address(self) -> str:
        return self.procs["auth"].grpc_address

    def relay_counters(self) -> dict[str, dict[str, float]]:
        """The relay's resumes by result, session ends by reason and drops by
        reason (its ``/metrics``), its refused sessions by reason and its warnings
        by message (its log): where a bot's disconnect came from."""
        relay = self.procs.get("relay")
        if relay is None or not relay.alive():
            return {}
        url = f"http://127.0.0.1:{relay.ports['metrics_port']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        wanted = {
            "tessera_relay_resumes": ("result", "resumes"),
            "tessera_relay_session_ends": ("reason", "session_ends"),
            "tessera_relay_drops": ("reason", "drops"),
        }
        out: dict[str, dict[str, float]] = {key: {} for _label, key in wanted.values()}
        for family in text_string_to_metric_families(text):
            if family.name in wanted:
                label, key = wanted[family.name]
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        out[key][sample.labels[label]] = sample.value
        refused = Counter(
            f"{r.get('reason')}: {str(r.get('detail', ''))[:60]}"
            for r in relay.records()
            if r.get("msg") == "session refused"
        )
        out["refused"] = dict(refused.most_common(10))
        warnings = Counter(
            str(r.get("msg")) for r in relay.records() if r.get("level") in ("warning", "error")
        )
        out["warnings"] = dict(warnings.most_common(10))
        return out

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.terminate(20.0)
        if self.postgres is not None:
            self.postgres.stop()
        self.redis.stop()


def redis_counters(nodes: list[LocalRedis]) -> dict[str, tuple[int, float]]:
    """Per running node: (commands processed, CPU seconds user + system)."""
    out = {}
    for node in nodes:
        if node.proc is None:
            continue
        with sync_redis.Redis(port=node.port, socket_timeout=5.0) as client:
            stats: dict[str, Any] = client.info("stats")
            cpu: dict[str, Any] = client.info("cpu")
        used = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        out[f"127.0.0.1:{node.port}"] = (int(stats["total_commands_processed"]), used)
    return out


def redis_rates(
    before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]], seconds: float
) -> dict[str, dict[str, float]]:
    """Commands/s and CPU (fraction of one core) per node between two readings."""
    return {
        node: {
            "ops_per_s": round((after[node][0] - c0) / seconds, 1),
            "cpu": round((after[node][1] - cpu0) / seconds, 4),
        }
        for node, (c0, cpu0) in before.items()
        if node in after
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


class Run:
    """The runtime's passes, the samples and the scans of one run."""

    def __init__(self, runtime: LocalRuntime, redis: store.Client, swarm: Swarm | None) -> None:
        self.runtime = runtime
        self.redis = redis
        self.swarm = swarm
        self.started = time.monotonic()
        self.pass_ms: list[float] = []
        self.timeline = Timeline()
        self.scans = 0
        self.lost: set[str] = set()
        self.duplicated: set[int] = set()
        self.handoffs: dict[str, int] = {}  # per zone process: the most it reported
        self.players: set[str] = set()
        self.stop = asyncio.Event()
        self.event_id: str | None = None
        self.phase = "starting"
        self.ready = asyncio.Event()  # a zone takes joins
        self.unreachable = 0  # scans that could not ask every zone
        self.moved_max = 0  # most players one scan saw handed over mid-scan
        self.lost_where: Counter[str] = Counter()  # where lost players' routes pointed
        self.lost_first: list[list[Any]] = []  # [t, player, where, route] of the first few
        self.transit_max = 0  # most players one scan found committed and not yet adopted
        self.transit_since: dict[str, float] = {}  # in transit in the last scan: since when
        self.transit_longest_s = 0.0
        self.cpu = TreeCpu(os.getpid())  # this process and every one it started

    async def sampling(self) -> None:
        """A sample every 2 s until the run stops."""
        while not self.stop.is_set():
            await asyncio.to_thread(self.cpu.sample)
            await self.sample(self.phase)
            if self.active():
                self.ready.set()
            await asyncio.sleep(2.0)

    def t(self) -> float:
        return round(time.monotonic() - self.started, 2)

    async def passes(self, interval_s: float) -> None:
        while not self.stop.is_set():
            began = time.perf_counter()
            try:
                await self.runtime.step()
            except Exception as err:  # a pass that fails is retried, as the runtime does
                print(f"pass failed: {err!r}")
            self.pass_ms.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(max(0.0, interval_s - (time.perf_counter() - began)))

    async def zones(self) -> list[ZoneSample]:
        statuses = await store.read_heartbeats(self.redis, WORLD)
        for name, s in statuses.items():
            self.handoffs[name] = max(self.handoffs.get(name, 0), int(s.handoffs_received))
        return [zone_sample(name, s) for name, s in statuses.items()]

    async def sample(self, phase: str) -> Sample:
        zones = await self.zones()
        report = self.swarm.report() if self.swarm is not None else None
        s = Sample(
            t=self.t(),
            phase=phase,
            zones=zones,
            bots_connected=report.connected if report else 0,
            disconnects=report.disconnects if report else 0,
            relay=RelaySample(),
        )
        self.timeline.samples.append(s)
        entries = await store.read_events(self.redis, WORLD, after=self.event_id)
        if entries:
            self.event_id = entries[-1][0]
        self.timeline.add_events(s.t, [fields for _id, fields in entries])
        return s

    def addresses(self) -> dict[str, str]:
        """Every zone process the runtime runs and that serves (heartbeats of an
        overloaded zone may lapse; its players are then not counted lost)."""
        return {
            name: z.process.grpc_address
            for name, z in self.runtime.zones.items()
            if z.process.alive() and "grpc_port" in z.process.ports
        }

    async def scan(self) -> invariants.Report:
        """Scan until clean, or a violation persists through 3 s of scans."""
        report = await audit.scan(
            self.redis, WORLD, self.addresses(), self.players, channel=LOCAL.channel
        )
        self.moved_max = max(self.moved_max, len(report.moved))
        self.transit(report)
        deadline = time.monotonic() + 3.0
        while not report.ok and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            again = await audit.scan(
                self.redis, WORLD, self.addresses(), self.players, channel=LOCAL.channel
            )
            self.transit(again)
            report = invariants.persisting(report, again)
        self.scans += 1
        self.unreachable += bool(report.unreachable)
        await self.note_lost(set(report.lost) - self.lost)
        self.lost |= set(report.lost)
        self.duplicated |= set(report.duplicates)
        return report

    def transit(self, report: invariants.Report) -> None:
        """Track players in transit (committed, their COMMIT not yet taken by the
        target): the most in one scan, and the longest one stayed so over scans."""
        now = time.monotonic()
        self.transit_max = max(self.transit_max, len(report.in_transit))
        self.transit_since = {p: self.transit_since.get(p, now) for p in report.in_transit}
        for since in self.transit_since.values():
            self.transit_longest_s = max(self.transit_longest_s, now - since)

    async def note_lost(self, lost: set[str]) -> None:
        """Count where each newly lost player's route points now (``lost_where``):
        nowhere, a zone process that answers, one that is not running (starting,
        restarting or stopped) or a zone the runtime does not have; the first few
        go to ``lost_first``."""
        if not lost:
            return
        routes = await read_routes(self.redis, WORLD)
        running = self.addresses()
        for player in sorted(lost):
            route = routes.get(player)
            if route is None:
                where = "no route"
            elif route.zone in running:
                where = "running zone"
            elif route.zone in self.runtime.zones:
                where = "zone not running"
            else:
                where = "zone unknown to the runtime"
            self.lost_where[where] += 1
            if len(self.lost_first) < 20:
                self.lost_first.append(
                    [round(self.t(), 1), player, where, route.raw if route else ""]
                )

    def active(self) -> dict[str, tuple[str, Rect]]:
        """The zones that take players now: name -> (address, bounds)."""
        last = self.timeline.samples[-1].zones if self.timeline.samples else []
        return {
            z.name: (z.address, Rect(*z.bounds))
            for z in last
            if z.state == "ACTIVE" and z.bounds is not None and z.address and not z.instance
        }


async def run(args: argparse.Namespace, servers: Servers) -> dict[str, Any]:
    redis_url = servers.redis.url
    runtime = LocalRuntime(
        world_resource(args),
        servers.redis.url_for("operator"),
        zone_redis_url=servers.redis.url_for("zone"),
        zone_env=LOCAL.env(),
        channel=LOCAL.channel,
    )
    redis = store.connect(redis_url)
    swarm = None
    if args.bots:
        swarm = Swarm(
            SwarmConfig(
                auth=servers.auth_address,
                scenario=str(scenario.resolve("hotspot")),
                world=f"0,0,{args.world_m:g},{args.world_m:g}",
                # Longer than any run: the bots log out when the swarm is stopped.
                duration_s=args.ramp + args.seconds + 3600.0,
                max_speed=12.0,
                bots=args.bots,
                processes=2,
                prefix="scale",
            )
        )
    r = Run(runtime, redis, swarm)
    passes = asyncio.create_task(r.passes(args.pass_interval))
    sampling = asyncio.create_task(r.sampling())
    try:
        await asyncio.wait_for(r.ready.wait(), 120)
        if swarm is not None:
            swarm.start()  # from this thread: its workers die with it
        names = [f"synthetic-{i}" for i in range(args.players)]
        chunks = max(1, math.ceil(args.players / CHUNK))
        ramp_began = time.monotonic()
        r.phase = "ramp"
        for c in range(chunks):
            # A loaded machine joins slower than asked: what has not joined when
            # the ramp is over is left out (reported as players vs players_asked).
            if c and time.monotonic() - ramp_began >= args.ramp:
                break
            # A sample taken while every zone's heartbeat had lapsed (a starved
            # machine) lists no active zone: wait for the next, rather than fail.
            zones = r.active()
            while not zones and time.monotonic() - ramp_began < args.ramp + 60.0:
                await asyncio.sleep(0.5)
                zones = r.active()
            r.players.update(await spawn(zones, names[c * CHUNK : (c + 1) * CHUNK], seed=c))
            print(f"t={r.t():.0f}s joined {len(r.players)} of {args.players}", flush=True)
            await asyncio.sleep(
                max(0.0, ramp_began + (c + 1) * args.ramp / chunks - time.monotonic())
            )
        counters0 = await asyncio.to_thread(redis_counters, servers.nodes)
        await asyncio.to_thread(r.cpu.sample)
        cpu0, cpu_began = r.cpu.totals(), time.monotonic()
        handoffs0 = sum(r.handoffs.values())
        began = time.monotonic()
        r.phase = "run"
        ramp_s = began - ramp_began
        while time.monotonic() - began < args.seconds:
            await r.scan()
            await asyncio.sleep(
                min(args.scan_every, max(0.0, began + args.seconds - time.monotonic()))
            )
        elapsed = time.monotonic() - began
        counters1 = await asyncio.to_thread(redis_counters, servers.nodes)
        await asyncio.to_thread(r.cpu.sample)
        run_cores = cores(cpu0, r.cpu.totals(), time.monotonic() - cpu_began)
        await r.sample("end")
        await r.scan()
        handoffs = sum(r.handoffs.values()) - handoffs0
        relay = await asyncio.to_thread(servers.relay_counters)
    finally:
        r.stop.set()
        await passes
        await sampling
        if swarm is not None:
            await asyncio.to_thread(swarm.stop)
        await runtime.close()
        await redis.aclose()
    bots = swarm.report() if swarm is not None else None
    run_samples = [s for s in r.timeline.samples if s.phase in ("run", "end")]
    zone_counts = [sum(1 for z in s.zones if z.state == "ACTIVE") for s in run_samples]
    p99 = tick_p99_per_zone(run_samples)
    budget = tick_budget_per_zone(run_samples)
    rates = redis_rates(counters0, counters1, elapsed)
    png = args.png or args.json.with_suffix(".png")
    picture.draw(
        r.timeline,
        png,
        world_m=args.world_m,
        title=f"Tessera scale run: {args.players} synthetic players + {args.bots} bots",
    )
    return {
        "players": len(r.players),
        "players_asked": args.players,
        "bots": args.bots,
        "redis": "single" if args.single_redis else f"cluster ({len(servers.nodes)} nodes)",
        "tick_hz": args.tick_hz,
        "seconds": round(elapsed, 1),
        "ramp_s": round(ramp_s, 1),
        "zones_min": min(zone_counts, default=0),
        "zones_max": max(zone_counts, default=0),
        "zones_final": zone_counts[-1] if zone_counts else 0,
        "splits": r.timeline.splits,
        "merges": r.timeline.merges,
        "handoffs": handoffs,
        "handoffs_per_s": round(handoffs / elapsed, 2),
        "scans": r.scans,
        "lost": len(r.lost),
        "duplicated": len(r.duplicated),
        "lost_players": sorted(r.lost)[:20],
        "lost_where": dict(r.lost_where),
        "lost_first": r.lost_first,
        "duplicated_entities": sorted(r.duplicated)[:20],
        "scan_moved_max": r.moved_max,
        "scan_in_transit_max": r.transit_max,
        "in_transit_longest_s": round(r.transit_longest_s, 1),
        "in_transit_at_last_scan": len(r.transit_since),
        "scans_with_unreachable_zones": r.unreachable,
        "bot_disconnects": bots.disconnects if bots else 0,
        "bot_disconnect_reasons": bots.disconnect_reasons if bots else {},
        "bot_connect_failures": bots.connect_failures if bots else 0,
        "relay": relay,
        "bots_connected_max": max((s.bots_connected for s in r.timeline.samples), default=0),
        "tick_budget_ms": round(1000.0 / args.tick_hz, 2),
        "tick_p99_ms_per_zone": p99,
        "zones_over_budget": over_budget(p99, budget),
        "redis_ops_per_s": round(sum(n["ops_per_s"] for n in rates.values()), 1),
        "redis_cpu": round(sum(n["cpu"] for n in rates.values()), 4),
        "redis_per_node": rates,
        "cores": run_cores,
        "zone_cores_per_1000_players": round(
            run_cores.get("zone", 0.0) / max(1, len(r.players) + args.bots) * 1000, 3
        ),
        "operator_pass_ms_p50": pct(r.pass_ms, 0.5),
        "operator_pass_ms_p99": pct(r.pass_ms, 0.99),
        "operator_passes": len(r.pass_ms),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "picture": str(png),
    }


def table(report: dict[str, Any]) -> str:
    rows = [
        (k, v)
        for k, v in report.items()
        if k
        not in (
            "tick_p99_ms_per_zone",
            "redis_per_node",
            "lost_players",
            "lost_where",
            "lost_first",
            "duplicated_entities",
        )
    ]
    worst = max(report["tick_p99_ms_per_zone"].values(), default=0.0)
    rows.append(("tick_p99_ms_worst_zone", worst))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="tessera-scale-"))
    servers = Servers(directory, single=args.single_redis, bots=args.bots > 0)
    servers.start()
    try:
        report = asyncio.run(run(args, servers))
    finally:
        servers.stop()
    print(table(report))
    args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
