"""The whole system through the demo's stack (real redis-server, auth, relay,
matchmaking, the operator's local runtime and its zones): two players walk the
open world, are matched into an arena instance zone, play there, and when the
result is reported the instance closes and hands them back to the open world,
without a disconnect."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from tessera.client.client import GameClient, Intent
from tessera.client.login import connect_token, guest_login
from tessera.client.transport import ConnectError, UdpTransport
from tessera.common.store import WorldKeys
from tessera.demo.stack import MM_CLIENT, WORLD, Stack
from tessera.demo.world import DemoSettings
from tessera.v1 import auth_pb2, auth_pb2_grpc, matchmaking_pb2, matchmaking_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(DemoSettings(bots=4, duration_s=30, world_m=1000), tmp_path / "stack")
    s.start()
    try:
        yield s
    finally:
        s.stop()


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout_s: float, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def connect(token: auth_pb2.ConnectToken) -> GameClient:
    """A client that walks slowly east; retried while the destination starts."""
    deadline = time.monotonic() + 30.0
    while True:
        client = GameClient(UdpTransport(), input_hz=10.0)
        try:
            await client.connect(token)
        except ConnectError:
            await client.close("retry")
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        client.start(lambda _: Intent(move_x=0.2))
        return client


async def test_a_match_plays_in_its_instance_zone_and_returns_to_the_open_world(
    stack: Stack,
) -> None:
    redis = Redis.from_url(stack.redis.url)
    keys = WorldKeys(WORLD)

    async def zone_of(player: str) -> str:
        raw = await redis.hget(keys.routes, player)
        text = raw.decode() if isinstance(raw, bytes) else raw or ""
        return text.split("|")[0]

    async def all_in(prefix: str) -> bool:
        return all([(await zone_of(p)).startswith(prefix) for p in players])

    sessions = [await guest_login(stack.auth_address, f"arena-player-device-{i}") for i in range(2)]
    players = [s.account_id for s in sessions]
    clients = [
        await connect(await connect_token(stack.auth_address, s.access_token)) for s in sessions
    ]
    open_zones = {await zone_of(p) for p in players}
    assert all(z.startswith(f"{WORLD}-") for z in open_zones), open_zones

    async with grpc.aio.insecure_channel(stack.procs["matchmaking"].grpc_address) as channel:
        mm: Any = matchmaking_pb2_grpc.MatchmakerStub(channel)
        tickets = [
            await mm.CreateTicket(
                matchmaking_pb2.CreateTicketRequest(
                    mode="arena",
                    players=[matchmaking_pb2.TicketPlayer(player_id=p)],
                    regions=[matchmaking_pb2.RegionLatency(region="default", latency_ms=10)],
                ),
                metadata=bearer(s.access_token),
                timeout=10,
            )
            for s, p in zip(sessions, players, strict=True)
        ]
        assigned = []
        for s, t in zip(sessions, tickets, strict=True):
            async for seen in mm.WatchAssignment(
                matchmaking_pb2.WatchAssignmentRequest(ticket_id=t.id),
                metadata=bearer(s.access_token),
                timeout=30,
            ):
                if seen.state == matchmaking_pb2.TICKET_STATE_ASSIGNED:
                    assigned.append(seen.assignment)
                    break
        assert len(assigned) == 2
        match = assigned[0].match_id
        instance = assigned[0].destination.zone
        assert instance.startswith("inst-") and assigned[1].match_id == match
        assert {a.destination.kind for a in assigned} == {matchmaking_pb2.DESTINATION_KIND_INSTANCE}

        # Each player reconnects with the matchmaker's token: the relay moves them
        # from their open-world zone into the instance, state kept.
        moved = [await connect(a.players[0].connect_token) for a in assigned]
        await eventually(
            lambda: all(c.disconnected is not None for c in clients),
            10,
            "the open-world sessions to be replaced",
        )
        await eventually(lambda: all_in(instance), 10, f"both players routed to {instance}")
        assert [c.accepted.entity_id for c in moved if c.accepted] == [
            c.accepted.entity_id for c in clients if c.accepted
        ]

        async with grpc.aio.insecure_channel(stack.auth_address) as auth_channel:
            auth: Any = auth_pb2_grpc.AuthStub(auth_channel)
            service = await auth.ServiceLogin(
                auth_pb2.ServiceLoginRequest(client_id=MM_CLIENT, client_secret=stack.mm_secret),
                timeout=10,
            )
        result = await mm.ReportMatchResult(
            matchmaking_pb2.MatchResult(
                match_id=match,
                mode="arena",
                teams=[
                    matchmaking_pb2.TeamResult(player_ids=[players[0]], rank=0),
                    matchmaking_pb2.TeamResult(player_ids=[players[1]], rank=1),
                ],
            ),
            metadata=bearer(service.access_token),
            timeout=10,
        )
        assert result.applied

    # The instance ends (2 s grace): its players go back to the open world over
    # the handoff path, still connected, still receiving snapshots.
    await eventually(lambda: all_in(f"{WORLD}-"), 30, "both players back in the open world")
    counts = [c.snapshots for c in moved]
    await eventually(
        lambda: all(c.snapshots > n + 5 for c, n in zip(moved, counts, strict=True)),
        10,
        "snapshots from the open-world zone",
    )
    assert all(c.connected for c in moved), [c.disconnected for c in moved]

    async def instance_gone() -> bool:
        return not await redis.exists(keys.zone_status(instance))

    await eventually(instance_gone, 30, f"{instance} to be gone")
    for c in moved:
        await c.close("done")
    await redis.aclose()
