"""Relays stopped and crashed under 100 players (issue #17's integration test),
with real processes: redis-server, auth, one zone and relays
(:class:`tessera.harness.relays.RelayWorld`), and 100 SDK clients over UDP.

Parts of the issue's test that ``test_integration.py`` already runs against real
processes, and which are not repeated here:

- a connect token redeemed on one relay is refused by another (and after that
  relay's kill -9 and restart):
  ``test_a_connect_token_is_spent_once_per_world_across_relays_and_restarts``;
- a revoked session is dropped within 1 s, by every relay:
  ``test_a_revoked_login_is_dropped_by_every_relay_within_a_second``;
- a client whose source port changes keeps its session (same entity, same relay):
  ``test_a_session_follows_its_client_to_a_new_port``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera.client.client import GameClient, Intent
from tessera.client.login import guest_connect_token
from tessera.client.transport import UdpTransport
from tessera.common.process import ServiceProcess, free_udp_port
from tessera.common.store import connect as redis_connect
from tessera.harness.relays import ZONE, RelayWorld, metric, ordered
from tessera.harness.tokens import LOCAL
from tessera.v1 import zone_pb2, zone_pb2_grpc
from tessera.zone.audit import settle

pytestmark = pytest.mark.integration

WORLD = "failover"
BOTS = 100
# How far each bot must walk (server positions) after a resume to count as moving.
MOVED_M = 1.0


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[RelayWorld]:
    """Auth and the zone running; relays A and B get ports (started by the test)."""
    relays = RelayWorld(
        tmp_path,
        {"a": free_udp_port(), "b": free_udp_port()},
        database_url=database_url,
        world=WORLD,
    )
    try:
        relays.start()
        yield relays
    finally:
        relays.stop()


async def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def udp(client: GameClient) -> UdpTransport:
    assert isinstance(client.transport, UdpTransport)
    return client.transport


async def resumed(clients: list[GameClient], since: list[int], relay: str, address: str) -> None:
    """Wait until every client has resumed (more often than ``since``) and talks
    to ``address``; on a timeout, say where they are (resumes, relay address, why
    a session ended)."""

    def done(c: GameClient, before: int) -> bool:
        return udp(c).resumes > before and udp(c).address == address and not udp(c).resuming

    def state(c: GameClient) -> str:
        end = c.disconnected.reason if c.disconnected is not None else "connected"
        return f"{udp(c).resumes} resumes, at {udp(c).address}, {end}"

    try:
        await wait_for(
            lambda: all(done(c, n) for c, n in zip(clients, since, strict=True)), 15.0, relay
        )
    except AssertionError:
        raise AssertionError(f"resumes on {relay}: {Counter(map(state, clients))}") from None


async def connect(auth: str, address: str, i: int) -> GameClient:
    """Bot ``i``: logged in as a guest, connected through ``address`` (its token
    names every relay of the world, ``address`` first), walking east (odd) or
    west (even), 5 inputs a second. It decodes every fourth snapshot without
    prediction, so that 100 of them fit in this process and leave the relays
    CPU on a shared machine."""
    token = await guest_connect_token(auth, f"device-failover-{i:04d}-0123456789")
    client = GameClient(UdpTransport(), input_hz=5.0, predict=False, decode_every=4)
    await client.connect(ordered(token, address))
    heading = 1.0 if i % 2 else -1.0
    client.start(lambda _client: Intent(move_x=0.5 * heading))
    return client


async def connect_playing(auth: str, address: str, bots: range) -> list[GameClient]:
    """``connect`` each of ``bots``, ten at a time; back once every one holds a
    resume credential and has had a few snapshots."""
    clients: list[GameClient] = []
    for first in range(bots.start, bots.stop, 10):
        batch = range(first, min(first + 10, bots.stop))
        clients += await asyncio.gather(*(connect(auth, address, i) for i in batch))
    await wait_for(lambda: all(udp(c).credential is not None for c in clients), 15.0, "creds")
    await wait_for(lambda: all(c.snapshots > 3 for c in clients), 15.0, "snapshots")
    return clients


def x_of(client: GameClient) -> float:
    assert client.world is not None
    position = client.world.own_position()
    assert position is not None, "the bot's own entity is missing from its snapshots"
    return float(position[0])


async def keep_moving(clients: list[GameClient]) -> None:
    """Every bot's own entity advances ``MOVED_M`` along its heading, in snapshots
    that arrive after the resume."""
    counts = [c.snapshots for c in clients]

    def flowing() -> bool:
        return all(c.snapshots > n + 2 for c, n in zip(clients, counts, strict=True))

    try:
        await wait_for(flowing, 20.0, "snapshots after the resume")
    except AssertionError:
        stuck = [
            f"{c.accepted.player_id if c.accepted else '?'}: {c.snapshots - n} new, "
            f"connected {c.connected}, at {udp(c).address}, {udp(c).resumes} resumes"
            for c, n in zip(clients, counts, strict=True)
            if c.snapshots <= n + 2
        ]
        raise AssertionError(
            f"{len(stuck)} bots got no snapshots after the resume: {stuck}"
        ) from None
    start = [x_of(c) for c in clients]
    east = [i % 2 == 1 for i in range(len(clients))]

    def moved() -> bool:
        return all(
            (x_of(c) - x0 if e else x0 - x_of(c)) >= MOVED_M
            for c, x0, e in zip(clients, start, east, strict=True)
        )

    await wait_for(moved, 10.0, "every bot to keep moving")


async def entities(zone: str) -> dict[str, int]:
    """Player -> entity id in the zone; fails if a player has two entities."""
    async with LOCAL.channel(zone) as channel:
        stub: Any = zone_pb2_grpc.ZoneStub(channel)
        status = await stub.GetStatus(zone_pb2.GetStatusRequest(include_entities=True))
    pairs = [(p, e) for e, p in zip(status.entity_ids, status.entity_players, strict=True) if p]
    twice = [p for p, n in Counter(p for p, _e in pairs).items() if n > 1]
    assert not twice, f"players held twice by the zone: {twice}"
    return dict(pairs)


async def nothing_lost_or_duplicated(world: RelayWorld, before: dict[str, int]) -> None:
    """The invariant scan over zone and routes is clean for every bot, and each bot
    still has the entity it had before (the zone kept it: no Leave, no Join)."""
    redis = redis_connect(world.redis.url)
    try:
        report = await settle(
            redis,
            WORLD,
            {ZONE: world.procs["zone"].grpc_address},
            set(before),
            timeout_s=10.0,
            channel=LOCAL.channel,
        )
    finally:
        await redis.aclose()
    assert report.ok, report
    assert await entities(world.procs["zone"].grpc_address) == before


def resumed_on(relay: ServiceProcess) -> float:
    return metric(relay, "tessera_relay_resumes_total", result="accepted")


def gaps_after(clients: list[GameClient], since: list[int]) -> list[float]:
    """Each client's first resume gap after it had resumed ``since`` times, sorted."""
    return sorted(udp(c).resume_gaps[n] for c, n in zip(clients, since, strict=True))


