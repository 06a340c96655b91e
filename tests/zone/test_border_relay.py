"""End to end through the real relay: auth + relay + two zone processes + UDP
bots walking back and forth across the border, then kill -9 of a zone in the
middle of handoffs. Zero client disconnects, zero lost or duplicated entities,
and bots near the border see bots on the other side. With tracing on, a join and
a handoff are each one trace over the processes they cross."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tessera.client.bot import Bot, waypoints
from tessera.client.client import GameClient
from tessera.client.login import guest_connect_token
from tessera.client.transport import UdpTransport
from tessera.harness.redis import LocalRedis
from tessera.harness.stack import Stack
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import World, ZoneSpec
from tessera.wire.geometry import Rect
from tessera.zone import audit
from tessera.zone.store import read_routes

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def running(
    redis_server: LocalRedis, redis: Redis, tmp_path: Path, database_url: str, env: dict[str, str]
) -> AsyncIterator[Stack]:
    """auth, a relay and zones west and east, every process with ``env`` added."""
    world = World(
        redis,
        redis_server.url,
        world="seam",
        env={
            "TESSERA_MAX_SPEED_MPS": "15",
            "TESSERA_ACCEL_MPS2": "150",
            "TESSERA_TICK_HZ": "20",
            **env,
        },
    )
    world.world_bounds = Rect(-100, -100, 100, 100)
    stack = Stack(world, database_url, tmp_path, env=env)
    try:
        await stack.start(
            [ZoneSpec("west", Rect(-100, -100, 0, 100)), ZoneSpec("east", Rect(0, -100, 100, 100))]
        )
        yield stack
    finally:
        stack.kill()


@pytest.fixture
async def stack(
    redis_server: LocalRedis, redis: Redis, tmp_path: Path, database_url: str
) -> AsyncIterator[Stack]:
    async with running(redis_server, redis, tmp_path, database_url, {}) as started:
        yield started


async def test_bots_cross_and_survive_a_zone_crash(stack: Stack) -> None:
    bots: list[Bot] = []
    try:
        for i in range(8):
            token = await guest_connect_token(stack.auth.grpc_address, f"device-seam-{i:016d}")
            client = GameClient(UdpTransport())
            await client.connect(token)
            z = -12.0 + 3.0 * i
            bot = Bot(client, waypoints([(-20.0, z), (20.0, z)]), seed=i)
            bot.start()
            bots.append(bot)
        players = {b.client.accepted.player_id for b in bots if b.client.accepted}
        assert len(players) == len(bots)
        world = stack.world

        async def check() -> None:
            report = await audit.settle(
                world.redis, world.world, world.addresses(), players, channel=LOCAL.channel
            )
            assert report.ok, report
            assert all(b.client.connected for b in bots), [b.client.disconnected for b in bots]

        deadline = time.monotonic() + 15.0
        while stack.relay_metric("tessera_relay_reroutes_total") < 2 * len(bots):
            assert time.monotonic() < deadline, "the bots did not cross the border"
            await asyncio.sleep(0.2)
        await check()

        # Someone sees a bot that is owned by the other zone (a ghost).
        routes = await read_routes(world.redis, world.world)
        ids = {b.client.accepted.player_id: b.client.accepted.entity_id for b in bots}  # type: ignore[union-attr]

        def cross_visible() -> bool:
            for b in bots:
                me = b.client.accepted.player_id  # type: ignore[union-attr]
                seen = set(b.client.world.others()) if b.client.world else set()
                for other, eid in ids.items():
                    if other != me and routes[other].zone != routes[me].zone and eid in seen:
                        return True
            return False

        deadline = time.monotonic() + 5.0
        while not cross_visible():
            assert time.monotonic() < deadline, "no bot saw across the border"
            await asyncio.sleep(0.1)
            routes = await read_routes(world.redis, world.world)

        for victim in ("east", "west"):  # kill -9 in the middle of continuous handoffs
            world.kill(victim)
            await asyncio.sleep(0.5)
            await world.start(victim, world.bounds[victim])
            await asyncio.sleep(2.0)
            await check()
        counts = {id(b): b.client.snapshots for b in bots}
        await asyncio.sleep(1.5)
        assert all(b.client.snapshots > counts[id(b)] for b in bots)
    finally:
        for b in bots:
            await b.client.close()


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def by_trace(spans: list[dict[str, Any]], root: str) -> list[list[dict[str, Any]]]:
    """The traces (lists of spans) that hold a span named ``root``."""
    traces: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        traces.setdefault(span["context"]["trace_id"], []).append(span)
    return [t for t in traces.values() if any(s["name"] == root for s in t)]


def instance(span: dict[str, Any]) -> str:
    return str(span["resource"]["attributes"]["service.instance.id"])


async def test_a_join_and_a_handoff_are_each_one_trace_across_processes(
    redis_server: LocalRedis, redis: Redis, tmp_path: Path, database_url: str
) -> None:
    path = tmp_path / "spans.jsonl"
    env = {"OTEL_TRACES_EXPORTER": "file", "TESSERA_TRACE_FILE": str(path)}
    async with running(redis_server, redis, tmp_path, database_url, env) as stack:
        token = await guest_connect_token(stack.auth.grpc_address, "device-trace-000000001")
        client = GameClient(UdpTransport())
        await client.connect(token)
        assert client.accepted is not None
        player = client.accepted.player_id
        bot = Bot(client, waypoints([(-20.0, 0.0), (20.0, 0.0)]), seed=1)
        bot.start()
        try:

            def complete(trace: list[dict[str, Any]]) -> bool:
                names = [s["name"] for s in trace]
                return {"handoff", "handoff.prepare", "handoff.adopt"} <= set(names) and (
                    names.count("relay.reroute") == 2
                )

            deadline = time.monotonic() + 30.0
            while not any(complete(t) for t in by_trace(read_spans(path), "handoff")):
                assert time.monotonic() < deadline, "no complete handoff trace"
                await asyncio.sleep(0.2)
        finally:
            await client.close()
    spans = read_spans(path)

    (join,) = by_trace(spans, "relay.admit")
    admit = next(s for s in join if s["name"] == "relay.admit")
    zone_join = next(s for s in join if s["name"] == "zone.join")
    assert admit["parent_id"] is None and admit["attributes"]["tessera.result"] == "accepted"
    assert zone_join["parent_id"] == admit["context"]["span_id"]
    assert zone_join["attributes"]["tessera.player_id"] == player
    assert admit["resource"]["attributes"]["service.name"] == "tessera-relay"
    assert zone_join["resource"]["attributes"]["service.name"] == "tessera-zone"

    handoff = next(t for t in by_trace(spans, "handoff") if complete(t))
    named = {s["name"]: s for s in handoff}
    root, prepare = named["handoff"], named["handoff.prepare"]
    adopt = named["handoff.adopt"]
    # Both notices of the handoff reach the relay; the first moved the session.
    reroutes = [s for s in handoff if s["name"] == "relay.reroute"]
    assert sorted(s["attributes"]["tessera.via"] for s in reroutes) == [
        "handover",
        "routes_changed",
    ]
    (reroute,) = [s for s in reroutes if s["attributes"]["tessera.moved"]]
    assert root["parent_id"] is None
    assert root["attributes"]["tessera.player_id"] == player
    assert root["attributes"]["tessera.handoff.result"] == "committed"
    assert [e["name"] for e in root["events"]] == ["ack"]
    target = root["attributes"]["tessera.handoff.target"]
    assert {root["attributes"]["tessera.zone"], target} == {"west", "east"}
    assert prepare["attributes"]["tessera.zone"] == target
    assert prepare["attributes"]["tessera.handoff.accepted"] is True
    assert adopt["attributes"]["tessera.handoff.result"] == "adopted"
    for child in (prepare, adopt, *reroutes):
        assert child["parent_id"] == root["context"]["span_id"]
    # Three processes: the owner zone, the target zone and the relay.
    assert instance(prepare) == instance(adopt) != instance(root)
    assert instance(reroute) not in (instance(root), instance(adopt))
    assert reroute["resource"]["attributes"]["service.name"] == "tessera-relay"
    assert reroute["attributes"]["tessera.zone"] == target
