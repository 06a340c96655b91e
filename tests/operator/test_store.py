"""The operator's Redis adapter against a real redis-server."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tessera.common.database import Pool
from tessera.common.store import Client, WorldKeys, instances_stream
from tessera.matchmaking.director import Director
from tessera.matchmaking.modes import INSTANCE, Mode
from tessera.matchmaking.records import RatingRecords
from tessera.matchmaking.store import Store
from tessera.operator import store as operator_store
from tessera.operator.planner.actions import CreateZone
from tessera.operator.planner.model import WorldSpec
from tessera.operator.planner.rules import plan
from tessera.operator.reconcile import instance_requests
from tessera.operator.store import OperatorStore
from tessera.v1 import common_pb2, zone_pb2
from tessera.v1 import matchmaking_pb2 as pb
from tessera.wire.geometry import Rect

pytestmark = pytest.mark.redis_cluster

WORLD = common_pb2.Bounds(min_x=0, min_z=0, max_x=100, max_z=100)


def entry(zone: str, max_x: float) -> zone_pb2.ZoneMapEntry:
    return zone_pb2.ZoneMapEntry(
        zone=zone, address="h:1", bounds=common_pb2.Bounds(max_x=max_x, max_z=100)
    )


async def test_zone_map_versions_only_change_with_content(redis: Client) -> None:
    store = OperatorStore(redis)
    pubsub = redis.pubsub()
    await pubsub.subscribe(WorldKeys("earth").zone_map_changed)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    assert await store.publish_zone_map("earth", WORLD, [entry("b", 100), entry("a", 50)]) == 1
    assert await store.publish_zone_map("earth", WORLD, [entry("a", 50), entry("b", 100)]) == 1
    assert await store.publish_zone_map("earth", WORLD, [entry("a", 100)]) == 2
    stored = await store.zone_map("earth")
    assert stored is not None and stored.version == 2 and stored.world == "earth"
    assert [e.zone for e in stored.zones] == ["a"] and stored.world_bounds == WORLD
    messages = []
    for _ in range(2):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        assert message is not None
        messages.append(message["data"])
    assert messages == [b"1", b"2"]
    await pubsub.aclose()


async def test_concurrent_publishers_never_reuse_a_version(redis: Client) -> None:
    store = OperatorStore(redis)
    versions = await asyncio.gather(
        *(store.publish_zone_map("earth", WORLD, [entry("a", float(i + 1))]) for i in range(10))
    )
    assert sorted(versions) == list(range(1, 11))


async def test_a_map_write_retried_after_its_answer_was_lost_is_announced(
    redis: Client,
) -> None:
    """The client resends a command whose answer timed out: the second run of the
    swap finds the new map stored and says so, and the version is announced."""
    store = OperatorStore(redis)
    swap = store._swap_map

    async def answer_lost(**kwargs: Any) -> Any:
        await swap(**kwargs)  # ran, but its answer never came back
        return await swap(**kwargs)

    store._swap_map = answer_lost  # type: ignore[assignment]
    pubsub = redis.pubsub()
    await pubsub.subscribe(WorldKeys("earth").zone_map_changed)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    assert await store.publish_zone_map("earth", WORLD, [entry("a", 100)]) == 1
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    await pubsub.aclose()
    assert message is not None and message["data"] == b"1"


async def test_zone_statuses_skip_missing_and_garbage(redis: Client) -> None:
    keys = WorldKeys("earth")
    status = zone_pb2.ZoneStatus(players=3, state=zone_pb2.ZONE_STATE_ACTIVE)
    await redis.set(keys.zone_status("a"), status.SerializeToString())
    await redis.set(keys.zone_status("b"), b"\xff\xff not a protobuf")
    store = OperatorStore(redis)
    assert await store.zone_statuses("earth", ["a", "b", "c"]) == {"a": status}
    assert await store.zone_statuses("earth", []) == {}


async def test_events_are_appended_to_a_capped_stream(redis: Client) -> None:
    store = OperatorStore(redis)
    await store.append_event("earth", {"decision": "Split", "zone": "earth-0", "reason": "r"})
    entries: Any = await redis.xrange(WorldKeys("earth").events)
    assert [fields for _, fields in entries] == [
        {b"decision": b"Split", b"zone": b"earth-0", b"reason": b"r"}
    ]


async def xadd(redis: Client, kind: str, match: str) -> str:
    """An entry as the matchmaker writes it (the contract's fields)."""
    entry_id: Any = await redis.xadd(
        instances_stream("earth"),
        {"kind": kind, "match": match, "zone": f"inst-{match}", "at_ms": "1000"},
        maxlen=10000,
        approximate=True,
    )
    return str(entry_id.decode())


async def test_instance_entries_pending_first_then_new_until_acknowledged(redis: Client) -> None:
    store = OperatorStore(redis)
    assert instances_stream("earth") == "tessera:{mm}:instances:earth"
    assert await store.instance_entries("earth") == []  # creates the group (MKSTREAM)
    groups: Any = await redis.xinfo_groups(instances_stream("earth"))
    assert [g["name"] for g in groups] == [b"tessera-operator"]
    a = await xadd(redis, "create", "a")
    b = await xadd(redis, "create", "b")
    first = await store.instance_entries("earth")
    assert [i for i, _ in first] == [a, b]
    assert first[0][1] == {
        b"kind": b"create",
        b"match": b"a",
        b"zone": b"inst-a",
        b"at_ms": b"1000",
    }
    c = await xadd(redis, "end", "a")
    await store.ack_instances("earth", [a])
    # b was read but not acknowledged: it comes again, before the new c.
    assert [i for i, _ in await store.instance_entries("earth")] == [b, c]
    await store.ack_instances("earth", [b, c])
    await store.ack_instances("earth", [])
    assert await store.instance_entries("earth") == []
    # A second store (a newly elected operator) sees what the first left pending.
    d = await xadd(redis, "create", "d")
    assert [i for i, _ in await store.instance_entries("earth")] == [d]
    assert [i for i, _ in await OperatorStore(redis).instance_entries("earth")] == [d]


async def test_instance_entries_page_through_pending_and_survive_a_lost_group(
    redis: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(operator_store, "INSTANCES_PAGE", 2)
    store = OperatorStore(redis)
    ids = [await xadd(redis, "create", f"m{i}") for i in range(5)]
    assert [i for i, _ in await store.instance_entries("earth")] == ids[:2]  # one page of new
    assert [i for i, _ in await store.instance_entries("earth")] == ids[:4]
    assert [i for i, _ in await store.instance_entries("earth")] == ids
    # An entry trimmed away while pending comes back with no fields.
    await redis.xdel(instances_stream("earth"), ids[0])
    entries = await store.instance_entries("earth")
    assert entries[0] == (ids[0], {}) and len(entries) == 5
    await redis.delete(instances_stream("earth"))  # e.g. Redis lost its data: a new group
    assert await store.instance_entries("earth") == []
    e = await xadd(redis, "end", "x")
    assert [i for i, _ in await store.instance_entries("earth")] == [e]


async def test_instance_requests_written_by_the_matchmaker_are_planned(
    redis: Client, database: Pool
) -> None:
    """The contract end to end: the real matchmaking director assigns a match to an
    instance and its result is reported; the operator reads both entries through
    its group, decodes them and plans the instance's creation and end."""
    now_ms = float(int(time.time() * 1000))
    arena = Mode(name="arena", team_size=2, max_party=2, destination=INSTANCE, world="earth")
    mm = Store(redis, RatingRecords(database), ticket_ttl_s=10.0, retention_s=60.0)
    director = Director(mm, {"arena": arena}, clock=lambda: now_ms)
    for players in (("a", "b"), ("c",), ("d",)):
        ticket = pb.Ticket(
            id=uuid.uuid4().hex,
            mode="arena",
            players=[pb.TicketPlayer(player_id=p) for p in players],
            regions=[pb.RegionLatency(region="eu", latency_ms=10)],
            created_at_ms=now_ms,
        )
        await mm.create(ticket, now_ms)
    assert (await director.tick()).matches == 1

    store = OperatorStore(redis)
    entries = await store.instance_entries("earth")
    requests, bad = instance_requests("earth", entries)
    assert bad == []
    (create,) = requests
    assert create.kind == "create" and create.at == now_ms / 1000
    assert sorted(create.players) == ["a", "b", "c", "d"]
    world = WorldSpec("earth", Rect(0, 0, 1024, 1024))
    result = plan(world, [], now_ms / 1000, requests=requests)
    (instance,) = [a for a in result.actions if isinstance(a, CreateZone) and a.instance]
    assert (instance.zone, instance.instance) == (create.zone, create.match)
    assert instance.bounds == world.bounds and result.done == (entries[0][0],)
    await store.ack_instances("earth", result.done)

    teams = [["a", "b"], ["c", "d"]]
    assert await mm.apply_result(create.match, "arena", teams, [0, 1], now_ms=now_ms + 5000)
    requests, bad = instance_requests("earth", await store.instance_entries("earth"))
    assert bad == [] and [(r.kind, r.zone, r.at) for r in requests] == [
        ("end", create.zone, now_ms / 1000 + 5)
    ]
