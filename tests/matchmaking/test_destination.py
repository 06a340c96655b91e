"""Destinations: least-loaded active open-world zone under capacity, counting players sent
since its heartbeat; instance zones are never destinations; instance names."""

from __future__ import annotations

import math

from tessera.common.store import parse_heartbeat
from tessera.matchmaking.destination import (
    ARRIVAL_GRACE_MS,
    ZoneLoad,
    pick_zone,
    zone_loads,
)
from tessera.v1 import common_pb2, zone_pb2


def parsed(values: dict[str, bytes | None]) -> dict[str, zone_pb2.ZoneStatus]:
    """Stored heartbeats as the shared reader returns them (missing and unreadable
    ones left out)."""
    statuses = {zone: parse_heartbeat(value) for zone, value in values.items()}
    return {zone: status for zone, status in statuses.items() if status is not None}


def test_pick_least_loaded_active_zone_with_room() -> None:
    loads = [
        ZoneLoad("a", True, 50),
        ZoneLoad("b", True, 10),
        ZoneLoad("c", False, 0),
        ZoneLoad("d", True, 95),
    ]
    assert pick_zone(loads, {}, 10, 100) == "b"
    assert pick_zone(loads, {"b": 45}, 10, 100) == "a"
    assert pick_zone(loads, {"a": 45, "b": 85}, 10, 100) is None
    assert pick_zone([], {}, 1, 100) is None


def test_players_sent_since_the_heartbeat_count_as_there() -> None:
    loads = [ZoneLoad("a", True, 5, sent=4), ZoneLoad("b", True, 7)]
    assert pick_zone(loads, {}, 1, 10) == "b"  # a has 9 (5 + 4 sent), b 7
    assert pick_zone(loads, {"b": 2}, 1, 10) == "a"
    assert pick_zone(loads, {"b": 2}, 2, 10) is None
    assert pick_zone([ZoneLoad("a", True, 0, sent=10)], {}, 1, 10) is None


def test_zone_loads_parse_heartbeats_and_skip_bad_ones() -> None:
    good = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="w", zone="z1"),
        state=zone_pb2.ZONE_STATE_ACTIVE,
        players=7,
        updated_at_ms=9_000.0,
    ).SerializeToString()
    draining = zone_pb2.ZoneStatus(state=zone_pb2.ZONE_STATE_DRAINING).SerializeToString()
    instance = zone_pb2.ZoneStatus(
        state=zone_pb2.ZONE_STATE_ACTIVE, instance="0123456789abcdef"
    ).SerializeToString()
    odd_clock = zone_pb2.ZoneStatus(
        state=zone_pb2.ZONE_STATE_ACTIVE, updated_at_ms=math.nan
    ).SerializeToString()
    loads = zone_loads(
        parsed(
            {
                "z1": good,
                "z2": draining,
                "z3": None,
                "z4": b"\xff\xff\xff",
                "inst-0123": instance,
                "z5": odd_clock,
            }
        )
    )
    assert ZoneLoad("z5", True, 0, 0.0) in loads
    # Bookings count from ARRIVAL_GRACE_MS before the heartbeat (players in transit).
    assert ZoneLoad("z1", True, 7, 9_000.0 - ARRIVAL_GRACE_MS) in loads
    assert ZoneLoad("z2", False, 0, 0.0) in loads
    assert {load.zone for load in loads} <= {"z1", "z2", "z4", "z5"}
    assert "z3" not in {load.zone for load in loads}
