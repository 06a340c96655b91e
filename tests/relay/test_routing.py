"""Route parsing, the route cache and zone choice."""

from __future__ import annotations

import pytest

from tessera.relay.routing import (
    OwnLeaves,
    Route,
    RouteCache,
    parse_route,
    parse_route_change,
    pick_zone,
    zone_addresses,
)
from tessera.v1 import common_pb2, zone_pb2

ACTIVE = zone_pb2.ZONE_STATE_ACTIVE
DRAINING = zone_pb2.ZONE_STATE_DRAINING


def test_parse() -> None:
    assert parse_route(b"zone-a|7") == Route("zone-a", 7)
    assert parse_route_change(b"alice|zone-b|8") == ("alice", Route("zone-b", 8))
    assert parse_route_change("alice||0") == ("alice", None)
    for bad in ("zone", "|3", "zone|x"):
        with pytest.raises(ValueError):
            parse_route(bad)
    with pytest.raises(ValueError):
        parse_route_change("alice")


def test_cache_newest_epoch_wins() -> None:
    cache = RouteCache()
    assert cache.update("p", Route("a", 2))
    assert not cache.update("p", Route("a", 2))
    assert not cache.update("p", Route("b", 1))
    assert cache.update("p", Route("b", 3))
    assert cache.get("p") == Route("b", 3)
    cache.forget("p")
    assert cache.get("p") is None


def test_own_leaves_are_claimed_once_and_lapse() -> None:
    own = OwnLeaves(ttl_s=5.0)
    assert not own.claim("p", 0.0)  # nothing expected: another connection's removal
    own.expect("p", 0.0)
    own.expect("p", 1.0)
    assert own.claim("p", 2.0) and own.claim("p", 2.0)
    assert not own.claim("p", 2.0)
    own.expect("p", 0.0)
    own.cancel("p")  # the Leave failed
    assert not own.claim("p", 1.0)
    own.expect("p", 0.0)
    assert not own.claim("p", 5.1)  # never published (the zone held no route): lapsed
    own.expect("q", 0.0)
    own.expect("r", 4.0)
    own.prune(6.0)
    assert not own.claim("q", 6.0) and own.claim("r", 6.0)


def status(
    zone: str, players: int, state: zone_pb2.ZoneState.ValueType = ACTIVE, address: str = ""
) -> zone_pb2.ZoneStatus:
    return zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="w", zone=zone),
        players=players,
        state=state,
        address=address,
    )


def test_pick_least_loaded_active_zone() -> None:
    zone_map = zone_pb2.ZoneMap(
        world="w",
        zones=[
            zone_pb2.ZoneMapEntry(zone="a", state=ACTIVE),
            zone_pb2.ZoneMapEntry(zone="b", state=ACTIVE),
            zone_pb2.ZoneMapEntry(zone="c", state=DRAINING),
        ],
    )
    statuses = {"a": status("a", 10), "b": status("b", 3), "c": status("c", 0, DRAINING)}
    assert pick_zone(zone_map, statuses) == "b"
    statuses["b"] = status("b", 3, DRAINING)
    assert pick_zone(zone_map, statuses) == "a"
    assert pick_zone(None, {"x": status("x", 1), "y": status("y", 0)}) == "y"
    assert pick_zone(None, {}) is None


def test_pick_never_an_instance_zone() -> None:
    instance = status("inst-0123", 0)
    instance.instance = "0123"
    statuses = {"inst-0123": instance, "open": status("open", 50)}
    assert pick_zone(None, statuses) == "open"
    zone_map = zone_pb2.ZoneMap(
        world="w",
        zones=[
            zone_pb2.ZoneMapEntry(zone="inst-0123", state=ACTIVE),
            zone_pb2.ZoneMapEntry(zone="open", state=ACTIVE),
        ],
    )
    assert pick_zone(zone_map, statuses) == "open"
    assert pick_zone(None, {"inst-0123": instance}) is None


def test_pick_skips_unreachable_zones_as_if_never_named() -> None:
    zone_map = zone_pb2.ZoneMap(
        world="w",
        zones=[
            zone_pb2.ZoneMapEntry(zone="a", state=ACTIVE),
            zone_pb2.ZoneMapEntry(zone="b", state=ACTIVE),
        ],
    )
    statuses = {"a": status("a", 1), "b": status("b", 5), "c": status("c", 0)}
    assert pick_zone(zone_map, statuses) == "a"
    assert pick_zone(zone_map, statuses, skip={"a"}) == "b"
    # A map whose zones are all skipped counts as no map: any active heartbeat.
    assert pick_zone(zone_map, statuses, skip={"a", "b"}) == "c"
    assert pick_zone(zone_map, statuses, skip={"a", "b", "c"}) is None
    assert pick_zone(None, statuses, skip={"c"}) == "a"
    # a draining: skipping b leaves nothing; skipping a leaves b (in the map, no heartbeat).
    assert pick_zone(zone_map, {"a": status("a", 0, DRAINING)}, skip={"b"}) is None
    assert pick_zone(zone_map, {"a": status("a", 0, DRAINING)}, skip={"a"}) == "b"


def test_addresses_prefer_heartbeat() -> None:
    zone_map = zone_pb2.ZoneMap(
        zones=[
            zone_pb2.ZoneMapEntry(zone="a", address="h:1"),
            zone_pb2.ZoneMapEntry(zone="b", address="h:2"),
        ]
    )
    assert zone_addresses(zone_map, [status("a", 0, address="h:9")]) == {"a": "h:9", "b": "h:2"}
