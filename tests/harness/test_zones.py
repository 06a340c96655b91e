"""The harness Driver: following routes like the relay (Handover or
``routes:changed``, newest epoch wins, addresses from heartbeats) against real
zone processes, and how it explains a long snapshot gap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from tessera.common.store import Client, WorldKeys
from tessera.harness.zones import (
    Arrival,
    Driver,
    Stalls,
    World,
    ZoneSpec,
    coalesce,
    explain_gap,
)
from tessera.v1 import zone_pb2
from tessera.wire.geometry import Rect

WEST, EAST = Rect(-200, -200, 0, 200), Rect(0, -200, 200, 200)


def test_a_gap_across_zones_is_the_wait_for_the_route_or_the_first_snapshot() -> None:
    waited = explain_gap(
        "p",
        zone="east",
        prev=10.0,
        now=10.4,
        heard=("west", 1, 7),
        stream=1,
        sequence=1,
        moved=(10.3, "handover"),
        stall_s=0.0,
    )
    assert (waited.cause, waited.via, waited.zone) == ("waiting_for_route", "handover", "east")
    assert waited.wait_s == pytest.approx(0.3) and waited.since_move_s == pytest.approx(0.1)
    first = explain_gap(
        "p",
        zone="east",
        prev=10.0,
        now=10.4,
        heard=("west", 1, 7),
        stream=1,
        sequence=1,
        moved=(10.05, "routes_changed"),
        stall_s=0.1,
    )
    assert (first.cause, first.via) == ("first_snapshot", "routes_changed")
    assert first.wait_s == pytest.approx(0.05)


def test_a_gap_in_one_zone_is_drops_silence_or_the_drivers_own_stall() -> None:
    def gap(sequence: int, stream: int = 1, stall_s: float = 0.0) -> tuple[str, int]:
        g = explain_gap(
            "p",
            zone="west",
            prev=5.0,
            now=5.3,
            heard=("west", 1, 10),
            stream=stream,
            sequence=sequence,
            moved=None,
            stall_s=stall_s,
        )
        assert g.since_move_s == -1.0 and g.gap_s == pytest.approx(0.3)
        return g.cause, g.dropped

    assert gap(14) == ("dropped_snapshots", 3)
    assert gap(11) == ("zone_silent", 0)
    assert gap(1, stream=2) == ("zone_silent", 0)  # a new stream restarts its sequence
    assert gap(14, stall_s=0.15) == ("driver_stall", 3)


def busy(seconds: float) -> None:
    """Keep the thread (and so the event loop) busy, as a CPU-bound driver does."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_an_arrivals_phases_split_its_path() -> None:
    move = Arrival("p", "east", "routes_changed", 1.0, 1.25, 1.25, 1.2, 1.3)
    # the zone sent its first snapshot before the driver's Attach: a negative zone phase
    assert move.phases() == pytest.approx({"link": 0.25, "zone": -0.05, "delivery": 0.1})
    # Attached on a link still opening: the zone's part starts when the link is ready.
    opening = Arrival("p", "east", "handover", 1.0, 1.3, 1.1, 1.35, 1.4)
    assert opening.phases() == pytest.approx({"link": 0.3, "zone": 0.05, "delivery": 0.05})


async def test_stalls_measure_a_blocked_loop() -> None:
    stalls = Stalls(period_s=0.005)
    task = asyncio.create_task(stalls.run())
    await asyncio.sleep(0.05)
    blocked = time.monotonic()
    busy(0.2)
    await asyncio.sleep(0.05)
    task.cancel()
    assert stalls.longest(blocked, blocked + 0.2) >= 0.15
    assert stalls.longest(time.monotonic() + 1, time.monotonic() + 2) == 0.0
    assert max(stalls.since(blocked)) >= 0.15


def test_stalls_longest_is_the_longest_stall_overlapping_the_window() -> None:
    stalls = Stalls(keep=4)
    for woke, lag in [(1.0, 0.0), (1.5, 0.4), (2.0, 0.1), (3.0, 0.9), (3.1, 0.0)]:
        stalls.add(woke, lag)
    assert stalls.longest(1.2, 1.9) == 0.4  # woke inside
    assert stalls.longest(1.6, 1.95) == 0.1  # began inside, woke after
    assert stalls.longest(2.2, 2.5) == 0.9  # spans the whole window
    assert stalls.longest(3.2, 4.0) == 0.0
    assert stalls.since(2.0) == [0.1, 0.9, 0.0]
    for i in range(5):
        stalls.add(4.0 + i, 0.01)
    assert len(stalls.woke) <= 8 and stalls.since(0.0)[-1] == 0.01


