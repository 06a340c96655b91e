"""Instance zones (tessera.operator.planner.instances): creation within the cap,
the end rules, and a property over any interleaving of requests, joins and leaves."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.common.store import instance_zone
from tessera.operator.planner.actions import CreateZone, Delete, Drain, advance
from tessera.operator.planner.instances import end_reason
from tessera.operator.planner.model import (
    Desired,
    InstancePolicy,
    InstanceRequest,
    Memory,
    Phase,
    WorldSpec,
    ZoneView,
)
from tessera.operator.planner.rules import plan
from tessera.wire.geometry import Rect

from .conftest import WORLD, kinds, ready, spec

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
    request = replace(create(MATCH), mode="arena")
    result = plan(inst_policy(), OPEN, now=5, requests=[request])
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
            mode="arena",
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


END = InstancePolicy(
    max_instances=2, start_timeout_s=100, idle_s=30, end_grace_s=10, max_lifetime_s=1000
)


JOINED = {"joined": {"inst-m1": 1.0}}


@pytest.mark.parametrize(
    ("zone", "timers", "now", "why"),
    [
        (instance("m1", created=0), {}, 99, None),
        (instance("m1", created=0), {}, 100, "no player joined within 100s"),
        (instance("m1", created=0), {"joined": {"inst-m1": 50}}, 500, None),
        (instance("m1", created=None), {}, 10**6, None),  # type: ignore[arg-type]
        (instance("m1", created=0), JOINED, 1000, "1000s old, maxLifetimeSeconds=1000"),
        (instance("m1"), {**JOINED, "idle_since": {"inst-m1": 50}}, 79, None),
        (instance("m1"), {**JOINED, "idle_since": {"inst-m1": 50}}, 80, "no players for 30s"),
        (instance("m1"), {**JOINED, "end_at": {"inst-m1": 50}}, 59, None),
        (
            instance("m1"),
            {**JOINED, "end_at": {"inst-m1": 50}},
            60,
            "match m1 was reported 10s ago",
        ),
        (instance("m1", deleting=True), {}, 1, "the ZoneServer is being deleted"),
        # The first rule that holds gives the reason.
        (
            instance("m1", deleting=True),
            {"end_at": {"inst-m1": 0}, "idle_since": {"inst-m1": 0}},
            5000,
            "the ZoneServer is being deleted",
        ),
        (
            instance("m1", created=0),
            {**JOINED, "end_at": {"inst-m1": 0}, "idle_since": {"inst-m1": 0}},
            5000,
            "match m1 was reported 5000s ago",
        ),
    ],
)
def test_end_reason(
    zone: ZoneView, timers: dict[str, dict[str, float]], now: float, why: str | None
) -> None:
    assert (
        end_reason(
            zone,
            policy=END,
            joined=timers.get("joined", {}),
            idle_since=timers.get("idle_since", {}),
            end_at=timers.get("end_at", {}),
            now=now,
        )
        == why
    )
