"""The zone's territory: newer zone maps only, the map version it knows, nearby zones,
and which bounds, map versions and drain targets the operator may command."""

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


def test_bounds_must_be_sane_and_versions_only_the_published_ones() -> None:
    here = Territory("west", WORLD, WEST)
    here.adopt(topo(4))
    assert here.bounds_refusal(WEST, 4) is None
    assert here.bounds_refusal(Rect(-200, -200, 200, 200), 4) is None  # the whole world
    for bad in (
        Rect(0, -200, 0, 200),  # empty
        Rect(10, -200, 0, 200),  # inverted
        Rect(-300, -200, 0, 200),  # outside the world
        Rect(float("nan"), -200, 0, 200),
        Rect(-200, -200, float("inf"), 200),
    ):
        assert here.bounds_refusal(bad, 4) == (
            "bounds",
            "BAD_BOUNDS",
            "bounds must be a non-empty rectangle inside the world bounds",
        )
    field, reason, _message = here.bounds_refusal(WEST, 3) or ("", "", "")
    assert (field, reason) == ("map_version", "STALE_MAP_VERSION")
    # A version the operator never published (2^64-1) is refused, so it cannot
    # lock every real version out afterwards.
    field, reason, message = here.bounds_refusal(WEST, 2**64 - 1) or ("", "", "")
    assert (field, reason) == ("map_version", "UNPUBLISHED_MAP_VERSION")
    assert "(4)" in message
    assert Territory("west", WORLD, None).bounds_refusal(WEST, 1) is not None  # no map yet
    assert Territory("west", WORLD, None).bounds_refusal(WEST, 0) is None


def test_a_drain_target_must_be_a_live_zone_of_this_world() -> None:
    here = Territory("west", WORLD, WEST)
    assert here.drain_refusal("", "", world="w", alive=False) is None  # by position
    assert here.drain_refusal("w", "east", world="w", alive=True) == (
        "UNKNOWN_TARGET",
        "the drain target is not an active zone of the world",
    )  # no map held, and not active by its heartbeat
    # A zone outside the map whose heartbeat says ACTIVE may take a drain.
    assert here.drain_refusal("w", "east", world="w", alive=True, active=True) is None
    here.adopt(topo(1))
    assert here.drain_refusal("w", "east", world="w", alive=True) is None
    assert here.drain_refusal("", "east", world="w", alive=True) is None
    refused = {
        ("w", "nowhere", True): "UNKNOWN_TARGET",
        ("w", "east", False): "UNKNOWN_TARGET",  # in the map, but its process is gone
        ("w", "west", True): "BAD_TARGET",
        ("other", "east", True): "BAD_TARGET",
    }
    for (world, target, alive), reason in refused.items():
        refusal = here.drain_refusal(world, target, world="w", alive=alive)
        assert refusal is not None and refusal[0] == reason, (world, target, alive)
