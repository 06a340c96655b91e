"""Autoscaling benchmark: the planner at 1,000 zones, and a split and a merge
with real zone processes handing a few hundred players over.

    python bench/autoscale.py --json PATH [--zones 1000] [--rounds 200] [--players 300]

Planner: builds a managed world of ``--zones`` zones with the planner's own
initial layout (so the split tree is real), then times ``plan()`` over
``--rounds`` rounds of changing load: every round a few percent of the zones are
over the high-water mark (with 512 position samples each) and many sibling
pairs are under the low-water mark, so splits, merges and the window
bookkeeping all run. Each round's plan is applied, so the layout keeps changing.

Local runtime (real ``tessera.zone`` processes, real redis-server, passes every
``--pass-interval`` s), once with one warm standby and once cold: ``--players``
players join the first zone over gRPC at seeded positions; the runtime splits it
once the heartbeat reports them (split threshold 200, stabilization window 1 s);
then all but 60 leave and the siblings merge (merge threshold 100, window 1 s):

- ``split_ready_s``: from the pass that decided the split to the new zone
  heartbeating ACTIVE with its bounds;
- ``split_reaction_s``: from that pass to the new zone serving its handed-off
  players: every player on its side routed to it in the routing table and its
  ``GetStatus`` counting exactly them;
- ``merge_handback_s`` / ``merge_retire_s`` / ``merge_drain_s``: from the pass
  that decided the merge to every remaining route pointing at the survivor /
  the drained zone's process having exited / both;
- ``lost`` / ``duplicated``: the most lost players and duplicated entities any
  ``audit.settle`` scan after a runtime pass found (expected 0);
  ``invariant_scans_unsettled``: scans that still failed any invariant
  (including misrouted or unreachable) when settle gave up after 2 s.

Players are joined directly over gRPC, not through relays, so client
disconnects are not measured here (tests/zone/test_border_relay.py and the
demo cover relayed clients).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from tessera.common.store import WorldKeys
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL
from tessera.operator.local import LocalRuntime
from tessera.operator.planner.actions import Action, AssignStandby, CreateZone, Drain, advance
from tessera.operator.planner.model import Desired, Memory, Phase, Policy, WorldSpec, ZoneView
from tessera.operator.planner.rules import plan
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc
from tessera.wire.geometry import Rect
from tessera.zone import audit
from tessera.zone.store import read_routes


def build_world(zones: int) -> tuple[WorldSpec, list[ZoneView], Memory]:
    policy = Policy(
        min_zones=zones,
        max_zones=zones + zones // 20,
        min_zone_size=50,
        max_depth=16,
        split_window_s=2,
        merge_window_s=2,
        cooldown_s=4,
    )
    world = WorldSpec("bench", Rect(0, 0, 32_768, 32_768), policy, standby=4)
    first = plan(world, [], now=0.0)
    layout = [replace(z, phase=Phase.READY) for z in advance([], first.actions)]
    # Let the layout move within 5 % of the initial count.
    world = replace(world, policy=replace(policy, min_zones=zones - zones // 20))
    return world, layout, first.memory


def load(zones: list[ZoneView], rng: random.Random, hot: set[str]) -> list[ZoneView]:
    out = []
    for z in zones:
        if z.desired != Desired.ACTIVE or z.bounds is None:
            out.append(replace(z, phase=Phase.READY if z.phase == Phase.PENDING else z.phase))
            continue
        b = z.bounds
        is_hot = z.name in hot
        players = rng.randint(301, 900) if is_hot else rng.randint(0, 60)
        n = min(players, 512)
        out.append(
            replace(
                z,
                phase=Phase.READY,
                players=players,
                sample_x=[rng.uniform(b.min_x, b.max_x) for _ in range(n)] if is_hot else [],
                sample_z=[rng.uniform(b.min_z, b.max_z) for _ in range(n)] if is_hot else [],
            )
        )
    return out


def run(zone_count: int, rounds: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    world, zones, memory = build_world(zone_count)
    durations: list[float] = []
    cpu: list[float] = []
    actions = 0
    now = 0.0
    sizes = []
    hot: set[str] = set()
    for round_ in range(rounds):
        now += 1.0
        if round_ % 10 == 0:  # a new 3 % of the zones gets crowded for 10 s
            names = sorted(z.name for z in zones)
            hot = set(rng.sample(names, k=max(1, len(names) * 3 // 100)))
        observed = load(zones, rng, hot)
        # Draining zones finish: report them drained.
        observed = [
            replace(z, phase=Phase.DRAINED) if z.desired == Desired.DRAINING else z
            for z in observed
        ]
        sizes.append(sum(1 for z in observed if z.desired == Desired.ACTIVE))
        start, cpu_start = time.perf_counter(), time.process_time()
        result = plan(world, observed, now, memory)
        durations.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - cpu_start) * 1000)
        memory = result.memory
        actions += len(result.actions)
        zones = advance(observed, result.actions)
    durations.sort()
    cpu.sort()
    return {
        "zones_min": min(sizes),
        "zones_max": max(sizes),
        "rounds": rounds,
        "actions_total": actions,
        "planner_ms_p50": round(statistics.median(durations), 3),
        "planner_ms_p99": round(durations[min(len(durations) - 1, int(0.99 * len(durations)))], 3),
        "planner_ms_max": round(durations[-1], 3),
        # CPU time of the planner process: what the machine's other load does not add.
        "planner_cpu_ms_p99": round(cpu[min(len(cpu) - 1, int(0.99 * len(cpu)))], 3),
    }


SPLIT_AT = 200
MERGE_BELOW = 100
STAY = 60  # players left after the load falls: 40 on the new zone's side, 20 on the parent's
DISCONNECTS = "not measured by this bench (see tests/zone/test_border_relay.py and the demo)"


def local_world(standby: int) -> dict[str, object]:
    return {
        "apiVersion": "tessera.io/v1alpha1",
        "kind": "World",
        "metadata": {"name": "bench"},
        "spec": {
            "bounds": {"minX": 0, "minZ": 0, "maxX": 1024, "maxZ": 1024},
            "zoneTemplate": {"image": "local", "tickRate": 30},
            "standby": standby,
            "drainTimeoutSeconds": 10,
            "autoscaling": {
                "targetPlayersPerZone": 150,
                "splitThreshold": SPLIT_AT,
                "mergeThreshold": MERGE_BELOW,
                "splitStabilizationSeconds": 1,
                "mergeStabilizationSeconds": 1,
                "cooldownSeconds": 2,
                "minZoneSize": 64,
            },
        },
    }


@dataclass
class Cycle:
    """What one split and merge measured."""

    split_ready_s: float = -1.0
    split_reaction_s: float = -1.0
    merge_handback_s: float = -1.0
    merge_retire_s: float = -1.0
    split_to_standby: bool = False
    moved_on_split: int = 0
    moved_on_merge: int = 0
    scans: int = 0
    unsettled: int = 0  # scans still failing (any invariant) after settle's 2 s
    lost: int = 0
    duplicated: int = 0


class Driver:
    """A local runtime with players joined over gRPC, stepped pass after pass."""

    def __init__(self, runtime: LocalRuntime, pass_s: float) -> None:
        self.runtime = runtime
        self.pass_s = pass_s
        self.players: dict[str, tuple[float, float]] = {}
        self.cycle = Cycle()
        self.keys = WorldKeys("bench")

    def addresses(self) -> dict[str, str]:
        """The gRPC address of every zone process that is up and serving."""
        zones = self.runtime.zones.items()
        return {
            n: z.process.grpc_address
            for n, z in zones
            if z.process.alive() and "grpc_port" in z.process.ports
        }

    async def step(self) -> list[Action]:
        """One runtime pass, then the invariant scan."""
        result = await self.runtime.step()
        await self.audit()
        return list(result.actions)

    async def audit(self) -> None:
        """``audit.settle`` over every running zone and the routing table."""
        report = await audit.settle(
            self.runtime.redis,
            "bench",
            self.addresses(),
            set(self.players),
            timeout_s=2.0,
            channel=LOCAL.channel,
        )
        self.cycle.scans += 1
        self.cycle.unsettled += not report.ok
        self.cycle.lost = max(self.cycle.lost, len(report.lost))
        self.cycle.duplicated = max(self.cycle.duplicated, len(report.duplicates))

    async def passes_until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30.0
        while not done():
            if time.monotonic() > deadline:
                routes = await read_routes(self.runtime.redis, "bench")
                owners = Counter(r.zone for p, r in routes.items() if p in self.players)
                zones = [(n, z.view.desired, z.view.bounds) for n, z in self.runtime.zones.items()]
                raise RuntimeError(
                    f"local runtime: no {what} in 30 s; routes per zone {dict(owners)},"
                    f" zones (name, desired, bounds) {zones}"
                )
            await self.step()
            await asyncio.sleep(self.pass_s)

    async def until_decided(
        self, decision: Callable[[Action], bool], what: str
    ) -> tuple[float, Action]:
        """Pass until one pass takes a ``decision`` action: (when that pass started, it).
        That pass's invariant scan is left to :meth:`watch`, which starts timing first."""
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            started = time.monotonic()
            result = await self.runtime.step()
            for action in result.actions:
                if decision(action):
                    return started, action
            await self.audit()
            await asyncio.sleep(self.pass_s)
        raise RuntimeError(f"local runtime: no {what} in 30 s")

    async def watch(self, decided: float, checks: dict[str, Callable[[], Awaitable[bool]]]) -> None:
        """Scan, then pass until every check holds; each one's time since ``decided``
        into the cycle (checks are polled every 20 ms beside the scans and passes, so
        neither rounds the figures)."""
        left = dict(checks)

        async def poll() -> None:
            while left:
                for field, check in list(left.items()):
                    if await check():
                        setattr(self.cycle, field, time.monotonic() - decided)
                        del left[field]
                await asyncio.sleep(0.02)

        poller = asyncio.create_task(poll())
        try:
            await self.audit()  # the deciding pass's scan
            await self.passes_until(poller.done, "/".join(checks))
            await poller
        finally:
            poller.cancel()

    async def join(self, zone: str, count: int, rng: random.Random) -> None:
        """``count`` players at seeded positions off the whole-metre cut lines."""
        async with grpc_channel(self.runtime.zones[zone].process.grpc_address) as stub:
            for i in range(count):
                x, z = rng.randrange(64, 960) + 0.5, rng.randrange(64, 960) + 0.5
                await stub.Join(
                    zone_pb2.JoinRequest(
                        player_id=f"p{i}", relay_id="bench", spawn=common_pb2.Vec3(x=x, z=z)
                    )
                )
                self.players[f"p{i}"] = (x, z)
        # Plan from a heartbeat that reports them all.
        deadline = time.monotonic() + 10.0
        while (await self.heartbeat(zone)).players != count:
            if time.monotonic() > deadline:
                raise RuntimeError("the zone never reported every joined player")
            await asyncio.sleep(0.05)

    async def leave(self, players: set[str]) -> None:
        routes = await read_routes(self.runtime.redis, "bench")
        for player in sorted(players):
            address = self.runtime.zones[routes[player].zone].process.grpc_address
            async with grpc_channel(address) as stub:
                await stub.Leave(zone_pb2.LeaveRequest(player_id=player))
            del self.players[player]

    async def heartbeat(self, zone: str) -> zone_pb2.ZoneStatus:
        raw = await self.runtime.redis.get(self.keys.zone_status(zone))
        return (
            zone_pb2.ZoneStatus.FromString(raw) if isinstance(raw, bytes) else zone_pb2.ZoneStatus()
        )

    async def routed_to(self, zone: str, players: set[str]) -> bool:
        routes = await read_routes(self.runtime.redis, "bench")
        return all(p in routes and routes[p].zone == zone for p in players)

    async def serves(self, zone: str, players: set[str]) -> bool:
        """Every one of ``players`` routed to ``zone`` and the zone counting exactly them."""
        address = self.addresses().get(zone)
        if address is None or not await self.routed_to(zone, players):
            return False
        async with grpc_channel(address) as stub:
            status = await stub.GetStatus(zone_pb2.GetStatusRequest(), timeout=2.0)
        return status.players == len(players)


