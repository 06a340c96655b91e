"""Replacing zones by handoff (tessera.operator.planner.replace): rolling
template updates and zones on draining nodes, through plan(), with the pure
helpers table-tested."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tessera.operator.planner.actions import (
    Adopt,
    AssignStandby,
    CreateZone,
    Delete,
    Drain,
    advance,
)
from tessera.operator.planner.geometry import partition_errors, sibling_pairs
from tessera.operator.planner.model import Desired, Phase, Rollout, WorldSpec, ZoneView
from tessera.operator.planner.replace import due, outdated, surge
from tessera.operator.planner.rules import plan
from tessera.wire.geometry import Rect

from .conftest import WORLD, kinds, observe, ready, spec

OLD, NEW = "rev-old", "rev-new"


def world(**rollout: Any) -> WorldSpec:
    return replace(spec(), revision=NEW, rollout=Rollout(**rollout))


def standby(name: str, revision: str = NEW, *, evicting: bool = False) -> ZoneView:
    return ZoneView(name, Desired.STANDBY, phase=Phase.READY, revision=revision, evicting=evicting)


def two_zones(revision: str = OLD) -> list[ZoneView]:
    return [
        ready("earth-0", Rect(0, 0, 512, 1024), 50, depth=1, revision=revision),
        ready(
            "earth-1",
            Rect(512, 0, 1024, 1024),
            50,
            parent="earth-0",
            depth=1,
            split_depth=1,
            revision=revision,
        ),
    ]


@pytest.mark.parametrize(
    ("zone", "paused", "expected"),
    [
        (ready("a", WORLD, revision=NEW), False, False),
        (ready("a", WORLD, revision=OLD), False, True),
        (ready("a", WORLD, revision=OLD), True, False),
        (ready("a", WORLD, revision=NEW, evicting=True), True, True),
        (replace(ready("a", WORLD, revision=OLD), phase=Phase.STARTING), False, False),
        (replace(ready("a", WORLD, revision=OLD), deleting=True), False, False),
    ],
)
def test_due(zone: ZoneView, paused: bool, expected: bool) -> None:
    assert bool(due([zone], world(paused=paused))) is expected


@pytest.mark.parametrize("phase", [Phase.STARTING, Phase.FAILED, Phase.PENDING])
def test_a_zone_whose_heartbeat_lapsed_is_outdated_but_not_due(phase: Phase) -> None:
    zone = replace(ready("a", WORLD, revision=OLD), phase=phase)
    assert outdated([zone], world()) == [zone] and due([zone], world()) == []


@pytest.mark.parametrize("phase", [Phase.STARTING, Phase.FAILED])
def test_the_rollouts_standby_is_kept_while_the_zones_heartbeats_lapse(phase: Phase) -> None:
    """On a loaded node every zone can miss its heartbeat in one pass: the
    standby started for the rollout stays (deleting it meant starting it again,
    over and over, and the rollout never finished)."""
    starting = replace(standby("earth-2"), phase=Phase.STARTING)
    lapsed = [replace(z, phase=phase) for z in two_zones()]
    assert plan(world(), [*lapsed, starting], now=5).actions == ()
    ready_again = plan(world(), [*two_zones(), standby("earth-2")], now=6)
    assert ("earth-0", "earth-2") in [
        (a.zone, a.target) for a in ready_again.actions if isinstance(a, Drain)
    ]


def test_due_puts_zones_on_draining_nodes_first() -> None:
    zones = [ready("a", WORLD, revision=OLD), ready("b", WORLD, revision=NEW, evicting=True)]
    assert [z.name for z in due(zones, world())] == ["b", "a"]


@pytest.mark.parametrize(
    ("max_surge", "waiting", "draining", "expected"),
    [(1, 3, 0, 1), (1, 3, 1, 0), (2, 3, 1, 1), (3, 1, 0, 1), (2, 0, 0, 0), (1, 2, 2, 0)],
)
def test_surge(max_surge: int, waiting: int, draining: int, expected: int) -> None:
    w = world(max_surge=max_surge)
    assert surge(w, waiting=waiting, draining=draining) == expected


def test_nothing_happens_when_every_zone_is_up_to_date() -> None:
    result = plan(world(), two_zones(NEW), now=0)
    assert result.actions == ()


def test_an_outdated_world_first_starts_one_surge_standby() -> None:
    result = plan(world(), two_zones(), now=0)
    assert kinds(result.actions) == ["CreateZone"]
    (create,) = result.actions
    assert isinstance(create, CreateZone) and create.bounds is None


def test_a_ready_standby_takes_the_whole_rectangle_and_the_old_zone_drains_into_it() -> None:
    zones = [*two_zones(), standby("earth-2")]
    result = plan(world(), zones, now=5)
    assign = next(a for a in result.actions if isinstance(a, AssignStandby))
    drain = next(a for a in result.actions if isinstance(a, Drain))
    assert (assign.zone, assign.bounds, assign.depth, assign.split_depth) == (
        "earth-2",
        Rect(0, 0, 512, 1024),
        1,
        0,
    )
    assert (drain.zone, drain.target, drain.decision) == ("earth-0", "earth-2", "Rollout")
    # earth-1 was split off earth-0: earth-2 is its parent now, so the pair can merge.
    assert [(a.zone, a.parent) for a in result.actions if isinstance(a, Adopt)] == [
        ("earth-1", "earth-2")
    ]
    assert not any(isinstance(a, CreateZone) for a in result.actions)  # maxSurge 1 is used
    after = advance(zones, result.actions, NEW)
    active = [z for z in after if z.desired == Desired.ACTIVE]
    assert partition_errors(WORLD, [z.bounds for z in active if z.bounds]) == []
    assert result.memory.drain_since == {"earth-0": 5}


def test_one_zone_at_a_time_until_the_drain_is_over() -> None:
    zones = [
        replace(
            ready("earth-0", Rect(0, 0, 512, 1024), revision=OLD),
            desired=Desired.DRAINING,
            phase=Phase.DRAINING,
        ),
        ready("earth-1", Rect(512, 0, 1024, 1024), revision=OLD),
        ready("earth-2", Rect(0, 0, 512, 1024), revision=NEW),
        standby("earth-3"),
    ]
    result = plan(world(), zones, now=5)
    assert not any(isinstance(a, Drain) for a in result.actions)
    assert any("wait for replacement" in n for n in result.notes)
    wider = plan(world(max_unavailable=2), zones, now=5)
    assert [(a.zone, a.target) for a in wider.actions if isinstance(a, Drain)] == [
        ("earth-1", "earth-3")
    ]


def test_a_paused_rollout_waits_but_a_draining_node_does_not() -> None:
    zones = [*two_zones(), standby("earth-2")]
    paused = plan(world(paused=True), zones, now=0)
    assert not any(isinstance(a, Drain) for a in paused.actions)
    zones[1] = replace(zones[1], evicting=True)
    moved = plan(world(paused=True), zones, now=0)
    drains = [a for a in moved.actions if isinstance(a, Drain)]
    assert [(a.zone, a.target, a.decision) for a in drains] == [("earth-1", "earth-2", "NodeDrain")]


def test_outdated_and_evicted_standbys_are_removed_and_the_pool_refilled() -> None:
    w = replace(world(), standby=2)
    zones = [
        ready("earth-0", WORLD, revision=NEW),
        standby("earth-1", revision=OLD),
        standby("earth-2", evicting=True),
    ]
    result = plan(w, zones, now=0)
    deletes = {a.zone: a.decision for a in result.actions if isinstance(a, Delete)}
    assert deletes == {"earth-1": "Rollout", "earth-2": "NodeDrain"}
    assert kinds(result.actions).count("CreateZone") == 2


def test_a_standby_on_an_old_template_is_never_given_a_zone() -> None:
    zones = [*two_zones(), standby("earth-2", revision=OLD)]
    result = plan(world(), zones, now=0)
    assert not any(isinstance(a, AssignStandby) for a in result.actions)


def test_a_rolling_update_replaces_every_zone_one_at_a_time() -> None:
    """Zones start Ready one step after creation and report Drained two steps after
    the drain order; each step at most one zone drains and the world stays partitioned."""
    w = world()
    zones = [
        ready("earth-0", Rect(0, 0, 512, 512), revision=OLD, depth=2),
        ready(
            "earth-1",
            Rect(512, 0, 1024, 512),
            revision=OLD,
            parent="earth-0",
            depth=2,
            split_depth=1,
        ),
        ready(
            "earth-2",
            Rect(0, 512, 512, 1024),
            revision=OLD,
            parent="earth-0",
            depth=2,
            split_depth=2,
        ),
        ready(
            "earth-3",
            Rect(512, 512, 1024, 1024),
            revision=OLD,
            parent="earth-1",
            depth=2,
            split_depth=2,
        ),
    ]
    mergeable = len(sibling_pairs({z.name: z for z in zones}))
    memory = None
    draining_for: dict[str, int] = {}
    for step in range(60):
        result = plan(w, zones, now=float(step), memory=memory)
        memory = result.memory
        zones = advance(zones, result.actions, NEW)
        for z in zones:
            if z.desired == Desired.DRAINING:
                draining_for[z.name] = draining_for.get(z.name, 0) + 1
        zones = [
            replace(
                z,
                phase=Phase.DRAINED
                if z.desired == Desired.DRAINING and draining_for[z.name] >= 2
                else Phase.DRAINING
                if z.desired == Desired.DRAINING
                else Phase.READY,
            )
            for z in observe(zones, [])
        ]
        assert sum(1 for z in zones if z.desired == Desired.DRAINING) <= 1
        active = [z.bounds for z in zones if z.desired == Desired.ACTIVE and z.bounds]
        assert partition_errors(WORLD, active) == []
        if all(z.revision == NEW for z in zones) and not any(
            z.desired != Desired.ACTIVE for z in zones
        ):
            break
    else:
        pytest.fail(f"rollout did not finish: {zones}")
    assert len(zones) == 4 and {z.name for z in zones}.isdisjoint({f"earth-{i}" for i in range(4)})
    pairs = {(z.name, z.parent) for z in zones}
    assert sum(1 for _, parent in pairs if parent in {z.name for z in zones}) == 3
    # The new zones inherited the lineage: the same pairs can merge as before.
    assert mergeable > 0 and len(sibling_pairs({z.name: z for z in zones})) == mergeable
