"""Splits and merges (tessera.operator.planner.autoscale): table-driven rules
through plan(), the decision functions of each mode on their own, and hypothesis
properties over simulated load."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.operator.planner.actions import CreateZone, Drain, Rebound, advance
from tessera.operator.planner.autoscale import (
    OVERLOAD_SPLIT_LEVEL,
    Decision,
    Merge,
    Split,
    density_merges,
    density_splits,
    external_merges,
    external_splits,
    external_target,
    over_mark_since,
    over_split_mark,
    under_mark_since,
)
from tessera.operator.planner.geometry import Pair, cut_text
from tessera.operator.planner.model import Memory, Phase, Policy, ZoneView
from tessera.operator.planner.rules import plan
from tessera.wire.geometry import Rect

from .conftest import WORLD, Sim, crowd, crowds, kinds, population, ready, siblings, spec


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


def test_oscillation_around_the_split_mark_does_not_split() -> None:
    sim = Sim(spec())
    for t in range(200):
        n = 320 if (t // 5) % 2 == 0 else 280  # above for 5 s, below for 5 s; window 10 s
        sim.step(crowd(n, 300, 300, spread=100))
    assert not any(a.decision in ("Split", "Merge") for _, a in sim.history)


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


# --- the decision functions on their own -------------------------------------------------

POLICY = Policy(
    split_threshold=300,
    merge_threshold=100,
    split_window_s=10,
    merge_window_s=30,
    min_zones=1,
    max_zones=8,
    min_zone_size=64,
    max_depth=4,
)
LEFT, RIGHT = Rect(0, 0, 512, 1024), Rect(512, 0, 1024, 1024)


def hot(name: str, players: int, bounds: Rect = LEFT, **kw: object) -> ZoneView:
    return ready(name, bounds, players, **kw)


def pair(child: str, parent: str, players: tuple[int, int] = (0, 0)) -> Pair:
    return Pair(hot(child, players[0], RIGHT), hot(parent, players[1]), WORLD)


def test_over_mark_since_starts_keeps_and_drops_the_window() -> None:
    zones = [
        hot("new", 301),
        hot("kept", 400),
        hot("calm", 300),
        replace(hot("starting", 900), phase=Phase.STARTING),
    ]
    since = {"kept": 5.0, "calm": 5.0, "starting": 5.0, "elsewhere": 1.0}
    assert over_mark_since(zones, policy=POLICY, since=since, now=9) == {
        "new": 9,
        "kept": 5.0,
        "elsewhere": 1.0,  # zones not looked at keep theirs
    }
    assert since == {"kept": 5.0, "calm": 5.0, "starting": 5.0, "elsewhere": 1.0}


def test_under_mark_since_starts_keeps_and_drops_the_window() -> None:
    starting = pair("c4", "p4", (1, 1))
    pairs = [
        pair("c1", "p1", (40, 59)),
        pair("c2", "p2", (50, 50)),
        pair("c3", "p3", (0, 0)),
        starting._replace(parent=replace(starting.parent, phase=Phase.STARTING)),
    ]
    since = {"c2": 1.0, "c3": 2.0, "c4": 3.0, "other": 4.0}
    assert under_mark_since(pairs, policy=POLICY, since=since, now=9) == {
        "c1": 9,
        "c3": 2.0,
        "other": 4.0,
    }


@pytest.mark.parametrize(
    ("zones", "over_since", "count", "splits", "notes"),
    [
        # The window: 10 s over the mark.
        ([hot("a", 400)], {"a": 91.0}, 1, [], []),
        ([hot("a", 400)], {"a": 90.0}, 1, [("a", "z=512", "400 players > 300 for 10s")], []),
        ([hot("a", 400)], {}, 1, [], []),
        # Busiest first, every due zone.
        (
            [hot("a", 400), hot("b", 500, RIGHT)],
            {"a": 0.0, "b": 0.0},
            2,
            [
                ("b", "z=512", "500 players > 300 for 100s"),
                ("a", "z=512", "400 players > 300 for 100s"),
            ],
            [],
        ),
        # maxZones stops the rest.
        (
            [hot("a", 400), hot("b", 500, RIGHT)],
            {"a": 0.0, "b": 0.0},
            7,
            [("b", "z=512", "500 players > 300 for 100s")],
            ["a has 400 players but maxZones=8"],
        ),
        # maxDepth and the minimum size skip a zone, the next one still splits.
        (
            [hot("a", 900, depth=4), hot("b", 800, Rect(0, 0, 100, 100)), hot("c", 700, RIGHT)],
            {"a": 0.0, "b": 0.0, "c": 0.0},
            3,
            [("c", "z=512", "700 players > 300 for 100s")],
            [
                "a has 900 players but is at maxDepth=4",
                "b has 800 players but is at the minimum zone size",
            ],
        ),
    ],
)
def test_density_splits(
    zones: list[ZoneView],
    over_since: dict[str, float],
    count: int,
    splits: list[tuple[str, str, str]],
    notes: list[str],
) -> None:
    decision = density_splits(zones, policy=POLICY, over_since=over_since, count=count, now=100)
    assert [(s.zone.name, cut_text(s.low, s.high), s.why) for s in decision.splits] == splits
    assert list(decision.notes) == notes and decision.merges == ()


def test_a_split_keeps_the_lower_half_at_the_median() -> None:
    zone = hot("a", 400, WORLD, sample_x=(100.0, 300.0, 700.0), sample_z=(0.0, 0.0, 0.0))
    decision = density_splits([zone], policy=POLICY, over_since={"a": 0.0}, count=1, now=10)
    assert decision == Decision(
        splits=(
            Split(zone, Rect(0, 0, 300, 1024), Rect(300, 0, 1024, 1024), decision.splits[0].why),
        )
    )


@pytest.mark.parametrize(
    ("target", "count", "max_zones", "splits", "notes"),
    [
        (1, 1, 8, [], []),
        (1, 3, 8, [], []),  # more than wanted: merges, not splits
        (2, 1, 8, [("c", "spec.replicas=2 > 1 zones")], []),
        (
            3,
            1,
            8,
            [("c", "spec.replicas=3 > 1 zones"), ("b", "spec.replicas=3 > 2 zones")],
            [],
        ),
        (9, 1, 8, [(n, f"spec.replicas=9 > {i + 1} zones") for i, n in enumerate("cba")], []),
        (9, 7, 8, [("c", "spec.replicas=9 > 7 zones")], ["b has 20 players but maxZones=8"]),
    ],
)
def test_external_splits(
    target: int, count: int, max_zones: int, splits: list[tuple[str, str]], notes: list[str]
) -> None:
    zones = [hot("a", 10), hot("b", 20), hot("c", 30)]  # busiest first: c, b, a
    policy = replace(POLICY, max_zones=max_zones)
    decision = external_splits(zones, policy=policy, target=target, count=count)
    assert [(s.zone.name, s.why) for s in decision.splits] == splits
    assert list(decision.notes) == notes


def test_external_splits_skip_zones_that_cannot_split() -> None:
    zones = [hot("a", 90, depth=4), hot("b", 10)]
    decision = external_splits(zones, policy=POLICY, target=2, count=1)
    assert [s.zone.name for s in decision.splits] == ["b"]
    assert decision.notes == ("a has 90 players but is at maxDepth=4",)


@pytest.mark.parametrize(
    ("under_since", "count", "min_zones", "merges", "notes"),
    [
        ({"c1": 71.0, "c2": 71.0}, 4, 1, [], []),  # 29 s: not yet
        (
            {"c1": 70.0, "c2": 0.0},
            4,
            1,
            [("c2", "10 players < 100 for 100s"), ("c1", "50 players < 100 for 30s")],
            [],
        ),  # quietest first
        ({"c1": 0.0}, 4, 1, [("c1", "50 players < 100 for 100s")], []),
        (
            {"c1": 0.0, "c2": 0.0},
            2,
            1,
            [("c2", "10 players < 100 for 100s")],
            ["c1 and p1 are quiet but minZones=1"],
        ),
        ({"c1": 0.0, "c2": 0.0}, 2, 2, [], ["c2 and p2 are quiet but minZones=2"]),
    ],
)
def test_density_merges(
    under_since: dict[str, float],
    count: int,
    min_zones: int,
    merges: list[tuple[str, str]],
    notes: list[str],
) -> None:
    pairs = [pair("c1", "p1", (20, 30)), pair("c2", "p2", (5, 5))]
    policy = replace(POLICY, min_zones=min_zones)
    decision = density_merges(pairs, policy=policy, under_since=under_since, count=count, now=100)
    assert [(m.pair.child.name, m.why) for m in decision.merges] == merges
    assert list(decision.notes) == notes and decision.splits == ()


@pytest.mark.parametrize(
    ("target", "count", "min_zones", "merges", "notes"),
    [
        (4, 4, 1, [], []),
        (5, 4, 1, [], []),
        (3, 4, 1, [("c2", "spec.replicas=3 < 4 zones")], []),
        (
            1,
            4,
            1,
            [("c2", "spec.replicas=1 < 4 zones"), ("c1", "spec.replicas=1 < 3 zones")],
            [],
        ),
        (1, 4, 3, [("c2", "spec.replicas=1 < 4 zones")], ["c1 and p1 are quiet but minZones=3"]),
    ],
)
def test_external_merges(
    target: int, count: int, min_zones: int, merges: list[tuple[str, str]], notes: list[str]
) -> None:
    pairs = [pair("c1", "p1", (20, 30)), pair("c2", "p2", (5, 5))]
    policy = replace(POLICY, min_zones=min_zones)
    decision = external_merges(pairs, policy=policy, target=target, count=count)
    assert [(m.pair.child.name, m.why) for m in decision.merges] == merges
    assert list(decision.notes) == notes
    assert all(isinstance(m, Merge) for m in decision.merges)


@pytest.mark.parametrize(
    ("mode", "replicas", "target"),
    [
        ("Density", 5, None),
        ("External", None, None),
        ("External", 5, 5),
        ("External", 0, 2),  # minZones
        ("External", 99, 10),  # maxZones
    ],
)
def test_external_target(mode: str, replicas: int | None, target: int | None) -> None:
    world = spec(mode=mode, replicas=replicas, min_zones=2, max_zones=10)
    assert external_target(world) == target


@pytest.mark.parametrize(
    ("players", "level", "over"),
    [
        (0, 0, False),
        (300, 0, False),
        (301, 0, True),
        (10, 1, False),  # far tier halved: the zone copes, no split
        (10, OVERLOAD_SPLIT_LEVEL, True),
        (10, 3, True),
        (400, 3, True),
    ],
)
def test_over_split_mark_is_players_or_sustained_overload(
    players: int, level: int, over: bool
) -> None:
    assert over_split_mark(hot("a", players, overload_level=level), POLICY) is over


def test_an_overloaded_zone_splits_after_the_window_whatever_its_players() -> None:
    world = spec()
    zone = ready(
        "earth-0", WORLD, 120, overload_level=2, sample_x=(100.0, 300.0), sample_z=(0.0, 0.0)
    )
    first = plan(world, [zone], now=100, memory=Memory(next_id=1))
    assert first.actions == () and first.memory.over_since == {"earth-0": 100}
    calm = plan(world, [replace(zone, overload_level=1)], now=105, memory=first.memory)
    assert calm.memory.over_since == {}  # the ladder came down: the window restarts
    again = plan(world, [zone], now=106, memory=calm.memory)
    due = plan(world, [zone], now=116, memory=again.memory)
    assert kinds(due.actions) == ["Rebound", "CreateZone"]
    assert "overload level 2 for 10s" in due.actions[1].reason
