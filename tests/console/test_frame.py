"""Frame aggregation and deltas: phases, handoff rates, the density grid,
borders, the frame's sections and delta/apply round trips."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tessera.console import frame
from tessera.console.frame import MatchRow, Rate, RelayRow, World, ZoneRow
from tessera.wire.geometry import Rect

WORLD = Rect(0, 0, 1000, 500)


def zone(name: str, **kw: Any) -> ZoneRow:
    fields: dict[str, Any] = {
        "state": "ACTIVE",
        "bounds": WORLD,
        "players": 0,
        "tick_p50_ms": 1.0,
        "tick_p99_ms": 2.0,
        "overload_level": 0,
        "handoffs_received": 0,
        "drain_remaining": 0,
        "updated_at_ms": 1000.0,
    }
    fields.update(kw)
    return ZoneRow(name=name, **fields)


def world(zones: list[ZoneRow], **kw: Any) -> World:
    fields: dict[str, Any] = {
        "name": "earth",
        "bounds": WORLD,
        "map_version": 3,
        "map_zones": {z.name: z.bounds for z in zones if z.bounds and not z.instance},
        "zones": zones,
        "events": [],
        "relays": [],
        "matches": [],
        "now_ms": 1000.0,
    }
    fields.update(kw)
    return World(**fields)


def test_phase() -> None:
    assert frame.phase(zone("a")) == "active"
    assert frame.phase(zone("a", state="STARTING")) == "starting"
    assert frame.phase(zone("a", state="STANDBY")) == "standby"
    assert frame.phase(zone("a", state="DRAINING")) == "draining"
    assert frame.phase(zone("a", state="DRAINED")) == "draining"
    assert frame.phase(zone("a", instance="m1")) == "instance"


def test_handoff_rates_from_successive_heartbeats() -> None:
    first = frame.handoff_rates([zone("a", handoffs_received=10, updated_at_ms=1000)], {})
    assert first == {"a": Rate(10, 1000, 0.0)}
    second = frame.handoff_rates([zone("a", handoffs_received=30, updated_at_ms=3000)], first)
    assert second["a"].per_s == 10.0
    # The same heartbeat read again keeps its rate; a restarted zone starts over.
    again = [zone("a", handoffs_received=30, updated_at_ms=3000)]
    assert frame.handoff_rates(again, second) == second
    restarted = frame.handoff_rates([zone("a", handoffs_received=2, updated_at_ms=4000)], second)
    assert restarted == {"a": Rate(2, 4000, 0.0)}
    assert frame.handoff_rates([], second) == {}


def test_grid_shape_keeps_cells_square() -> None:
    assert frame.grid_shape(WORLD, 10) == (10, 5, 100.0)
    assert frame.grid_shape(Rect(0, 0, 100, 250), 10) == (4, 10, 25.0)


def test_density_scales_samples_to_the_zones_players() -> None:
    xs = np.array([50, 50, 950], np.float32)
    zs = np.array([50, 60, 450], np.float32)
    # 3 samples stand for 300 players: 100 each.
    cells = frame.density([zone("a", players=300, xs=xs, zs=zs)], WORLD, 10)
    assert cells == {"0": 200, str(4 * 10 + 9): 100}
    assert sum(cells.values()) == 300


def test_density_clips_to_the_grid_and_skips_instances_and_empty_zones() -> None:
    outside = zone("a", players=1, xs=np.array([-5], np.float32), zs=np.array([900], np.float32))
    inst = zone("i", players=5, instance="m", xs=np.ones(5, np.float32), zs=np.ones(5, np.float32))
    assert frame.density([outside, inst, zone("e", players=4)], WORLD, 10) == {"40": 1}


def test_borders_are_shared_edges() -> None:
    rects = {
        "a": Rect(0, 0, 500, 500),
        "b": Rect(500, 0, 1000, 250),
        "c": Rect(500, 250, 1000, 500),
        "d": Rect(2000, 0, 3000, 500),
    }
    assert frame.borders(rects) == {
        "a|b": [500, 0, 500, 250],
        "a|c": [500, 250, 500, 500],
        "b|c": [500, 250, 1000, 250],
    }
    assert frame.borders({"a": Rect(0, 0, 1, 1), "b": Rect(1, 1, 2, 2)}) == {}  # corners only


def test_build_collects_every_section() -> None:
    zones = [
        zone("a", bounds=Rect(0, 0, 500, 500), players=3, tick_p99_ms=12.345),
        zone("b", bounds=Rect(500, 0, 1000, 500), updated_at_ms=0.0),
        zone("standby", bounds=None, state="STANDBY"),
        zone("inst-m1", bounds=Rect(0, 0, 100, 100), instance="m1", players=2),
    ]
    w = world(
        zones,
        events=[("5-0", {"decision": "Split", "zone": "b"})],
        relays=[RelayRow("127.0.0.1:1", "relay-0", 7, True)],
        matches=[MatchRow("m1", "inst-m1", "create", 4.0), MatchRow("m2", "inst-m2", "end", 5.0)],
        now_ms=6000.0,
    )
    f = frame.build(w, {"a": Rate(1, 1, 2.25)}, cells=10, aura_m=40.0)
    assert set(f) == set(frame.SECTIONS)
    assert f["meta"] == {
        "world": "earth",
        "bounds": [0, 0, 1000, 500],
        "map_version": 3,
        "grid": [10, 5, 100.0],
        "aura_m": 40.0,
        "players": 5,
        "zones": 2,
    }
    assert f["zones"]["a"]["p99_ms"] == 12.3 and f["zones"]["a"]["handoffs_s"] == 2.2
    assert f["zones"]["b"]["stale"] and not f["zones"]["a"]["stale"]
    assert f["zones"]["inst-m1"]["phase"] == "instance"
    assert f["borders"] == {"a|b": [500, 0, 500, 500]}
    assert f["events"] == {"5-0": {"decision": "Split", "zone": "b"}}
    assert f["relays"] == {"127.0.0.1:1": {"id": "relay-0", "sessions": 7, "up": True}}
    assert f["matches"]["m1"]["players"] == 2 and f["matches"]["m2"]["players"] is None
    json.dumps(f)  # JSON-ready


def test_build_without_a_map_covers_the_zones() -> None:
    f = frame.build(
        world([zone("a", bounds=Rect(10, 20, 30, 40))], bounds=None), {}, cells=4, aura_m=0
    )
    assert f["meta"]["bounds"] == [10, 20, 30, 40]
    empty = frame.build(world([], bounds=None), {}, cells=4, aura_m=0)
    assert empty["meta"]["bounds"] is None and empty["density"] == {}


def test_delta_sends_only_what_changed() -> None:
    before: frame.Frame = {
        "zones": {"a": {"players": 1}, "b": {"players": 2}},
        "meta": {"world": "earth"},
    }
    after: frame.Frame = {
        "zones": {"a": {"players": 1}, "c": {"players": 3}},
        "meta": {"world": "earth"},
    }
    assert frame.delta(before, after) == {"zones": {"set": {"c": {"players": 3}}, "del": ["b"]}}
    assert frame.delta(after, after) == {}
    full = frame.delta({}, after)
    assert full["meta"] == {"set": {"world": "earth"}, "del": []}


values = st.dictionaries(
    st.text("abc", min_size=1, max_size=2), st.one_of(st.integers(0, 3), st.none()), max_size=5
)
frames = st.fixed_dictionaries({name: values for name in frame.SECTIONS})


@given(frames, frames)
def test_apply_of_delta_gives_the_new_frame(before: frame.Frame, after: frame.Frame) -> None:
    assert frame.apply(before, frame.delta(before, after)) == after