def test_coalesce_merges_runs_of_input_batches_in_order() -> None:
    def inputs(*players: str) -> zone_pb2.ZoneLinkUp:
        return zone_pb2.ZoneLinkUp(
            inputs=zone_pb2.InputBatch(
                inputs=[zone_pb2.PlayerInput(player_id=p, sequence=1) for p in players]
            )
        )

    def acks(player: str) -> zone_pb2.ZoneLinkUp:
        ack = zone_pb2.SnapshotAck(player_id=player, stream=1, sequence=2)
        return zone_pb2.ZoneLinkUp(inputs=zone_pb2.InputBatch(acks=[ack]))

    attach = zone_pb2.ZoneLinkUp(attach=zone_pb2.Attach(player_id="c"))
    out = coalesce(
        [inputs("a"), acks("a"), inputs("b"), attach, inputs("c"), inputs("d", "e", "f")], 3
    )
    assert [m.WhichOneof("msg") for m in out] == ["inputs", "attach", "inputs", "inputs"]
    assert [i.player_id for i in out[0].inputs.inputs] == ["a", "b"]
    assert [a.player_id for a in out[0].inputs.acks] == ["a"]
    assert [i.player_id for i in out[2].inputs.inputs] == ["c"]  # with d, e, f: over the limit
    assert [i.player_id for i in out[3].inputs.inputs] == ["d", "e", "f"]


@pytest.fixture
async def world(redis_url: str, redis: Client) -> AsyncIterator[World]:
    w = World(redis, redis_url)
    yield w
    w.stop()


async def until(done: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@pytest.mark.integration
async def test_driver_follows_a_drain_on_the_first_notice_newest_epoch_wins(
    world: World, redis: Client
) -> None:
    """West drains into east, a zone the world did not start itself (its address
    comes from its heartbeat): every player moves on its Handover or its
    ``routes:changed``, none needs a resync; a stale or unroutable route moves no one."""
    await world.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
    world.procs["hidden"] = world.procs.pop("east")
    driver = Driver(world)
    try:
        players = [f"p{i}" for i in range(6)]
        for i, p in enumerate(players):
            await driver.join(p, "west", -20.0 - i, 3.0 * i)
        await until(lambda: all(p in driver.last_snapshot for p in players), "snapshots")
        await world.drain("west", target="east")
        await until(lambda: all(driver.zone_of[p] == "east" for p in players), "followed")
        since = time.monotonic()
        await until(lambda: all(driver.last_snapshot[p] > since for p in players), "east's")
        assert sum(driver.moves.values()) == len(players)
        assert set(driver.moves) <= {"handover", "routes_changed"}, driver.moves
        assert await driver.resync() == 0
        assert sorted(a.player for a in driver.arrivals) == sorted(players)
        assert all(a.zone == "east" and a.received >= a.attached for a in driver.arrivals)

        route = driver.routes.get("p0")
        assert route is not None and route.zone == "east"
        channel = WorldKeys(world.world).routes_changed
        await redis.publish(channel, f"p0|west|{route.epoch - 1}")
        await redis.publish(channel, f"p0|nowhere|{route.epoch + 1}")
        await until(lambda: driver.unroutable == 1, "the unroutable route")
        assert driver.zone_of["p0"] == "east" and driver.routes.get("p0") == route
    finally:
        await driver.close()


@pytest.mark.integration
async def test_driver_with_warm_links_links_a_zone_before_its_first_player(world: World) -> None:
    """As the relay: a zone of the registry gets its link before any player is routed
    there, and players handed to it arrive on that same link."""
    await world.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
    driver = Driver(world, warm_s=0.05)
    try:
        await driver.follow_routes()
        await until(lambda: {"west", "east"} <= set(driver.links), "warm links")
        east = driver.links["east"]
        players = [f"p{i}" for i in range(4)]
        for i, p in enumerate(players):
            await driver.join(p, "west", -20.0 - i, 3.0 * i)
        await until(lambda: all(p in driver.last_snapshot for p in players), "snapshots")
        await world.drain("west", target="east")
        since = time.monotonic()
        await until(
            lambda: (
                all(driver.zone_of[p] == "east" for p in players)
                and all(driver.last_snapshot[p] > since for p in players)
            ),
            "east's snapshots",
        )
        assert driver.links["east"] is east and driver.link_breaks == 0
    finally:
        await driver.close()
