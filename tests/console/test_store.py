"""The console's reads from a real Redis: heartbeats, zone map, events and
instance requests, converted to plain rows; torn values count as absent."""

from __future__ import annotations

import pytest

from tessera.common.store import Client, WorldKeys, instances_stream
from tessera.console.frame import MatchRow
from tessera.console.store import ConsoleStore, map_view, match_rows
from tessera.v1 import common_pb2, zone_pb2
from tessera.wire.geometry import Rect

pytestmark = pytest.mark.redis_cluster

KEYS = WorldKeys("earth")


def bounds(*v: float) -> common_pb2.Bounds:
    return common_pb2.Bounds(min_x=v[0], min_z=v[1], max_x=v[2], max_z=v[3])


async def test_snapshot_reads_and_converts_the_world(redis: Client) -> None:
    status = zone_pb2.ZoneStatus(
        address="127.0.0.1:5",
        bounds=bounds(0, 0, 500, 500),
        state=zone_pb2.ZONE_STATE_ACTIVE,
        players=2,
        tick_p50_ms=1.5,
        tick_p99_ms=3.5,
        overload_level=1,
        handoffs_received=7,
        updated_at_ms=123.0,
        sample_x=[1.0, 2.0],
        sample_z=[3.0, 4.0],
    )
    await redis.sadd(KEYS.zones, "earth-0", "earth-9")
    await redis.set(KEYS.zone_status("earth-0"), status.SerializeToString())
    await redis.set(KEYS.zone_status("earth-9"), b"\xff not a status")
    zone_map = zone_pb2.ZoneMap(world="earth", version=4, world_bounds=bounds(0, 0, 1000, 500))
    zone_map.zones.add(zone="earth-0", bounds=bounds(0, 0, 500, 500))
    zone_map.zones.add(zone="earth-1", bounds=bounds(500, 0, 500, 500))  # empty: left out
    await redis.set(KEYS.zone_map, zone_map.SerializeToString())
    for i in range(3):
        await redis.xadd(KEYS.events, {"decision": f"d{i}", "zone": "earth-0"})
    stream = instances_stream("earth")
    request = b"\x0a\x02m1\xff\xfe"  # the matchmaker's create request: protobuf, not text
    await redis.xadd(
        stream,
        {"kind": "create", "match": "m1", "zone": "inst-m1", "request": request, "at_ms": "10"},
    )
    await redis.xadd(stream, {"kind": "end", "match": "m1", "zone": "inst-m1", "at_ms": "20"})

    snap = await ConsoleStore(redis, "earth", events=2).snapshot()
    [z] = snap.zones
    assert (z.name, z.state, z.bounds, z.players, z.address) == (
        "earth-0",
        "ACTIVE",
        Rect(0, 0, 500, 500),
        2,
        "127.0.0.1:5",
    )
    assert (z.tick_p50_ms, z.tick_p99_ms, z.overload_level, z.handoffs_received) == (1.5, 3.5, 1, 7)
    assert z.xs.tolist() == [1.0, 2.0] and z.zs.tolist() == [3.0, 4.0]
    assert snap.zone_map.version == 4 and snap.zone_map.bounds == Rect(0, 0, 1000, 500)
    assert snap.zone_map.zones == {"earth-0": Rect(0, 0, 500, 500)}
    assert [fields["decision"] for _, fields in snap.events] == ["d1", "d2"]  # newest 2, in order
    assert snap.matches == [MatchRow("m1", "inst-m1", "end", 20.0)]


async def test_an_empty_world(redis: Client) -> None:
    snap = await ConsoleStore(redis, "earth").snapshot()
    assert (snap.zones, snap.events, snap.matches) == ([], [], [])
    assert snap.zone_map.version == 0 and snap.zone_map.bounds is None


def test_map_view_of_a_torn_value_is_empty() -> None:
    assert map_view(b"\xff\xff").zones == {}
    assert map_view(None).version == 0


def test_match_rows_take_the_newest_per_match_and_skip_entries_without_one() -> None:
    rows = match_rows(
        [
            (b"30-0", {b"kind": b"end", b"match": b"m1", b"zone": b"inst-m1"}),
            (b"20-0", {b"kind": b"create", b"match": b"m1", b"zone": b"inst-m1"}),
            (b"10-0", {b"kind": b"create", b"zone": b"x"}),
        ]
    )
    assert rows == [MatchRow("m1", "inst-m1", "end", 30.0)]
