"""Drains, the initial layout, deletions, a Static world and the standby pool
(tessera.operator.planner.layout), through plan()."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.operator.planner.actions import AssignStandby, CreateZone, Delete, Drain
from tessera.operator.planner.draft import zone_name
from tessera.operator.planner.geometry import split_rect
from tessera.operator.planner.layout import FORCE_MARGIN_S
from tessera.operator.planner.model import Desired, Memory, Phase, WorldSpec, ZoneView
from tessera.operator.planner.rules import plan
from tessera.wire.geometry import Rect

from .conftest import WORLD, kinds, ready, siblings, spec


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


def _layout_by_sorting(world: WorldSpec, want: int) -> list[CreateZone]:
    """The initial layout as first written, the reference: before each cut, every
    zone sorted (largest first, then by name) and the first one that can be cut."""
    policy = world.policy
    names = iter(zone_name(world.name, i) for i in itertools.count())
    root = next(names)
    layout: dict[str, tuple[Rect, str | None, int, int]] = {root: (world.bounds, None, 0, 0)}
    while len(layout) < want:
        for name, (rect, parent, depth, born) in sorted(
            layout.items(), key=lambda item: (-item[1][0].area, item[0])
        ):
            halves = split_rect(rect, policy.min_zone_size, (), ())
            if halves is not None and depth < policy.max_depth:
                child = next(names)
                layout[name] = (halves[0], parent, depth + 1, born)
                layout[child] = (halves[1], name, depth + 1, depth + 1)
                break
        else:
            break
    return [
        CreateZone(
            name, rect, parent, depth, born, "Initial", f"initial layout: {name} at {rect.text()}"
        )
        for name, (rect, parent, depth, born) in layout.items()
    ]


@settings(max_examples=80, deadline=None)
@given(
    width=st.sampled_from([100, 250, 1024, 3000, 20_000]),
    height=st.sampled_from([100, 333, 1024, 20_000]),
    min_zones=st.integers(1, 300),
    min_zone_size=st.sampled_from([16, 64, 100, 333]),
    max_depth=st.integers(0, 16),
)
def test_initial_layout_matches_the_sorting_reference(
    width: int, height: int, min_zones: int, min_zone_size: int, max_depth: int
) -> None:
    world = replace(
        spec(min_zones=min_zones, max_zones=300, min_zone_size=min_zone_size, max_depth=max_depth),
        bounds=Rect(-width / 2, 0, width / 2, height),
    )
    expected = _layout_by_sorting(world, min_zones)
    result = plan(world, [], now=0)
    assert list(result.actions) == expected
    assert any("initial zones fit" in n for n in result.notes) == (len(expected) < min_zones)


def test_drained_zone_is_deleted_and_timeout_forces_it() -> None:
    world = spec()
    draining = ZoneView(
        "earth-1", Desired.DRAINING, Rect(512, 0, 1024, 1024), phase=Phase.DRAINING, players=5
    )
    zones = [ready("earth-0", WORLD), draining]
    m = plan(world, zones, now=0, memory=Memory(next_id=2)).memory
    assert m.drain_since == {"earth-1": 0}
    # The zone forces its own handoffs at the timeout; it is removed a margin later.
    assert plan(world, zones, now=60 + FORCE_MARGIN_S - 1, memory=m).actions == ()
    forced = plan(world, zones, now=60 + FORCE_MARGIN_S, memory=m).actions
    assert forced == (Delete("earth-1", True, "DrainTimeout", forced[0].reason),)
    done = plan(world, [zones[0], replace(draining, phase=Phase.DRAINED)], now=1, memory=m)
    assert kinds(done.actions) == ["Delete"] and not done.actions[0].forced  # type: ignore[union-attr]


def test_a_draining_zone_whose_heartbeat_stopped_waits_for_the_timeout() -> None:
    # Its heartbeat may only be late (a loaded machine): deleting it at once would
    # stop it with the players it is still handing away.
    world = spec()
    failed = ZoneView("earth-1", Desired.DRAINING, Rect(512, 0, 1024, 1024), phase=Phase.FAILED)
    zones = [ready("earth-0", WORLD), failed]
    m = plan(world, zones, now=0, memory=Memory(next_id=2)).memory
    assert plan(world, zones, now=60 + FORCE_MARGIN_S - 1, memory=m).actions == ()
    (forced,) = plan(world, zones, now=60 + FORCE_MARGIN_S, memory=m).actions
    assert forced == Delete("earth-1", True, "DrainTimeout", forced.reason)
    never = [zones[0], replace(failed, phase=Phase.PENDING)]
    (gone,) = plan(world, never, now=1, memory=m).actions
    assert gone == Delete("earth-1", False, "Drained", "earth-1 pending, nothing to drain")


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


def test_static_layout_only_drains_deleted_zones() -> None:
    world = replace(spec(), layout="Static")
    zones = [
        ready("a", Rect(0, 0, 512, 1024), 5000),
        ready("b", Rect(512, 0, 1024, 1024), deleting=True),
    ]
    result = plan(world, zones, now=0)
    assert result.actions == (Drain("b", None, "Delete", "b is being deleted"),)