async def test_a_hundred_players_survive_a_relay_sigterm_then_a_kill(world: RelayWorld) -> None:
    """100 bots connected through relay A. SIGTERM A: it tells them to MOVE to
    relay B, and all resume there: 0 disconnects, the zone keeps every entity
    once (invariant scan), every bot keeps moving. Relay C then starts on A's
    address (a new pod behind the same public address) and B is killed with -9:
    all notice the silence and resume on C, with the same checks. The resume
    gaps are printed, not asserted (timings belong to ``bench/relay_failover.py``;
    a loaded machine stretches them): the test checks that every bot gets back.
    A bot may resume more than once in a phase (a relay too starved to answer
    its probes for 1 s on an overloaded machine); it must end on the right relay."""
    procs, address = world.procs, world.address
    relay_a = procs["relay-a"] = world.relay("a")
    relay_b = procs["relay-b"] = world.relay("b")
    clients: list[GameClient] = []
    try:
        await asyncio.to_thread(relay_a.wait_serving)
        await asyncio.to_thread(relay_b.wait_serving)
        auth = procs["auth"].grpc_address
        clients += await connect_playing(auth, address["a"], range(BOTS))
        before = await entities(procs["zone"].grpc_address)
        assert set(before) == {c.accepted.player_id for c in clients if c.accepted}
        assert len(before) == BOTS

        await asyncio.to_thread(relay_a.terminate)
        await resumed(clients, [0] * BOTS, "B", address["b"])
        assert all(c.connected for c in clients), [c.disconnected for c in clients]
        (draining,) = [r for r in relay_a.records() if r.get("msg") == "draining"]
        assert draining["move_to"] == address["b"] and draining["sessions"] == BOTS
        # A's drain released its movers from its zone link, so the zone's silence
        # once they had resumed on B was no alarm: a reconnect would have joined and
        # attached them to A again, stranding them on B without snapshots.
        assert not [r for r in relay_a.records() if r.get("msg") == "zone link silent"]
        sigterm_gaps = gaps_after(clients, [0] * BOTS)
        assert resumed_on(relay_b) >= BOTS
        await nothing_lost_or_duplicated(world, before)
        await keep_moving(clients)

        relay_c = procs["relay-c"] = world.relay("c", port_of="a")
        await asyncio.to_thread(relay_c.wait_serving)
        on_b = [udp(c).resumes for c in clients]
        relay_b.kill()
        await resumed(clients, on_b, "C", address["a"])
        assert all(c.connected for c in clients), [c.disconnected for c in clients]
        kill_gaps = gaps_after(clients, on_b)
        assert resumed_on(relay_c) >= BOTS
        await nothing_lost_or_duplicated(world, before)
        await keep_moving(clients)
        print(
            "resume gap p50/p99/max after SIGTERM "
            f"{np.percentile(sigterm_gaps, [50, 99, 100]).round(3).tolist()} s, after kill -9 "
            f"{np.percentile(kill_gaps, [50, 99, 100]).round(3).tolist()} s; resumes beyond "
            f"one per phase: {sum(udp(c).resumes for c in clients) - 2 * BOTS}"
        )
    finally:
        await asyncio.gather(*(c.close() for c in clients))