async def split_and_merge(redis_url: str, standby: int, players: int, pass_s: float) -> Cycle:
    """One split and one merge of a zone holding ``players`` real, handed-off players."""
    runtime = LocalRuntime(
        local_world(standby),
        redis_url,
        zone_env={"TESSERA_HEARTBEAT_S": "0.1", **LOCAL.env()},
        channel=LOCAL.channel,
    )
    driver = Driver(runtime, pass_s)
    try:
        await driver.passes_until(
            lambda: (
                len(runtime.zones) == 1 + standby
                and all(z.view.phase == Phase.READY for z in runtime.zones.values())
            ),
            "first zone",
        )
        await driver.join("bench-0", players, random.Random(players))
        decided, action = await driver.until_decided(
            lambda a: a.decision == "Split" and isinstance(a, AssignStandby | CreateZone), "split"
        )
        child = action.zone
        driver.cycle.split_to_standby = isinstance(action, AssignStandby)
        bounds = runtime.zones[child].view.bounds
        if bounds is None:
            raise RuntimeError(f"the split gave {child} no bounds")
        side = {
            p
            for p, (x, z) in driver.players.items()
            if bounds.min_x <= x < bounds.max_x and bounds.min_z <= z < bounds.max_z
        }
        driver.cycle.moved_on_split = len(side)

        async def child_active() -> bool:
            status = await driver.heartbeat(child)
            return status.state == zone_pb2.ZONE_STATE_ACTIVE and status.HasField("bounds")

        async def child_serves() -> bool:
            return await driver.serves(child, side)

        await driver.watch(
            decided, {"split_ready_s": child_active, "split_reaction_s": child_serves}
        )
        stay = set(sorted(side)[:40]) | set(sorted(set(driver.players) - side)[:20])
        await driver.leave(set(driver.players) - stay)
        driver.cycle.moved_on_merge = len(stay & side)
        decided, drain = await driver.until_decided(lambda a: isinstance(a, Drain), "merge")
        if not isinstance(drain, Drain) or drain.zone != child or drain.target is None:
            raise RuntimeError(f"expected {child} to drain into its parent, got {drain}")
        survivor, process = drain.target, runtime.zones[child].process

        async def handed_back() -> bool:
            return await driver.routed_to(survivor, set(driver.players))

        async def exited() -> bool:
            return not process.alive()

        await driver.watch(decided, {"merge_handback_s": handed_back, "merge_retire_s": exited})
        if not await driver.serves(survivor, set(driver.players)):
            raise RuntimeError("the survivor does not serve every remaining player")
        return driver.cycle
    finally:
        await runtime.close()


