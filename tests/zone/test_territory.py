"""The zone's territory: newer zone maps only, the map version it knows, nearby zones."""

from __future__ import annotations

from tessera.wire.geometry import Rect
from tessera.zone.territory import Territory
from tessera.zone.topology import Topology, ZoneArea

WORLD = Rect(-200, -200, 200, 200)
WEST, EAST, FAR = Rect(-200, -200, 0, 200), Rect(0, -200, 100, 200), Rect(150, -200, 200, 200)


def topo(version: int) -> Topology:
    areas = (ZoneArea("west", "", WEST), ZoneArea("east", "", EAST), ZoneArea("far", "", FAR))
    return Topology(version, WORLD, areas)


def test_only_newer_maps_are_adopted_and_the_version_is_the_newest_seen() -> None:
    here = Territory("west", WORLD, WEST)
    assert here.map_version == 0 and here.nearby(10.0) == []
    assert here.adopt(topo(4)) and not here.adopt(topo(4)) and not here.adopt(topo(3))
    assert here.map_version == 4
    here.bounds_version = 6  # SetBounds ahead of the zone map
    assert here.map_version == 6
    assert here.adopt(topo(7)) and here.map_version == 7


def test_nearby_zones_within_a_margin() -> None:
    here = Territory("west", WORLD, WEST)
    here.adopt(topo(1))
    assert here.nearby(10.0) == [("east", EAST)]
    assert {z for z, _r in here.nearby(200.0)} == {"east", "far"}
