"""Zone map topology: owners, neighbours, movement area, departures."""

from __future__ import annotations

import numpy as np

from tessera.v1 import common_pb2, zone_pb2
from tessera.wire.geometry import Rect
from tessera.zone import topology
from tessera.zone.topology import Topology


def zmap(version: int, zones: dict[str, Rect]) -> zone_pb2.ZoneMap:
    m = zone_pb2.ZoneMap(
        world="w",
        version=version,
        world_bounds=common_pb2.Bounds(min_x=-100, min_z=-100, max_x=100, max_z=100),
    )
    for name, r in zones.items():
        m.zones.append(
            zone_pb2.ZoneMapEntry(
                zone=name,
                bounds=common_pb2.Bounds(
                    min_x=r.min_x, min_z=r.min_z, max_x=r.max_x, max_z=r.max_z
                ),
            )
        )
    return m


QUADS = {
    "sw": Rect(-100, -100, 0, 0),
    "se": Rect(0, -100, 100, 0),
    "nw": Rect(-100, 0, 0, 100),
    "ne": Rect(0, 0, 100, 100),
}


def test_owner_is_half_open_and_neighbours_include_corners() -> None:
    t = Topology.from_map(zmap(3, QUADS))
    assert t.version == 3
    assert t.owner(0.0, 0.0) == "ne"
    assert t.owner(-0.001, -0.001) == "sw"
    assert t.owner(100.0, 0.0) is None
    assert {a.zone for a in t.neighbours("sw", 1.0)} == {"se", "nw", "ne"}
    assert t.neighbours("nowhere", 1.0) == []
    owners = t.owners(np.array([[5.0, 5.0], [-5.0, 5.0], [500.0, 0.0]]), exclude="ne")
    assert owners == [None, "nw", None]


def test_empty_rectangles_and_draining_zones_own_nothing() -> None:
    m = zmap(1, {"a": Rect(0, 0, 0, 10), "b": Rect(-100, -100, 100, 100), "c": QUADS["sw"]})
    m.zones[2].state = zone_pb2.ZONE_STATE_DRAINING
    t = Topology.from_map(m)
    assert [a.zone for a in t.zones] == ["b"]
    assert t.owner(-50.0, -50.0) == "b"


def test_movement_area_grows_only_towards_neighbours() -> None:
    t = Topology.from_map(zmap(1, QUADS))
    assert topology.movement_area(QUADS["sw"], t, "sw", 15.0) == Rect(-100, -100, 15, 15)
    lonely = Topology.from_map(zmap(1, {"sw": QUADS["sw"]}))
    assert topology.movement_area(QUADS["sw"], lonely, "sw", 15.0) == QUADS["sw"]
    assert topology.movement_area(QUADS["sw"], None, "sw", 15.0) == QUADS["sw"]


def test_departures_respect_hysteresis() -> None:
    t = Topology.from_map(zmap(1, QUADS))
    xz = np.array([[-50.0, -50.0], [3.0, -50.0], [6.0, -50.0], [6.0, 6.0], [-50.0, 5.5]])
    out = topology.departures(xz, QUADS["sw"], t, zone="sw", hysteresis=5.0)
    assert out == [(2, "se"), (3, "ne"), (4, "nw")]
    strict = topology.departures(xz, QUADS["sw"], t, zone="sw", hysteresis=0.0)
    assert (1, "se") in strict and len(strict) == 4


def test_drain_sends_everything_to_owner_target_or_nearest() -> None:
    t = Topology.from_map(zmap(2, QUADS))
    xz = np.array([[-50.0, -50.0], [10.0, -10.0]])
    # (-50, -50) is owned by nobody else: the nearest neighbour (se and nw tie; map order).
    drained = topology.departures(xz, QUADS["sw"], t, zone="sw", hysteresis=5, everything=True)
    assert drained == [(0, "se"), (1, "se")]
    named = topology.departures(
        xz, QUADS["sw"], t, zone="sw", hysteresis=5, everything=True, target="ne"
    )
    assert named == [(0, "ne"), (1, "ne")]
    assert topology.departures(np.zeros((0, 2)), QUADS["sw"], t, zone="sw", hysteresis=5) == []
