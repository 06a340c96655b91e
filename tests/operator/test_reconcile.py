"""The one reconcile pass (tessera.operator.reconcile) over a recording fake
Workloads and a real Redis: the order of its steps and what each step is given.
Both runtimes run this pass; test_handlers.py and test_local.py run it end to
end through the real Workloads of each."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from prometheus_client import REGISTRY
from redis.asyncio import Redis

from tessera.common.store import WorldKeys, instance_zone, instances_stream
from tessera.harness.tokens import LOCAL
from tessera.operator.planner.actions import (
    Action,
    AssignStandby,
    CreateZone,
    Delete,
    Drain,
    Plan,
    Rebound,
)
from tessera.operator.planner.model import Desired, Memory, Phase, Policy, WorldSpec, ZoneView
from tessera.operator.reconcile import Observation, order, reconcile
from tessera.operator.store import INSTANCES_GROUP, OperatorStore
from tessera.operator.zonectl import ZoneControl
from tessera.v1 import matchmaking_pb2, zone_pb2
from tessera.wire.geometry import Rect

WORLD = WorldSpec(
    "earth",
    Rect(0, 0, 1024, 512),
    Policy(split_window_s=0, cooldown_s=0, min_zone_size=64),
)


class Recorder:
    """A Workloads that records every call, and the instance requests still
    pending in Redis when the World's status is reported."""

    def __init__(self, redis: Redis, seen: Observation) -> None:
        self.redis = redis
        self.seen = seen
        self.calls: list[tuple[Any, ...]] = []
        self.memory: Memory | None = None
        self.pending_at_report = -1

    async def resume(self, now: float) -> None:
        self.calls.append(("resume",))

    async def observe(self, store: OperatorStore, now: float) -> Observation:
        self.calls.append(("observe",))
        return self.seen

    async def intend(self, memory: Memory, actions: Sequence[Action]) -> None:
        self.memory = memory
        self.calls.append(("intend", *(type(a).__name__ for a in actions)))

    async def apply(self, action: Action, now: float) -> None:
        self.calls.append(("apply", type(action).__name__, action.zone))

    async def announce(self, action: Action, now: float) -> None:
        self.calls.append(("announce", action.decision, action.zone))

    async def report(
        self, zones: Sequence[ZoneView], result: Plan, *, map_version: int, now: float
    ) -> None:
        self.calls.append(("report", map_version, tuple(z.name for z in zones)))
        pending: Any = await self.redis.xpending(instances_stream("earth"), INSTANCES_GROUP)
        self.pending_at_report = pending["pending"]


class Control(ZoneControl):
    """Records what the pass asks zones to converge to."""

    def __init__(self) -> None:
        super().__init__(LOCAL.channel)
        self.targets: Mapping[str, str | None] = {}

    async def converge(
        self,
        world: str,
        zones: Sequence[ZoneView],
        *,
        statuses: Mapping[str, zone_pb2.ZoneStatus],
        targets: Mapping[str, str | None],
        version: int,
        drain_deadline_s: float,
    ) -> None:
        self.targets = targets


def observed(*views: ZoneView, targets: Mapping[str, str | None] | None = None) -> Observation:
    return Observation(views=views, statuses={}, drain_targets=targets or {}, memory=Memory())


async def test_a_new_world_gets_its_zones_published_and_announced(redis: Redis) -> None:
    workloads = Recorder(redis, observed())
    world = replace(WORLD, policy=replace(WORLD.policy, min_zones=2))
    result = await reconcile(
        world, workloads=workloads, store=OperatorStore(redis), zones=Control(), now=100.0
    )
    assert [a.decision for a in result.actions] == ["Initial", "Initial"]
    assert workloads.calls == [
        ("resume",),
        ("observe",),
        ("intend", "CreateZone", "CreateZone"),
        ("apply", "CreateZone", "earth-0"),
        ("apply", "CreateZone", "earth-1"),
        ("announce", "Initial", "earth-0"),
        ("announce", "Initial", "earth-1"),
        ("report", 1, ("earth-0", "earth-1")),
    ]
    assert workloads.memory == result.memory
    zone_map = await OperatorStore(redis).zone_map("earth")
    assert zone_map is not None and [e.zone for e in zone_map.zones] == ["earth-0", "earth-1"]
    events: Any = await redis.xrange(WorldKeys("earth").events)
    assert [f[b"zone"] for _, f in events] == [b"earth-0", b"earth-1"]


