"""plan() as a whole (tessera.operator.planner.rules): the safety rule, determinism,
a crowd end to end, and the partition property over any sequence of plans."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.operator.planner.model import Memory
from tessera.operator.planner.rules import plan
from tessera.wire.geometry import Rect

from .conftest import WORLD, Sim, crowd, crowds, policies, population, ready, spec


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
