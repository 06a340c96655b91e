"""Zone map topology: owners, neighbours, movement area, departures."""

from __future__ import annotations

import numpy as np

from tessera.wire.geometry import Rect
from tessera.zone import topology
from tessera.zone.topology import Topology, ZoneArea


def topo(version: int, zones: dict[str, Rect]) -> Topology:
    areas = tuple(ZoneArea(name, "", r) for name, r in zones.items())
    return Topology(version, Rect(-100, -100, 100, 100), areas)


QUADS = {
    "sw": Rect(-100, -100, 0, 0),
    "se": Rect(0, -100, 100, 0),
    "nw": Rect(-100, 0, 0, 100),
    "ne": Rect(0, 0, 100, 100),
}


def test_owner_is_half_open_and_neighbours_include_corners() -> None:
    t = topo(3, QUADS)
    assert t.version == 3
    assert t.owner(0.0, 0.0) == "ne"
    assert t.owner(-0.001, -0.001) == "sw"
    assert t.owner(100.0, 0.0) is None
    assert {a.zone for a in t.neighbours("sw", 1.0)} == {"se", "nw", "ne"}
    assert t.neighbours("nowhere", 1.0) == []
    owners = t.owners(np.array([[5.0, 5.0], [-5.0, 5.0], [500.0, 0.0]]), exclude="ne")
    assert owners == [None, "nw", None]


def test_movement_area_grows_only_towards_neighbours() -> None:
    t = topo(1, QUADS)
    assert topology.movement_area(QUADS["sw"], t, "sw", 15.0) == Rect(-100, -100, 15, 15)
    lonely = topo(1, {"sw": QUADS["sw"]})
    assert topology.movement_area(QUADS["sw"], lonely, "sw", 15.0) == QUADS["sw"]
    assert topology.movement_area(QUADS["sw"], None, "sw", 15.0) == QUADS["sw"]


def test_departures_respect_hysteresis() -> None:
    t = topo(1, QUADS)
    xz = np.array([[-50.0, -50.0], [3.0, -50.0], [6.0, -50.0], [6.0, 6.0], [-50.0, 5.5]])
    out = topology.departures(xz, QUADS["sw"], t, zone="sw", hysteresis=5.0)
    assert out == [(2, "se"), (3, "ne"), (4, "nw")]
    strict = topology.departures(xz, QUADS["sw"], t, zone="sw", hysteresis=0.0)
    assert (1, "se") in strict and len(strict) == 4


def test_drain_sends_everything_to_owner_target_or_nearest() -> None:
    t = topo(2, QUADS)
    xz = np.array([[-50.0, -50.0], [10.0, -10.0]])
    # (-50, -50) is owned by nobody else: the nearest neighbour (se and nw tie; map order).
    drained = topology.departures(xz, QUADS["sw"], t, zone="sw", hysteresis=5, everything=True)
    assert drained == [(0, "se"), (1, "se")]
    named = topology.departures(
        xz, QUADS["sw"], t, zone="sw", hysteresis=5, everything=True, target="ne"
    )
    assert named == [(0, "ne"), (1, "ne")]
    assert topology.departures(np.zeros((0, 2)), QUADS["sw"], t, zone="sw", hysteresis=5) == []
