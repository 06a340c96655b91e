"""The planner: table-driven rules and hypothesis properties over simulated load.

The simulation moves a population of player positions around the world; each
step every zone observes the players inside its bounds (count and samples),
new zones become Ready after one step and draining zones report Drained after
two, the planner plans and :func:`advance` applies the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.common.store import instance_zone
from tessera.operator.planner import (
    Action,
    AssignStandby,
    CreateZone,
    Delete,
    Desired,
    Drain,
    InstancePolicy,
    InstanceRequest,
    Memory,
    Phase,
    Plan,
    Policy,
    Rebound,
    WorldSpec,
    ZoneView,
    advance,
    partition_errors,
    plan,
    split_rect,
)
from tessera.wire.geometry import Rect

WORLD = Rect(0, 0, 1024, 1024)
Point = tuple[float, float]


def spec(**policy: object) -> WorldSpec:
    standby = policy.pop("standby", 0)
    replicas = policy.pop("replicas", None)
    base = Policy(split_window_s=10, merge_window_s=30, cooldown_s=20, min_zone_size=64)
    return WorldSpec(
        "earth",
        WORLD,
        replace(base, **policy),  # type: ignore[arg-type]
        standby=int(standby),  # type: ignore[call-overload]
        drain_timeout_s=60,
        replicas=replicas,  # type: ignore[arg-type]
    )


def observe(zones: Sequence[ZoneView], players: Sequence[Point]) -> list[ZoneView]:
    """Fill each active zone's load from the positions inside its bounds."""
    out = []
    for z in zones:
        if z.desired == Desired.ACTIVE and z.bounds is not None:
            b = z.bounds
            inside = [
                (x, y) for x, y in players if b.min_x <= x < b.max_x and b.min_z <= y < b.max_z
            ]
            out.append(
                replace(
                    z,
                    players=len(inside),
                    sample_x=tuple(x for x, _ in inside[:512]),
                    sample_z=tuple(y for _, y in inside[:512]),
                )
            )
        else:
            out.append(z)
    return out


class Sim:
    """Zones, memory and a clock, stepped by plans."""

    def __init__(self, world: WorldSpec) -> None:
        self.world = world
        self.zones: list[ZoneView] = []
        self.memory = Memory()
        self.now = 0.0
        self.draining_steps: dict[str, int] = {}
        self.history: list[tuple[float, Action]] = []

    def step(self, players: Sequence[Point], dt: float = 1.0) -> Plan:
        self.now += dt
        lifecycle = []
        for zone in self.zones:
            z = replace(zone, phase=Phase.READY) if zone.phase == Phase.PENDING else zone
            if z.desired == Desired.DRAINING:
                n = self.draining_steps.get(z.name, 0) + 1
                self.draining_steps[z.name] = n
                z = replace(z, phase=Phase.DRAINED if n >= 2 else Phase.DRAINING, players=0)
            lifecycle.append(z)
        self.zones = observe(lifecycle, players)
        result = plan(self.world, self.zones, self.now, self.memory)
        self.memory = result.memory
        self.zones = advance(self.zones, result.actions)
        self.history += [(self.now, a) for a in result.actions]
        return result

    def active(self) -> list[ZoneView]:
        return [z for z in self.zones if z.desired == Desired.ACTIVE]

    def check(self) -> None:
        active = self.active()
        assert partition_errors(WORLD, [z.bounds for z in active if z.bounds]) == []
        assert all(z.bounds is not None for z in active)
        policy = self.world.policy
        assert len(active) <= policy.max_zones
        assert len(active) >= min(policy.min_zones, 1)
        for z in active:
            assert z.bounds is not None
            assert z.bounds.width >= policy.min_zone_size
            assert z.bounds.height >= policy.min_zone_size
            assert z.depth <= policy.max_depth


