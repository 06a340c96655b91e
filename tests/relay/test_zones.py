"""Zone choice from the zone map and heartbeats."""

from __future__ import annotations

from tessera.relay.zones import pick_zone, warm_zones
from tessera.v1 import common_pb2, zone_pb2

ACTIVE = zone_pb2.ZONE_STATE_ACTIVE
DRAINING = zone_pb2.ZONE_STATE_DRAINING


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


def test_warm_zones_are_the_live_zones_with_an_address() -> None:
    standby = zone_pb2.ZONE_STATE_STANDBY
    zone_map = zone_pb2.ZoneMap(
        world="w",
        zones=[
            zone_pb2.ZoneMapEntry(zone="a", state=ACTIVE, address="h:1"),
            # In the map, its address only in the heartbeat.
            zone_pb2.ZoneMapEntry(zone="b", state=zone_pb2.ZONE_STATE_STARTING),
            # No address anywhere yet: nothing to link to.
            zone_pb2.ZoneMapEntry(zone="c", state=zone_pb2.ZONE_STATE_STARTING),
            zone_pb2.ZoneMapEntry(zone="d", state=DRAINING, address="h:4"),
        ],
    )
    statuses = {
        "b": status("b", 0, ACTIVE, "h:2"),
        "e": status("e", 0, standby, "h:5"),  # a standby, not in the map: a replacement's target
        "f": status("f", 0, zone_pb2.ZONE_STATE_DRAINED, "h:6"),
        "g": status("g", 0, DRAINING, "h:7"),
    }
    assert warm_zones(zone_map, statuses) == ["a", "b", "e"]
    # A heartbeat saying draining wins over a map not yet updated, and the other way round.
    statuses["a"] = status("a", 3, DRAINING, "h:1")
    statuses["d"] = status("d", 3, ACTIVE, "h:4")
    assert warm_zones(zone_map, statuses) == ["b", "e"]
    assert warm_zones(None, statuses) == ["b", "d", "e"]
    assert warm_zones(None, {}) == []


def test_warm_zones_skip_instance_zones() -> None:
    instance = status("m", 2, ACTIVE, "h:9")
    instance.instance = "match-1"
    assert warm_zones(None, {"m": instance, "o": status("o", 1, ACTIVE, "h:8")}) == ["o"]