@contextlib.asynccontextmanager
async def grpc_channel(address: str) -> AsyncIterator[zone_pb2_grpc.ZoneAsyncStub]:
    """An async Zone stub on a fresh channel, closed on exit."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub: zone_pb2_grpc.ZoneAsyncStub = zone_pb2_grpc.ZoneStub(channel)
        yield stub


def run_local(players: int, pass_s: float) -> dict[str, object]:
    with LocalRedis() as redis:
        warm = asyncio.run(split_and_merge(redis.url, 1, players, pass_s))
        cold = asyncio.run(split_and_merge(redis.url, 0, players, pass_s))
    return {
        "pass_interval_s": pass_s,
        "players": players,
        # False when the standby was not ready at the deciding pass and the split
        # started a process instead (then split_*_standby are cold figures too).
        "split_to_standby": warm.split_to_standby,
        "moved_on_split": warm.moved_on_split,
        "moved_on_merge": warm.moved_on_merge,
        "split_ready_s_standby": round(warm.split_ready_s, 3),
        "split_ready_s_cold": round(cold.split_ready_s, 3),
        "split_reaction_s": round(warm.split_reaction_s, 3),
        "split_reaction_s_cold": round(cold.split_reaction_s, 3),
        "merge_handback_s": round(warm.merge_handback_s, 3),
        "merge_retire_s": round(warm.merge_retire_s, 3),
        "merge_drain_s": round(max(warm.merge_handback_s, warm.merge_retire_s), 3),
        "merge_drain_s_cold": round(max(cold.merge_handback_s, cold.merge_retire_s), 3),
        "invariant_scans": warm.scans + cold.scans,
        "invariant_scans_unsettled": warm.unsettled + cold.unsettled,
        "lost": max(warm.lost, cold.lost),
        "duplicated": max(warm.duplicated, cold.duplicated),
        "disconnects": DISCONNECTS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--zones", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--players", type=int, default=300, help="players in the split zone")
    parser.add_argument("--pass-interval", type=float, default=0.2, help="local runtime pass, s")
    args = parser.parse_args()
    if args.players <= SPLIT_AT:
        parser.error(f"--players must be above the split threshold ({SPLIT_AT})")
    results = run(args.zones, args.rounds, args.seed)
    results.update(run_local(args.players, args.pass_interval))
    print(f"{'metric':<26} value")
    for key, value in results.items():
        print(f"{key:<26} {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bench": "autoscale", **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