async def test_a_split_is_carried_out_new_zone_first_and_announced_once(redis: Redis) -> None:
    zone = ZoneView("earth-0", bounds=WORLD.bounds, phase=Phase.READY, players=400)
    workloads = Recorder(redis, replace(observed(zone), memory=Memory(next_id=1)))
    await reconcile(
        WORLD, workloads=workloads, store=OperatorStore(redis), zones=Control(), now=100.0
    )
    assert workloads.calls[2:] == [
        ("intend", "CreateZone", "Rebound"),
        ("apply", "CreateZone", "earth-1"),
        ("apply", "Rebound", "earth-0"),
        ("announce", "Split", "earth-1"),  # both actions share the split's reason
        ("report", 1, ("earth-0", "earth-1")),
    ]
    events: Any = await redis.xrange(WorldKeys("earth").events)
    assert [f[b"decision"] for _, f in events] == [b"Split"]


async def test_converge_gets_the_drain_targets_observed_and_decided(redis: Redis) -> None:
    child = ZoneView(
        "earth-1",
        bounds=Rect(512, 0, 1024, 512),
        parent="earth-0",
        depth=1,
        split_depth=1,
        phase=Phase.READY,
    )
    parent = ZoneView("earth-0", bounds=Rect(0, 0, 512, 512), depth=1, phase=Phase.READY)
    old = ZoneView("earth-9", Desired.DRAINING, phase=Phase.DRAINING)
    seen = observed(child, parent, old, targets={"earth-9": "earth-0", "earth-0": None})
    control = Control()
    quiet = replace(WORLD, policy=replace(WORLD.policy, merge_window_s=0))
    workloads = Recorder(redis, replace(seen, memory=Memory(next_id=10)))
    await reconcile(quiet, workloads=workloads, store=OperatorStore(redis), zones=control, now=1.0)
    assert ("apply", "Drain", "earth-1") in workloads.calls  # the quiet pair merges
    assert control.targets == {"earth-9": "earth-0", "earth-0": None, "earth-1": "earth-0"}


async def test_instance_requests_are_acknowledged_after_the_report(redis: Redis) -> None:
    match = "a1" * 16
    zone = instance_zone(match)
    assignment = matchmaking_pb2.Assignment(
        match_id=match,
        destination=matchmaking_pb2.Destination(
            kind=matchmaking_pb2.DESTINATION_KIND_INSTANCE, world="earth", zone=zone
        ),
    )
    fields: dict[Any, Any] = {
        "kind": "create",
        "match": match,
        "zone": zone,
        "at_ms": str(int(time.time() * 1000)),
        "request": assignment.SerializeToString(),
    }
    await redis.xadd(instances_stream("earth"), fields)
    await redis.xadd(instances_stream("earth"), {"kind": "bogus"})
    open_world = ZoneView("earth-0", bounds=WORLD.bounds, phase=Phase.READY)
    workloads = Recorder(redis, replace(observed(open_world), memory=Memory(next_id=1)))
    result = await reconcile(
        WORLD, workloads=workloads, store=OperatorStore(redis), zones=Control(), now=time.time()
    )
    assert [(a.decision, a.zone) for a in result.actions] == [("Instance", zone)]
    assert workloads.pending_at_report == 1  # the malformed one went at once, the create waits
    pending: Any = await redis.xpending(instances_stream("earth"), INSTANCES_GROUP)
    assert pending["pending"] == 0


async def test_the_recommended_zone_count_is_exported_from_open_world_players(
    redis: Redis,
) -> None:
    crowded = ZoneView("earth-0", bounds=WORLD.bounds, phase=Phase.READY, players=450)
    arena = ZoneView("earth-i", phase=Phase.READY, players=300, instance="m1")
    workloads = Recorder(redis, replace(observed(crowded, arena), memory=Memory(next_id=1)))
    await reconcile(
        WORLD, workloads=workloads, store=OperatorStore(redis), zones=Control(), now=100.0
    )
    sample = REGISTRY.get_sample_value("tessera_operator_recommended_zones", {"world": "earth"})
    assert sample == 3  # ceil(450 / 200); the instance's players do not count


def test_order_creates_before_rebounds_before_drains_before_deletes() -> None:
    r = Rect(0, 0, 1, 1)
    actions: list[Action] = [
        Delete("d", False, "Drained", ""),
        Drain("c", None, "Merge", ""),
        Rebound("b", r, 0, "Merge", ""),
        CreateZone("a", r, None, 0, 0, "Split", ""),
        AssignStandby("s", r, None, 0, 0, "Split", ""),
        Drain("e", None, "Delete", ""),
    ]
    assert [a.zone for a in order(actions)] == ["a", "s", "b", "c", "e", "d"]
