"""Rolling zone update benchmark: the operator's local runtime (the same planner
and reconcile pass as on Kubernetes) replaces every zone of a world by handoff
after a zone template change, while bots walk.

A world of ``--zones`` zone processes (a grid from the initial layout), ``--bots``
players spread over them and walking through a minimal relay (the harness
Driver: like the relay it follows a player on the first of its Handover and its
``routes:changed``, newest epoch wins, and batches inputs per link; it
acknowledges snapshots without decoding them, client work that is not what
this measures). The template's tick rate changes; passes run every
``--interval`` seconds until every zone runs the new template, each followed by
a re-read of the routing table. Reported: the time to replace all zones, each
zone's replacement (drain order -> old zone gone), the longest gap between two
snapshots any player saw during the rollout and the p50 / p99 of each player's
longest, every gap over 100 ms attributed to its cause (see
``tessera.harness.zones.Gap``) and whether it overlapped a zone process's
start-up, how players were moved (Handover, ``routes:changed``, or the re-read:
``reattached_from_routes``), the driver's event-loop stalls, the zones' tick
p99 from their heartbeats, CPU (this process; the whole machine) beside wall
time and the load average, disconnects (players with no snapshot within 5 s
after the rollout) and lost / duplicated entities (invariant scan of all zones
and the routing table).

    python bench/rollout.py --json PATH [--zones 4] [--bots 200] [--standby 0] [--warm-links-s 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import os
import resource
import time
from collections import Counter
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from tessera.common.heap import settle_heap
from tessera.common.store import read_heartbeats
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import Driver, Gap, World, arrival_report, zone_arrivals
from tessera.operator.local import LocalRuntime
from tessera.operator.planner.model import Desired, Phase
from tessera.relay.config import GC_THRESHOLD
from tessera.zone import audit

SIDE = 1024.0
TARGET_GAP_S = 0.25
ENV = {"TESSERA_HEARTBEAT_S": "0.2", "TESSERA_MAP_POLL_S": "0.1", "TESSERA_NPCS": "0"}


def world_spec(zones: int, standby: int) -> dict[str, Any]:
    return {
        "apiVersion": "tessera.io/v1alpha1",
        "kind": "World",
        "metadata": {"name": "roll"},
        "spec": {
            "bounds": {"minX": 0, "minZ": 0, "maxX": SIDE, "maxZ": SIDE},
            "zoneTemplate": {"image": "local", "tickRate": 30},
            "drainTimeoutSeconds": 30,
            "standby": standby,
            "autoscaling": {
                "minZones": zones,
                "maxZones": zones,
                "splitThreshold": 100000,
                "targetPlayersPerZone": 50000,
                "mergeThreshold": 1,
                "minZoneSize": 64,
            },
        },
    }


async def step(
    runtime: LocalRuntime, world: World, driver: Driver, timeline: list[tuple[float, str]]
) -> int:
    """One operator pass (its actions appended to ``timeline``); then the relay
    re-reads the routing table, as a relay does after a link breaks. Returns how
    many players that moved: neither their Handover nor their ``routes:changed``
    had reached the relay."""
    began = time.monotonic()
    plan = await runtime.step()
    for action in plan.actions:
        timeline.append((began, f"{type(action).__name__} {action.zone}"))
        print(f"{time.strftime('%H:%M:%S')} {timeline[-1][1]}: {action.reason}", flush=True)
    timeline.append((began, f"pass {time.monotonic() - began:.3f} s"))
    world.procs = {name: z.process for name, z in runtime.zones.items()}
    return await driver.resync()


def machine_cpu_s() -> float:
    """User + system CPU seconds of every process on the machine so far (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system = (int(v) for v in fields[:3])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """User + system CPU seconds of this process (the harness relay and the operator)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))] if ordered else 0.0


def note_starts(runtime: LocalRuntime, timeline: list[tuple[float, str]]) -> None:
    """Append "serving <zone>" for each zone process that began serving since the
    last call (a zone's start-up costs over a second of CPU)."""
    seen = {what.split()[1] for _, what in timeline if what.startswith("serving ")}
    for name, zone in runtime.zones.items():
        if zone.process.ports and name not in seen:
            timeline.append((time.monotonic(), f"serving {name}"))


def starting(timeline: list[tuple[float, str]]) -> list[tuple[float, float]]:
    """(CreateZone, serving) times of every zone process started on the timeline."""
    created = {w.split()[1]: t for t, w in timeline if w.startswith("CreateZone ")}
    serving = {w.split()[1]: t for t, w in timeline if w.startswith("serving ")}
    return [(t, serving.get(name, math.inf)) for name, t in created.items()]


def gap_report(
    driver: Driver, began: float, players: set[str], timeline: list[tuple[float, str]]
) -> dict[str, Any]:
    """The gaps players saw since ``began`` and what each long one spanned."""
    longest = [driver.player_gap_s.get(p, 0.0) for p in players]
    over = [g for g in driver.gaps if g.gap_s >= TARGET_GAP_S]
    starts = starting(timeline)
    stalls = driver.stalls.since(began)
    worst_of: dict[str, Gap] = {}
    for g in driver.gaps:
        if g.zone not in worst_of or g.gap_s > worst_of[g.zone].gap_s:
            worst_of[g.zone] = g
    worst = sorted(worst_of.values(), key=lambda g: g.gap_s, reverse=True)
    arrival_of = {(a.player, a.received): a for a in driver.arrivals}
    return {
        "max_snapshot_gap_ms": driver.max_gap_s * 1000.0,
        "player_gap_p50_ms": percentile(longest, 50) * 1000.0,
        "player_gap_p99_ms": percentile(longest, 99) * 1000.0,
        "players_over_250ms": len({g.player for g in over}),
        "gaps_over_100ms": dict(Counter(g.cause for g in driver.gaps)),
        "gaps_over_250ms": dict(Counter(g.cause for g in over)),
        "gaps_over_250ms_by_zone": dict(Counter(g.zone for g in over)),
        # Overlapping a zone process's start-up (CreateZone until it serves).
        "gaps_over_250ms_during_zone_start": sum(
            1 for g in over if any(c <= g.at and g.at - g.gap_s <= s for c, s in starts)
        ),
        "moves_by": dict(driver.moves),
        "driver_stall_p99_ms": percentile(stalls, 99) * 1000.0,
        "driver_stall_max_ms": max(stalls, default=0.0) * 1000.0,
        "worst_gaps": [
            {
                "at_s": round(g.at - began, 3),
                "ms": round(g.gap_s * 1000.0, 1),
                "cause": g.cause,
                "zone": g.zone,
                "since_move_ms": round(g.since_move_s * 1000.0, 1),
                "wait_ms": round(g.wait_s * 1000.0, 1),
                "via": g.via,
                "stall_ms": round(g.stall_s * 1000.0, 1),
                "dropped": g.dropped,
                "phases_ms": {
                    phase: round(seconds * 1000.0, 1)
                    for phase, seconds in arrival_of[(g.player, g.at)].phases().items()
                }
                if (g.player, g.at) in arrival_of
                else {},
            }
            for g in worst
        ],
        "moves": arrival_report(driver.arrivals),
        "first_snapshot_over_250ms_phases": arrival_report(
            [
                arrival_of[(g.player, g.at)]
                for g in over
                if g.cause == "first_snapshot" and (g.player, g.at) in arrival_of
            ]
        ),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = LocalRedis()
    server.start()
    redis = Redis.from_url(server.url)
    spec = world_spec(args.zones, args.standby)
    runtime = LocalRuntime(spec, server.url, zone_env={**ENV, **LOCAL.env()}, channel=LOCAL.channel)
    world = World(redis, server.url, world="roll")
    driver = Driver(world, relay_id="bench", decode=False, warm_s=args.warm_links_s)
    walkers: list[asyncio.Task[None]] = []
    timeline: list[tuple[float, str]] = []
    try:
        while not (
            sum(1 for z in runtime.zones.values() if z.view.bounds is not None) == args.zones
            and all(z.view.phase == Phase.READY for z in runtime.zones.values())
            and len(runtime.zones) == args.zones + args.standby
        ):
            await step(runtime, world, driver, timeline)
            await asyncio.sleep(args.interval)
        zones = {n: z.view.bounds for n, z in runtime.zones.items() if z.view.bounds is not None}
        names = sorted(zones)
        players: dict[str, list[str]] = {n: [] for n in names}
        for i in range(args.bots):
            zone = names[i % len(names)]
            b = zones[zone]
            assert b is not None
            k = len(players[zone])
            player = f"b{i}"
            await driver.join(player, zone, b.min_x + 20 + (k % 10) * 8, b.min_z + 20 + k // 10 * 8)
            players[zone].append(player)
        for zone, group in players.items():
            b = zones[zone]
            assert b is not None
            pace = driver.pace(group, (b.min_x + 20, b.min_x + 120), 3600)
            walkers.append(asyncio.create_task(pace))
        await asyncio.sleep(1.0)
        # The harness relay's heap as a relay's is after its start: what is alive now
        # frozen, generation 0 collected per 10,000 allocations (full collections
        # over the bots' objects stopped this loop 26-90 ms in each run).
        settle_heap(GC_THRESHOLD)
        print(f"{args.zones} zones, {args.bots} bots walking; changing the template", flush=True)

        driver.reset_gaps()
        note_starts(runtime, timeline)
        began = time.monotonic()
        cpu_began, machine_began, load_began = own_cpu_s(), machine_cpu_s(), os.getloadavg()[0]
        spec = copy.deepcopy(spec)
        spec["spec"]["zoneTemplate"]["tickRate"] = 40
        runtime.update(spec)
        drain_at: dict[str, float] = {}
        replace_s: dict[str, float] = {}
        old = set(runtime.zones)
        reattached = 0
        tick_p99_ms, overloaded = 0.0, 0  # from the zones' heartbeats, each pass
        while True:
            reattached += await step(runtime, world, driver, timeline)
            note_starts(runtime, timeline)
            for status in (await read_heartbeats(redis, "roll")).values():
                tick_p99_ms = max(tick_p99_ms, status.tick_p99_ms)
                overloaded += status.overloaded
            now = time.monotonic()
            for name, z in runtime.zones.items():
                if z.view.desired == Desired.DRAINING:
                    drain_at.setdefault(name, now)
            for name in list(drain_at):
                if name not in runtime.zones and name not in replace_s:
                    replace_s[name] = now - drain_at[name]
            views = [z.view for z in runtime.zones.values()]
            if old.isdisjoint(runtime.zones) and all(v.desired != Desired.DRAINING for v in views):
                break
            if now - began > args.timeout:
                phases = {
                    n: (z.view.desired.value, z.view.phase.value, z.view.players)
                    for n, z in runtime.zones.items()
                }
                raise SystemExit(f"rollout not finished after {args.timeout} s: {phases}")
            await asyncio.sleep(args.interval)
        total_s = time.monotonic() - began
        cpu_s, machine_s = own_cpu_s() - cpu_began, machine_cpu_s() - machine_began
        everyone = {p for group in players.values() for p in group}
        gaps = gap_report(driver, began, everyone, timeline)
        gaps["timeline"] = [
            f"{t - began:7.3f} {what}"
            for t, what in timeline
            if t >= began and (not what.startswith("pass") or float(what.split()[1]) > 0.05)
        ]
        load_end = os.getloadavg()[0]

        reattached += await step(runtime, world, driver, timeline)
        since = time.monotonic()
        silent = sorted(everyone)
        while silent and time.monotonic() - since < 5.0:
            await asyncio.sleep(0.05)
            silent = [p for p in silent if driver.last_snapshot.get(p, 0) <= since]
        arrivals = {
            name: await asyncio.to_thread(
                zone_arrivals, f"127.0.0.1:{z.process.ports['metrics_port']}"
            )
            for name, z in sorted(runtime.zones.items())
            if name not in old and z.process.alive()
        }
        report = await audit.settle(
            redis, "roll", world.addresses(), everyone, timeout_s=10, channel=LOCAL.channel
        )
        per_zone = sorted(replace_s.values())
        return {
            "zones": args.zones,
            "bots": args.bots,
            "standby": args.standby,
            "warm_links_s": args.warm_links_s,
            "rollout_s": total_s,
            "replace_s_max": per_zone[-1],
            "replace_s_mean": sum(per_zone) / len(per_zone),
            "replace_s": {name: round(v, 3) for name, v in sorted(replace_s.items())},
            **gaps,
            "zone_arrivals": arrivals,
            "zone_tick_p99_ms_max": tick_p99_ms,
            "zone_overloaded_heartbeats": overloaded,
            "disconnects": len(silent),
            "reattached_from_routes": reattached,
            "link_breaks": driver.link_breaks,
            "lost_entities": len(report.lost),
            "duplicate_entities": len(report.duplicates),
            "misrouted_players": len(report.misrouted),
            "driver_cpu_s": cpu_s,
            "machine_cpu_s": machine_s,
            "cpus": os.cpu_count(),
            "load_average_1m": [load_began, load_end],
        }
    finally:
        for task in walkers:
            task.cancel()
        await driver.close()
        await runtime.close()
        await redis.aclose()
        server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--zones", type=int, default=4)
    parser.add_argument("--bots", type=int, default=200)
    parser.add_argument("--standby", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between passes")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument(
        "--warm-links-s",
        type=float,
        default=0.25,
        help="the harness relay's warm-link interval, as TESSERA_RELAY_WARM_LINKS_S (0: off)",
    )
    args = parser.parse_args()
    wall = time.monotonic()
    result = asyncio.run(run(args))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["run_wall_s"] = time.monotonic() - wall
    result["run_cpu_s"] = own_cpu_s() + children.ru_utime + children.ru_stime
    targets = {
        "max_snapshot_gap_ms": "< 250",
        "replace_s_max": "< 2 (200-player zone)",
        "disconnects": "0",
        "lost_entities": "0",
        "duplicate_entities": "0",
    }
    print(f"{'metric':<24} {'value':>12}  target")
    for key, value in result.items():
        if isinstance(value, dict | list) and key != "load_average_1m":
            continue
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<24} {shown:>12}  {targets.get(key, '')}")
    for key in (
        "gaps_over_100ms",
        "gaps_over_250ms",
        "gaps_over_250ms_by_zone",
        "moves_by",
        "moves",
        "first_snapshot_over_250ms_phases",
        "zone_arrivals",
        "replace_s",
    ):
        print(f"{key}: {result[key]}")
    for gap in result["worst_gaps"]:
        print("gap", gap)
    print("\n".join(result["timeline"]))
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