def crowd(n: int, x: float, z: float, spread: float = 10.0) -> list[Point]:
    """``n`` players on a small deterministic grid around (x, z)."""
    side = max(1, int(n**0.5))
    return [
        (x + spread * ((i % side) / side - 0.5), z + spread * ((i // side) / side - 0.5))
        for i in range(n)
    ]


def kinds(actions: Sequence[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


# --- table-driven rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rect", "xs", "zs", "expected"),
    [
        # Longer axis x, median of the samples.
        (
            Rect(0, 0, 1000, 500),
            [100, 200, 300],
            [0, 0, 0],
            (Rect(0, 0, 200, 500), Rect(200, 0, 1000, 500)),
        ),
        # Longer axis z.
        (
            Rect(0, 0, 500, 1000),
            [0, 0],
            [700, 900],
            (Rect(0, 0, 500, 800), Rect(0, 800, 500, 1000)),
        ),
        # No samples: the middle.
        (Rect(0, 0, 1000, 1000), [], [], (Rect(0, 0, 500, 1000), Rect(500, 0, 1000, 1000))),
        # Median too close to the edge: clamped to the minimum size (100).
        (
            Rect(0, 0, 1000, 1000),
            [1, 2, 3],
            [5, 5, 5],
            (Rect(0, 0, 100, 1000), Rect(100, 0, 1000, 1000)),
        ),
        # Cut on a whole metre.
        (
            Rect(0, 0, 1000, 400),
            [333.3, 333.4],
            [0, 0],
            (Rect(0, 0, 333, 400), Rect(333, 0, 1000, 400)),
        ),
        # Longer axis too small for two halves: the shorter one.
        (Rect(0, 0, 199, 150), [], [], None),
        (Rect(0, 0, 210, 150), [], [], (Rect(0, 0, 105, 150), Rect(105, 0, 210, 150))),
    ],
)
def test_split_rect(
    rect: Rect, xs: list[float], zs: list[float], expected: tuple[Rect, Rect] | None
) -> None:
    assert split_rect(rect, 100, xs, zs) == expected


def test_split_rect_falls_back_to_the_shorter_axis() -> None:
    assert split_rect(Rect(0, 0, 150, 140), 70, [], []) == (
        Rect(0, 0, 75, 140),
        Rect(75, 0, 150, 140),
    )
    assert split_rect(Rect(0, 0, 150, 300), 100, [], []) == (
        Rect(0, 0, 150, 150),
        Rect(0, 150, 150, 300),
    )
    assert split_rect(Rect(0, 0, 150, 199), 100, [], []) is None


@pytest.mark.parametrize(
    ("a", "b", "union"),
    [
        (Rect(0, 0, 5, 10), Rect(5, 0, 10, 10), Rect(0, 0, 10, 10)),
        (Rect(5, 0, 10, 10), Rect(0, 0, 5, 10), Rect(0, 0, 10, 10)),
        (Rect(0, 0, 10, 5), Rect(0, 5, 10, 10), Rect(0, 0, 10, 10)),
        (Rect(0, 0, 5, 10), Rect(5, 0, 10, 9), None),
        (Rect(0, 0, 5, 10), Rect(6, 0, 10, 10), None),
        (Rect(0, 0, 5, 5), Rect(5, 5, 10, 10), None),
    ],
)
def test_union(a: Rect, b: Rect, union: Rect | None) -> None:
    assert a.union(b) == union


@pytest.mark.parametrize(
    ("rects", "problem"),
    [
        ([WORLD], None),
        ([Rect(0, 0, 512, 1024), Rect(512, 0, 1024, 1024)], None),
        ([Rect(0, 0, 512, 1024)], "belong to no zone"),
        ([Rect(0, 0, 600, 1024), Rect(512, 0, 1024, 1024)], "belong to several zones"),
        ([Rect(0, 0, 2048, 1024)], "outside the world"),
    ],
)
def test_partition_errors(rects: list[Rect], problem: str | None) -> None:
    errors = partition_errors(WORLD, rects)
    if problem is None:
        assert errors == []
    else:
        assert any(problem in e for e in errors), errors


@pytest.mark.parametrize(
    ("min_zones", "expected_bounds"),
    [
        (1, [WORLD]),
        (2, [Rect(0, 0, 512, 1024), Rect(512, 0, 1024, 1024)]),
        (
            4,
            [
                Rect(0, 0, 512, 512),
                Rect(512, 0, 1024, 512),
                Rect(0, 512, 512, 1024),
                Rect(512, 512, 1024, 1024),
            ],
        ),
    ],
)
def test_initial_layout(min_zones: int, expected_bounds: list[Rect]) -> None:
    result = plan(spec(min_zones=min_zones), [], now=0)
    creates = [a for a in result.actions if isinstance(a, CreateZone)]
    bounds = [a.bounds for a in creates if a.bounds is not None]
    assert sorted(bounds, key=lambda r: (r.min_z, r.min_x)) == expected_bounds
    assert [a.zone for a in creates] == [f"earth-{i}" for i in range(min_zones)]
    assert result.memory.next_id == min_zones
    assert all(a.decision == "Initial" for a in creates)


def test_initial_layout_is_capped_by_the_minimum_size() -> None:
    world = replace(
        spec(min_zones=64),
        bounds=Rect(0, 0, 256, 128),
        policy=replace(spec().policy, min_zones=64, min_zone_size=64),
    )
    result = plan(world, [], now=0)
    assert len(result.actions) == 8  # 4 x 2 cells of 64 m
    assert any("initial zones fit" in n for n in result.notes)


def ready(name: str, bounds: Rect, players: int = 0, **kw: object) -> ZoneView:
    return ZoneView(name, Desired.ACTIVE, bounds, phase=Phase.READY, players=players, **kw)  # type: ignore[arg-type]


def test_split_waits_for_the_stabilization_window() -> None:
    world = spec()
    zone = ready("earth-0", WORLD, 400, sample_x=(100.0, 200.0, 300.0), sample_z=(0.0, 0.0, 0.0))
    first = plan(world, [zone], now=100, memory=Memory(next_id=1))
    assert first.actions == ()
    assert first.memory.over_since == {"earth-0": 100}
    early = plan(world, [zone], now=109, memory=first.memory)
    assert early.actions == ()
    due = plan(world, [zone], now=110, memory=first.memory)
    assert kinds(due.actions) == ["Rebound", "CreateZone"]
    rebound, create = due.actions
    assert isinstance(rebound, Rebound) and isinstance(create, CreateZone)
    assert rebound.bounds == Rect(0, 0, 200, 1024) and rebound.depth == 1
    assert create.bounds == Rect(200, 0, 1024, 1024)
    assert create.parent == "earth-0" and create.depth == 1 and create.zone == "earth-1"
    assert "400 players > 300 for 10s" in create.reason
    assert due.memory.cooldown_until == {"earth-0": 130, "earth-1": 130}


def test_load_dipping_below_the_mark_restarts_the_window() -> None:
    world = spec()
    hot = ready("earth-0", WORLD, 400)
    calm = ready("earth-0", WORLD, 250)
    m = plan(world, [hot], now=0, memory=Memory(next_id=1)).memory
    m = plan(world, [calm], now=5, memory=m).memory
    assert m.over_since == {}
    m = plan(world, [hot], now=6, memory=m).memory
    assert plan(world, [hot], now=12, memory=m).actions == ()
    assert kinds(plan(world, [hot], now=16, memory=m).actions) == ["Rebound", "CreateZone"]


@pytest.mark.parametrize(
    ("zone", "note"),
    [
        (ready("earth-0", WORLD, 400, depth=8), "maxDepth=8"),
        (ready("earth-0", Rect(0, 0, 100, 100), 400), "minimum zone size"),
    ],
)
def test_split_limits(zone: ZoneView, note: str) -> None:
    world = replace(spec(), bounds=zone.bounds)  # type: ignore[arg-type]
    m = plan(world, [zone], now=0, memory=Memory(next_id=1)).memory
    result = plan(world, [zone], now=100, memory=m)
    assert result.actions == ()
    assert any(note in n for n in result.notes), result.notes


def test_max_zones_stops_splits() -> None:
    world = spec(max_zones=2)
    zones = [
        ready("earth-0", Rect(0, 0, 512, 1024), 900),
        ready("earth-1", Rect(512, 0, 1024, 1024), 800, parent="earth-0", depth=1, split_depth=1),
    ]
    zones[0] = replace(zones[0], depth=1)
    m = plan(world, zones, now=0, memory=Memory(next_id=2)).memory
    result = plan(world, zones, now=100, memory=m)
    assert result.actions == ()
    assert any("maxZones=2" in n for n in result.notes)


def test_busiest_zone_splits_first_when_capacity_is_short() -> None:
    world = spec(max_zones=3)
    zones = [
        ready("earth-0", Rect(0, 0, 512, 1024), 400, depth=1),
        ready("earth-1", Rect(512, 0, 1024, 1024), 900, parent="earth-0", depth=1, split_depth=1),
    ]
    m = plan(world, zones, now=0, memory=Memory(next_id=2)).memory
    result = plan(world, zones, now=100, memory=m)
    assert [a.zone for a in result.actions if isinstance(a, Rebound)] == ["earth-1"]


def siblings(players_a: int, players_b: int) -> list[ZoneView]:
    return [
        ready("earth-0", Rect(0, 0, 512, 1024), players_a, depth=1),
        ready(
            "earth-1", Rect(512, 0, 1024, 1024), players_b, parent="earth-0", depth=1, split_depth=1
        ),
    ]


def test_merge_after_the_window() -> None:
    world = spec()
    m = plan(world, siblings(30, 40), now=0, memory=Memory(next_id=2)).memory
    assert m.under_since == {"earth-1": 0}
    assert plan(world, siblings(30, 40), now=29, memory=m).actions == ()
    result = plan(world, siblings(30, 40), now=30, memory=m)
    assert result.actions[0] == Rebound(
        "earth-0",
        WORLD,
        0,
        "Merge",
        result.actions[0].reason,
    )
    drain = result.actions[1]
    assert isinstance(drain, Drain) and drain.zone == "earth-1" and drain.target == "earth-0"
    assert "70 players < 100" in drain.reason


@pytest.mark.parametrize(
    ("zones", "min_zones"),
    [
        (siblings(30, 80), 1),  # 110 >= low-water
        (siblings(1, 1), 2),  # minZones
        (
            [replace(z, depth=2) if z.name == "earth-0" else z for z in siblings(1, 1)],
            1,
        ),  # depths differ
        (
            [
                replace(z, phase=Phase.STARTING) if z.name == "earth-1" else z
                for z in siblings(1, 1)
            ],
            1,
        ),
    ],
)
def test_no_merge(zones: list[ZoneView], min_zones: int) -> None:
    world = spec(min_zones=min_zones)
    m = plan(world, zones, now=0, memory=Memory(next_id=2)).memory
    assert plan(world, zones, now=1000, memory=m).actions == ()


def test_drained_zone_is_deleted_and_timeout_forces_it() -> None:
    world = spec()
    draining = ZoneView(
        "earth-1", Desired.DRAINING, Rect(512, 0, 1024, 1024), phase=Phase.DRAINING, players=5
    )
    zones = [ready("earth-0", WORLD), draining]
    m = plan(world, zones, now=0, memory=Memory(next_id=2)).memory
    assert m.drain_since == {"earth-1": 0}
    assert plan(world, zones, now=59, memory=m).actions == ()
    forced = plan(world, zones, now=60, memory=m).actions
    assert forced == (Delete("earth-1", True, "DrainTimeout", forced[0].reason),)
    done = plan(world, [zones[0], replace(draining, phase=Phase.DRAINED)], now=1, memory=m)
    assert kinds(done.actions) == ["Delete"] and not done.actions[0].forced  # type: ignore[union-attr]


def test_deleting_a_zone_merges_it_into_its_sibling() -> None:
    zones = siblings(200, 200)
    zones[1] = replace(zones[1], deleting=True)
    result = plan(spec(), zones, now=0, memory=Memory(next_id=2))
    assert kinds(result.actions) == ["Rebound", "Drain"]
    assert result.actions[0].zone == "earth-0" and result.actions[0].bounds == WORLD  # type: ignore[union-attr]
    assert result.actions[1] == Drain("earth-1", "earth-0", "Delete", result.actions[1].reason)


def test_deleting_a_zone_at_min_zones_replaces_it() -> None:
    zones = siblings(200, 200)
    zones[1] = replace(zones[1], deleting=True)
    result = plan(spec(min_zones=2), zones, now=0, memory=Memory(next_id=2))
    assert kinds(result.actions) == ["CreateZone", "Drain"]
    create, drain = result.actions
    assert isinstance(create, CreateZone) and create.zone == "earth-2"
    assert create.bounds == Rect(512, 0, 1024, 1024) and create.parent == "earth-0"
    assert drain == Drain("earth-1", "earth-2", "Delete", drain.reason)


def test_standby_pool_is_filled_used_and_refilled() -> None:
    world = spec(standby=2)
    first = plan(world, [], now=0)
    assert [(type(a).__name__, a.bounds) for a in first.actions] == [  # type: ignore[union-attr]
        ("CreateZone", WORLD),
        ("CreateZone", None),
        ("CreateZone", None),
    ]
    zones = [
        ready("earth-0", WORLD, 400),
        ZoneView("earth-1", Desired.STANDBY, phase=Phase.READY),
        ZoneView("earth-2", Desired.STANDBY, phase=Phase.READY),
    ]
    m = plan(world, zones, now=0, memory=first.memory).memory
    result = plan(world, zones, now=10, memory=m)
    assert kinds(result.actions) == ["Rebound", "AssignStandby", "CreateZone"]
    assign = result.actions[1]
    assert isinstance(assign, AssignStandby) and assign.zone == "earth-1"
    assert assign.parent == "earth-0" and assign.depth == 1
    assert result.actions[2].bounds is None  # type: ignore[union-attr]


def test_standby_surplus_is_removed() -> None:
    zones = [ready("earth-0", WORLD)] + [
        ZoneView(f"earth-{i}", Desired.STANDBY, phase=Phase.READY) for i in (1, 2)
    ]
    result = plan(spec(standby=1), zones, now=0, memory=Memory(next_id=3))
    assert result.actions == (Delete("earth-2", False, "Standby", "standby pool above its size"),)


def test_external_mode_follows_replicas() -> None:
    zones = [ready("earth-0", WORLD, 10)]
    world = spec(mode="External", replicas=3)
    grow = plan(world, zones, now=0, memory=Memory(next_id=1))
    assert kinds(grow.actions) == ["Rebound", "CreateZone"]  # one split per zone per plan
    zones = advance(zones, grow.actions)
    zones = [replace(z, phase=Phase.READY) for z in zones]
    grow2 = plan(world, zones, now=100, memory=grow.memory)
    assert kinds(grow2.actions) == ["Rebound", "CreateZone"]
    shrink = plan(
        spec(mode="External", replicas=1),
        [replace(z, phase=Phase.READY) for z in advance(zones, grow2.actions)],
        now=200,
        memory=grow2.memory,
    )
    assert kinds(shrink.actions) == ["Rebound", "Drain"]


def test_static_layout_only_drains_deleted_zones() -> None:
    world = replace(spec(), layout="Static")
    zones = [
        ready("a", Rect(0, 0, 512, 1024), 5000),
        ready("b", Rect(512, 0, 1024, 1024), deleting=True),
    ]
    result = plan(world, zones, now=0)
    assert result.actions == (Drain("b", None, "Delete", "b is being deleted"),)


def test_broken_partition_holds_scaling() -> None:
    zones = [ready("earth-0", Rect(0, 0, 512, 1024), 5000)]
    m = plan(spec(), zones, now=0, memory=Memory(next_id=1)).memory
    result = plan(spec(), zones, now=100, memory=m)
    assert result.actions == ()
    assert any("do not partition" in n for n in result.notes)


def test_plan_is_deterministic_and_memory_round_trips() -> None:
    zones = [ready("earth-0", WORLD, 400, sample_x=(1.0, 900.0), sample_z=(3.0, 4.0))]
    m = plan(spec(), zones, now=0, memory=Memory(next_id=1)).memory
    assert Memory.from_dict(m.to_dict()) == m
    assert plan(spec(), zones, now=50, memory=m) == plan(
        spec(), list(reversed(zones)), now=50, memory=Memory.from_dict(m.to_dict())
    )
    assert Memory.from_dict({"nextId": "x", "overSince": {"a": "bad", "b": 1}}) == Memory(
        over_since={"b": 1.0}
    )


def test_crowd_splits_then_merges_back_end_to_end() -> None:
    sim = Sim(spec(max_zones=16))
    sim.step([])
    crowded = crowd(1000, 100, 100, spread=60)
    for _ in range(60):
        sim.step(crowded)
        sim.check()
    assert len(sim.active()) > 2
    assert all(z.players <= 300 for z in sim.active()), [(z.name, z.players) for z in sim.active()]
    for _ in range(400):
        sim.step([])
        sim.check()
    assert [z.bounds for z in sim.active()] == [WORLD]
    assert {a.decision for _, a in sim.history} >= {"Initial", "Split", "Merge", "Drained"}


# --- properties ------------------------------------------------------------------------

crowds = st.lists(
    st.tuples(
        st.integers(0, 900),  # players
        st.floats(0, 1023, allow_nan=False),
        st.floats(0, 1023, allow_nan=False),
        st.floats(1, 400, allow_nan=False),  # spread
    ),
    min_size=0,
    max_size=4,
)
policies = st.fixed_dictionaries(
    {
        "min_zones": st.integers(1, 4),
        "max_zones": st.integers(4, 24),
        "standby": st.integers(0, 2),
        "min_zone_size": st.sampled_from([16, 64, 100, 333]),
        "max_depth": st.integers(1, 8),
    }
)


def population(groups: Sequence[tuple[int, float, float, float]]) -> list[Point]:
    points: list[Point] = []
    for n, x, z, spread in groups:
        points += [
            (min(max(px, 0.0), 1023.9), min(max(pz, 0.0), 1023.9))
            for px, pz in crowd(n, x, z, spread)
        ]
    return points


@settings(max_examples=60, deadline=None)
@given(
    policy=policies, steps=st.lists(st.tuples(crowds, st.integers(1, 40)), min_size=1, max_size=8)
)
def test_any_sequence_of_plans_keeps_an_exact_partition(
    policy: dict[str, int], steps: list[tuple[list[tuple[int, float, float, float]], int]]
) -> None:
    sim = Sim(spec(**policy))
    sim.step([])
    sim.check()
    initial = len(sim.active())
    assert initial == policy["min_zones"] or any(
        "initial zones fit" in n for n in plan(sim.world, [], 0).notes
    )
    for groups, duration in steps:
        players = population(groups)
        for _ in range(duration):
            sim.step(players, dt=2.0)
            sim.check()
            assert len(sim.active()) >= initial


@settings(max_examples=40, deadline=None)
@given(
    base=st.integers(0, 1200),
    swing=st.integers(1, 400),
    period=st.integers(2, 9),
    x=st.floats(50, 950),
)
def test_load_oscillating_faster_than_the_window_never_flaps(
    base: int, swing: int, period: int, x: float
) -> None:
    """Load swinging across the marks with a half-period shorter than the split
    window causes no split at all if it starts below the mark; and no zone takes
    part in two scaling decisions within the cooldown."""
    sim = Sim(spec(max_zones=32))
    for t in range(150):
        n = base + swing if (t // period) % 2 == 0 else max(0, base - swing)
        sim.step(crowd(n, x, 500, spread=200))
        sim.check()
    last: dict[str, float] = {}
    for when, action in sim.history:
        if action.decision in ("Split", "Merge") and not isinstance(action, Drain):
            if action.zone in last:
                assert when - last[action.zone] >= sim.world.policy.cooldown_s, (action, last)
            last[action.zone] = when
    if base + swing <= 300:
        assert not any(a.decision == "Split" for _, a in sim.history)


def test_oscillation_around_the_split_mark_does_not_split() -> None:
    sim = Sim(spec())
    for t in range(200):
        n = 320 if (t // 5) % 2 == 0 else 280  # above for 5 s, below for 5 s; window 10 s
        sim.step(crowd(n, 300, 300, spread=100))
    assert not any(a.decision in ("Split", "Merge") for _, a in sim.history)


@settings(max_examples=40, deadline=None)
@given(
    replicas=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    standby=st.integers(0, 2),
    groups=crowds,
)
def test_external_mode_converges_to_replicas_within_limits(
    replicas: list[int], standby: int, groups: list[tuple[int, float, float, float]]
) -> None:
    """With autoscaling.mode External the zone count follows spec.replicas
    (clamped to the limits), one decision per zone per cooldown, and the
    partition stays exact throughout."""
    players = population(groups)
    sim = Sim(
        spec(mode="External", replicas=replicas[0], min_zones=2, max_zones=10, standby=standby)
    )
    for target in replicas:
        sim.world = replace(sim.world, replicas=target)
        for _ in range(40):
            sim.step(players, dt=5.0)  # longer than the cooldown (20 s) every 4 steps
            sim.check()
        assert len(sim.active()) == min(max(target, 2), 10)


# --- instance zones -------------------------------------------------------------------

MATCH = "0f3c9a1e5b7d4c2a8e6f1b3d5c7a9e0f"


def inst_policy(**kw: float) -> WorldSpec:
    base = InstancePolicy(
        max_instances=2, start_timeout_s=100, idle_s=30, end_grace_s=10, max_lifetime_s=1000
    )
    return replace(spec(), instances=replace(base, **kw))  # type: ignore[arg-type]


def create(match: str, at: float = 0.0, entry: str | None = None) -> InstanceRequest:
    return InstanceRequest(
        entry or f"c-{match}", "create", match, instance_zone(match), at, ("p1", "p2")
    )


def end(match: str, at: float = 0.0, entry: str | None = None) -> InstanceRequest:
    return InstanceRequest(entry or f"e-{match}", "end", match, instance_zone(match), at)


def instance(match: str, players: int = 0, created: float = 0.0, **kw: object) -> ZoneView:
    return ready(instance_zone(match), WORLD, players, instance=match, created=created, **kw)


OPEN = [ready("earth-0", WORLD, 10)]


def test_requested_instance_is_created_with_the_world_bounds() -> None:
    result = plan(inst_policy(), OPEN, now=5, requests=[create(MATCH)])
    assert result.actions == (
        CreateZone(
            "inst-0f3c9a1e5b7d4c2a8e6f1b3d",
            WORLD,
            None,
            0,
            0,
            "Instance",
            f"match {MATCH}: instance zone for 2 players",
            instance=MATCH,
        ),
    )
    assert result.done == (f"c-{MATCH}",)


def test_existing_or_repeated_instance_is_not_created_again() -> None:
    zones = [*OPEN, instance("m1")]
    result = plan(inst_policy(), zones, now=5, requests=[create("m1"), create("m2", entry="a")])
    assert kinds(result.actions) == ["CreateZone"]
    assert result.actions[0].zone == "inst-m2"
    assert result.done == ("c-m1", "a")
    twice = plan(
        inst_policy(), OPEN, now=5, requests=[create("m2", entry="a"), create("m2", entry="b")]
    )
    assert kinds(twice.actions) == ["CreateZone"] and twice.done == ("a", "b")


def test_instances_are_capped_and_the_rest_wait_unacknowledged() -> None:
    zones = [*OPEN, instance("m1")]
    requests = [create("m2"), create("m3"), create("m4")]
    result = plan(inst_policy(max_instances=2), zones, now=5, requests=requests)
    assert [a.zone for a in result.actions] == ["inst-m2"]
    assert result.done == ("c-m2",)
    assert "2 instance requests wait: maxInstances=2" in result.notes
    # A draining instance still counts until it is deleted.
    draining = [*OPEN, replace(instance("m1"), desired=Desired.DRAINING)]
    result = plan(inst_policy(max_instances=1), draining, now=5, requests=requests)
    assert result.actions == () and result.done == ()
    # Once it is gone, the oldest waiting request goes first.
    result = plan(inst_policy(max_instances=1), OPEN, now=5, requests=requests)
    assert [a.zone for a in result.actions] == ["inst-m2"] and result.done == ("c-m2",)
    assert plan(inst_policy(max_instances=0), OPEN, now=5, requests=requests).done == ()


def test_a_request_that_waited_past_the_start_timeout_is_dropped() -> None:
    requests = [create("m2", at=0.0), create("m3", at=50.0)]
    result = plan(inst_policy(max_instances=0, start_timeout_s=100), OPEN, 120, requests=requests)
    assert result.actions == () and result.done == ("c-m2",)
    assert any("inst-m2 of match m2 dropped: requested 120s ago" in n for n in result.notes)


def test_an_end_before_the_create_cancels_it() -> None:
    result = plan(inst_policy(), OPEN, now=5, requests=[create("m1"), end("m1")])
    assert result.actions == ()
    assert sorted(result.done) == ["c-m1", "e-m1"]
    # An end for an instance that is long gone is just acknowledged.
    assert plan(inst_policy(), OPEN, now=5, requests=[end("m9")]).done == ("e-m9",)


def test_reported_match_ends_after_the_grace() -> None:
    zones = [*OPEN, instance("m1", players=4)]
    first = plan(inst_policy(), zones, now=100, requests=[end("m1", at=95)])
    assert first.actions == () and first.done == ("e-m1",)
    assert first.memory.end_at == {"inst-m1": 95}
    # An end stamped in the future (clock skew) counts from now.
    assert plan(inst_policy(), zones, now=100, requests=[end("m1", at=500)]).memory.end_at == {
        "inst-m1": 100
    }
    assert plan(inst_policy(), zones, now=104, memory=first.memory).actions == ()
    result = plan(inst_policy(), zones, now=105, memory=first.memory)
    assert result.actions == (
        Drain(
            "inst-m1", None, "InstanceEnd", "end instance inst-m1: match m1 was reported 10s ago"
        ),
    )
    assert result.memory.drain_since["inst-m1"] == 105


def test_idle_instance_ends_only_after_it_had_players() -> None:
    w = inst_policy(idle_s=30, start_timeout_s=100)
    empty = [*OPEN, instance("m1", players=0)]
    m = plan(w, empty, now=10).memory
    assert m.idle_since == {} and m.joined == {}  # never had players: not idle
    m = plan(w, [*OPEN, instance("m1", players=3)], now=20, memory=m).memory
    assert m.joined == {"inst-m1": 20}
    m = plan(w, empty, now=40, memory=m).memory
    assert m.idle_since == {"inst-m1": 40}
    assert plan(w, empty, now=69, memory=m).actions == ()
    # Players back: the idle timer restarts.
    m2 = plan(w, [*OPEN, instance("m1", players=1)], now=60, memory=m).memory
    assert m2.idle_since == {} and m2.joined == {"inst-m1": 20}
    (drain,) = plan(w, empty, now=70, memory=m).actions
    assert drain == Drain(
        "inst-m1", None, "InstanceEnd", "end instance inst-m1: no players for 30s"
    )
    # No heartbeat (restarting): players unknown, timers unchanged.
    gone = [*OPEN, replace(instance("m1"), phase=Phase.FAILED)]
    assert plan(w, gone, now=50, memory=replace(m, idle_since={})).memory.idle_since == {}


def test_instance_nobody_joined_ends_after_the_start_timeout() -> None:
    w = inst_policy(start_timeout_s=100)
    zones = [*OPEN, replace(instance("m1", created=1000), phase=Phase.STARTING)]
    assert plan(w, zones, now=1099).actions == ()
    (drain,) = plan(w, zones, now=1100).actions
    assert drain.reason == "end instance inst-m1: no player joined within 100s"
    joined = Memory(joined={"inst-m1": 1050})
    assert plan(w, zones, now=1100, memory=joined).actions == ()
    # Without a creation time the age rules cannot apply.
    assert plan(w, [*OPEN, instance("m1", created=None)], now=10**6).actions == ()  # type: ignore[arg-type]


def test_instance_ends_at_its_maximum_lifetime() -> None:
    w = inst_policy(max_lifetime_s=1000)
    zones = [*OPEN, instance("m1", players=8, created=0)]
    m = plan(w, zones, now=999).memory
    assert plan(w, zones, now=999.5, memory=m).actions == ()
    (drain,) = plan(w, zones, now=1000, memory=m).actions
    assert drain.reason == "end instance inst-m1: 1000s old, maxLifetimeSeconds=1000"


def test_deleted_instance_drains_with_no_target_and_drained_is_deleted() -> None:
    zones = [*OPEN, instance("m1", players=2, deleting=True)]
    (drain,) = plan(inst_policy(), zones, now=5).actions
    assert drain == Drain(
        "inst-m1", None, "InstanceEnd", "end instance inst-m1: the ZoneServer is being deleted"
    )
    static = replace(inst_policy(), layout="Static")
    assert plan(static, zones, now=5).actions == (drain,)
    drained = [*OPEN, replace(instance("m1"), desired=Desired.DRAINING, phase=Phase.DRAINED)]
    assert plan(inst_policy(), drained, now=5).actions == (
        Delete("inst-m1", False, "Drained", "inst-m1 drained"),
    )


def test_instances_stay_out_of_the_partition_and_scaling() -> None:
    w = replace(inst_policy(), standby=1)
    half = [ready("earth-0", Rect(0, 0, 512, 1024)), ready("earth-1", Rect(512, 0, 1024, 1024))]
    half[1] = replace(half[1], parent="earth-0", depth=1, split_depth=1)
    half[0] = replace(half[0], depth=1)
    standby = ZoneView("earth-5", Desired.STANDBY, phase=Phase.READY)
    crowded = instance("m1", players=5000, created=9990)
    zones = [*half, standby, crowded, instance("m2", players=1, created=9990)]
    m = Memory(next_id=6, under_since={"earth-1": 0.0})
    result = plan(w, zones, now=10_000, memory=m)
    # The instances overlap the whole world, yet the layout is a partition: the
    # quiet pair merges, the crowded instance is not split, no standby is used.
    assert not any("partition" in n for n in result.notes)
    assert kinds(result.actions) == ["Rebound", "Drain"]
    assert {a.zone for a in result.actions} == {"earth-0", "earth-1"}
    # No open-world zone at all: the initial layout is still made.
    result = plan(w, [crowded], now=9991, requests=[create("m3", at=9990)])
    assert sorted(a.decision for a in result.actions) == ["Initial", "Instance", "Standby"]
    # maxZones counts open-world zones only.
    w1 = replace(w, policy=replace(w.policy, max_zones=2, split_window_s=0))
    one = [ready("earth-0", WORLD, 5000), crowded]
    result = plan(w1, one, now=9991, memory=Memory(next_id=6), requests=[create("m3", at=9990)])
    assert "Split" in {a.decision for a in result.actions}


def test_instance_memory_round_trips() -> None:
    m = Memory(joined={"a": 1.0}, idle_since={"a": 2.0}, end_at={"b": 3.0})
    assert Memory.from_dict(m.to_dict()) == m
    zones = [*OPEN, instance("m1", players=1)]
    # Timers of zones that no longer exist are dropped.
    assert plan(inst_policy(), zones, now=5, memory=m).memory.end_at == {}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["create", "end", "players", "empty", "tick"]),
            st.integers(0, 5),
        ),
        max_size=40,
    ),
    st.integers(0, 3),
)
def test_instance_requests_are_served_once_within_the_cap(
    events: list[tuple[str, int]], cap: int
) -> None:
    """Any interleaving of requests, joins and leaves: never more than the cap at
    once, a request is acknowledged only when it is taken care of, every instance
    ends once, and the open world is untouched."""
    w = inst_policy(
        max_instances=cap, idle_s=5, end_grace_s=3, start_timeout_s=20, max_lifetime_s=25
    )
    zones: list[ZoneView] = list(OPEN)
    memory = Memory(next_id=1)
    pending: list[InstanceRequest] = []
    players: dict[str, int] = {}
    created: list[str] = []
    drained: list[str] = []
    now = 0.0
    # The events, then ticks until every instance has ended (each lives <= 25 s).
    steps = [*events, *[("tick", 0)] * (25 * (len(events) + 1))]
    for n, (kind, m) in enumerate(steps):
        if n >= len(events) and not (pending and cap) and not any(z.instance for z in zones):
            break
        now += 1.0
        match = f"m{m}"
        if kind in ("create", "end"):
            make = create if kind == "create" else end
            pending.append(make(match, at=now, entry=str(n)))
        elif kind in ("players", "empty"):
            players[instance_zone(match)] = 2 if kind == "players" else 0
        zones = [replace(z, players=players.get(z.name, 0)) if z.instance else z for z in zones]
        result = plan(w, zones, now, memory, pending)
        memory = result.memory
        assert not {a.zone for a in result.actions} & {"earth-0"}
        pending = [r for r in pending if r.id not in result.done]
        created += [a.zone for a in result.actions if isinstance(a, CreateZone)]
        drained += [a.zone for a in result.actions if isinstance(a, Drain)]
        zones = [
            replace(z, phase=Phase.DRAINED) if z.desired == Desired.DRAINING else z
            for z in advance(zones, result.actions)
        ]
        zones = [
            replace(z, phase=Phase.READY, created=now) if z.phase == Phase.PENDING else z
            for z in zones
        ]
        assert sum(1 for z in zones if z.instance) <= cap
        assert all(z.bounds == WORLD for z in zones if z.instance)
    assert sorted(created) == sorted(drained)  # everything created has ended
    assert not [r for r in pending if r.kind == "end"]
    if cap > 0:
        assert pending == []
