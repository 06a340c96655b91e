"""End to end with real processes: auth (``python -m tessera.auth``), the matchmaker
(``python -m tessera.matchmaking``, API + matching loop + connect tokens), Redis and
PostgreSQL (losing Redis loses no account or rating); and CreateTickets batching in
the servicer itself against Redis."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from tessera.authclient.bearer import bearer_metadata
from tessera.authclient.verifier import Verifier
from tessera.common import errors
from tessera.common.database import Pool
from tessera.common.process import ServiceProcess
from tessera.common.store import WorldKeys, instances_stream
from tessera.harness.redis import LocalRedis, component_url
from tessera.matchmaking.modes import parse_modes
from tessera.matchmaking.records import RatingRecords
from tessera.matchmaking.servicer import MatchmakerServicer, Watchers
from tessera.matchmaking.store import Claim, Instance, Snapshot, Store
from tessera.v1 import auth_pb2, auth_pb2_grpc, common_pb2, zone_pb2
from tessera.v1 import matchmaking_pb2 as pb
from tessera.v1 import matchmaking_pb2_grpc as pb_grpc
from tessera.wire.access_token import Claims
from tessera.wire.connect_token import open_connect_token

from .conftest import COMMON, scrape

pytestmark = pytest.mark.integration

SEALING_KEY = os.urandom(32)
RELAY = "127.0.0.1:7777"


@dataclass
class Stack:
    auth: ServiceProcess
    mm: ServiceProcess
    auth_stub: auth_pb2_grpc.AuthAsyncStub
    mm_stub: pb_grpc.MatchmakerAsyncStub
    redis: Redis


def start_processes(
    redis_url: str,
    database_url: str,
    start_service: Callable[[ServiceProcess], ServiceProcess],
    env: dict[str, str] | None = None,
) -> tuple[ServiceProcess, ServiceProcess]:
    """Auth and a matchmaker (API + loop, connect tokens) on Redis and PostgreSQL,
    each with ``env`` added."""
    stores = {"TESSERA_DATABASE_URL": database_url, **(env or {})}
    auth = ServiceProcess(
        "tessera.auth",
        {
            **COMMON,
            **stores,
            "TESSERA_REDIS_URL": component_url(redis_url, "auth"),
            "TESSERA_AUTH_GENERATE_KEYS": "true",
            "TESSERA_CONNECT_KEY": base64.b64encode(SEALING_KEY).decode(),
            "TESSERA_AUTH_SERVICE_CLIENTS": (
                "matchmaking=mm-secret-0123456789,gameserver=gs-secret-0123456789"
            ),
            "TESSERA_AUTH_RELAYS": f"default={RELAY};eu=127.0.0.1:7778",
        },
        name="auth",
    )
    start_service(auth)
    mm = ServiceProcess(
        "tessera.matchmaking",
        {
            **COMMON,
            **stores,
            "TESSERA_REDIS_URL": component_url(redis_url, "matchmaking"),
            "TESSERA_AUTH_ADDRESS": auth.grpc_address,
            "TESSERA_MM_CLIENT_SECRET": "mm-secret-0123456789",
            "TESSERA_MM_TICKET_TTL_S": "1.5",
            "TESSERA_MM_TICK_INTERVAL_S": "0.02",
        },
        name="matchmaking",
    )
    try:
        start_service(mm)
    except BaseException:
        auth.terminate()
        raise
    return auth, mm


@pytest.fixture
def processes(
    redis_server: LocalRedis,
    redis: Redis,
    database: Pool,
    database_url: str,
    start_service: Callable[[ServiceProcess], ServiceProcess],
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    with running(redis_server.url, database_url, start_service) as started:
        yield started


@contextlib.contextmanager
def running(
    redis_url: str,
    database_url: str,
    start_service: Callable[[ServiceProcess], ServiceProcess],
    env: dict[str, str] | None = None,
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """Auth and a matchmaker running for the block."""
    auth, mm = start_processes(redis_url, database_url, start_service, env)
    try:
        yield auth, mm
    finally:
        assert mm.terminate() == 0
        auth.terminate()


@pytest.fixture
async def stack(
    processes: tuple[ServiceProcess, ServiceProcess], redis: Redis
) -> AsyncIterator[Stack]:
    auth, mm = processes
    async with open_stack(auth, mm, redis, zone_players=3) as opened:
        yield opened


@contextlib.asynccontextmanager
async def open_stack(
    auth: ServiceProcess, mm: ServiceProcess, redis: Redis, *, zone_players: int = 0
) -> AsyncIterator[Stack]:
    """Channels to running auth and matchmaking processes, with zone z1 of world
    main registered (active, ``zone_players`` players)."""
    keys = WorldKeys("main")
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="main", zone="z1"),
        state=zone_pb2.ZONE_STATE_ACTIVE,
        players=zone_players,
    )
    await redis.sadd(keys.zones, "z1")
    await redis.set(keys.zone_status("z1"), status.SerializeToString())
    async with (
        grpc.aio.insecure_channel(auth.grpc_address) as auth_channel,
        grpc.aio.insecure_channel(mm.grpc_address) as mm_channel,
    ):
        yield Stack(
            auth,
            mm,
            auth_pb2_grpc.AuthStub(auth_channel),
            pb_grpc.MatchmakerStub(mm_channel),
            redis,
        )


async def guest_session(stack: Stack) -> auth_pb2.Session:
    return await stack.auth_stub.GuestLogin(
        auth_pb2.GuestLoginRequest(device_id=f"device-{uuid.uuid4().hex}")
    )


async def guest(stack: Stack) -> tuple[str, tuple[tuple[str, str], ...]]:
    session = await guest_session(stack)
    return session.account_id, bearer_metadata(session.access_token)


async def gameserver(stack: Stack) -> tuple[tuple[str, str], ...]:
    session = await stack.auth_stub.ServiceLogin(
        auth_pb2.ServiceLoginRequest(client_id="gameserver", client_secret="gs-secret-0123456789")
    )
    return bearer_metadata(session.access_token)


def request(mode: str, *players: str, region: str = "eu") -> pb.CreateTicketRequest:
    return pb.CreateTicketRequest(
        mode=mode,
        players=[pb.TicketPlayer(player_id=p) for p in players],
        regions=[pb.RegionLatency(region=region, latency_ms=12.0)],
    )


async def watch_until_done(stack: Stack, ticket_id: str, metadata: Any) -> list[pb.Ticket]:
    seen = []
    call = stack.mm_stub.WatchAssignment(
        pb.WatchAssignmentRequest(ticket_id=ticket_id), metadata=metadata, timeout=15
    )
    async for ticket in call:
        seen.append(ticket)
    return seen


async def test_duel_assignment_with_connect_tokens_and_result(stack: Stack, database: Pool) -> None:
    alice_session = await guest_session(stack)
    alice, alice_md = alice_session.account_id, bearer_metadata(alice_session.access_token)
    bob, bob_md = await guest(stack)
    a = await stack.mm_stub.CreateTicket(request("duel", alice), metadata=alice_md)
    assert a.state == pb.TICKET_STATE_SEARCHING and a.expires_at_ms > a.created_at_ms
    watch_a = asyncio.create_task(watch_until_done(stack, a.id, alice_md))
    await asyncio.sleep(0.2)
    b = await stack.mm_stub.CreateTicket(request("duel", bob), metadata=bob_md)
    watch_b = asyncio.create_task(watch_until_done(stack, b.id, bob_md))
    seen_a, seen_b = await asyncio.gather(watch_a, watch_b)
    assert [t.state for t in seen_a] == [pb.TICKET_STATE_SEARCHING, pb.TICKET_STATE_ASSIGNED]
    final_a, final_b = seen_a[-1], seen_b[-1]
    assert final_b.state == pb.TICKET_STATE_ASSIGNED
    assert final_a.assignment.match_id == final_b.assignment.match_id
    destination = final_a.assignment.destination
    assert (destination.world, destination.zone, destination.region) == ("main", "z1", "eu")
    (player,) = final_a.assignment.players
    assert player.player_id == alice
    assert player.connect_token.player_id == alice
    assert list(player.connect_token.relay_addresses) == ["127.0.0.1:7778"]
    # The token is a real one: it opens at the relay with the auth service's keys.
    verifier = await Verifier.connect(stack.auth.grpc_address, _redis_url(stack))
    try:
        grant = open_connect_token(
            player.connect_token.token,
            public_keys=verifier.public_keys,
            sealing_key=SEALING_KEY,
            relay_address="127.0.0.1:7778",
            now=time.time(),
        )
    finally:
        await verifier.close()
    # Bound to Alice's own session, so revoking it also voids this admission.
    assert (grant.player_id, grant.session_id) == (alice, alice_session.session_id)
    # Once assigned, the player may queue again.
    again = await stack.mm_stub.CreateTicket(request("duel", alice), metadata=alice_md)
    await stack.mm_stub.CancelTicket(pb.CancelTicketRequest(ticket_id=again.id), metadata=alice_md)

    result = pb.MatchResult(
        match_id=final_a.assignment.match_id,
        mode="duel",
        teams=[
            pb.TeamResult(player_ids=[alice], rank=0, roles=["duelist"]),
            pb.TeamResult(player_ids=[bob], rank=1),
        ],
        started_at_ms=int(time.time() * 1000) - 60_000,
    )
    gs_md = await gameserver(stack)
    bad_roles = pb.MatchResult()
    bad_roles.CopyFrom(result)
    bad_roles.teams[0].roles.append("spare")
    await expect_error(
        stack.mm_stub.ReportMatchResult(bad_roles, metadata=gs_md),
        grpc.StatusCode.INVALID_ARGUMENT,
        "BAD_ROLES",
    )
    forged = pb.MatchResult()
    forged.CopyFrom(result)
    forged.teams[1].player_ids.append("mallory")
    message = await expect_error(
        stack.mm_stub.ReportMatchResult(forged, metadata=gs_md),
        grpc.StatusCode.INVALID_ARGUMENT,
        "PLAYER_NOT_IN_MATCH",
    )
    assert "mallory" in message
    first = await stack.mm_stub.ReportMatchResult(result, metadata=gs_md)
    second = await stack.mm_stub.ReportMatchResult(result, metadata=gs_md)
    assert (first.applied, second.applied) == (True, False)
    ratings = await RatingRecords(database).ratings("duel", [alice, bob])
    assert ratings[alice].rating[0] > 25.0 > ratings[bob].rating[0]
    # The match is in both players' history: each reads their own, a service any.
    mine = await stack.mm_stub.ListMatchHistory(pb.ListMatchHistoryRequest(), metadata=alice_md)
    (entry,) = mine.matches
    assert (entry.match_id, entry.team, entry.role, entry.outcome) == (
        result.match_id,
        0,
        "duelist",
        "win",
    )
    assert entry.rated and entry.mu_after == ratings[alice].rating[0] > entry.mu_before
    assert entry.started_at_ms == result.started_at_ms < entry.ended_at_ms
    theirs = pb.ListMatchHistoryRequest(player_id=bob)
    (entry,) = (await stack.mm_stub.ListMatchHistory(theirs, metadata=gs_md)).matches
    assert (entry.outcome, entry.role, entry.team) == ("loss", "", 1)
    await expect_error(
        stack.mm_stub.ListMatchHistory(theirs, metadata=alice_md),
        grpc.StatusCode.PERMISSION_DENIED,
        "FORBIDDEN",
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.mm_stub.ReportMatchResult(result, metadata=alice_md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A match played in an instance zone: its first applied result ends the instance.
    instance = Instance("arenas", "inst-arena-match", b"")
    store = Store(stack.redis, RatingRecords(database))
    assert await store.claim("arena", [Claim("arena-match", [], instance=instance)], 0.0) == [None]
    result.match_id = "arena-match"
    assert (await stack.mm_stub.ReportMatchResult(result, metadata=gs_md)).applied
    assert not (await stack.mm_stub.ReportMatchResult(result, metadata=gs_md)).applied
    entries: Any = await stack.redis.xrange(instances_stream("arenas"))
    assert [(f[b"kind"], f[b"match"], f[b"zone"]) for _, f in entries] == [
        (b"create", b"arena-match", b"inst-arena-match"),
        (b"end", b"arena-match", b"inst-arena-match"),
    ]
    assert abs(int(entries[1][1][b"at_ms"]) - time.time() * 1000) < 60_000


def _redis_url(stack: Stack) -> str:
    kwargs = stack.redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


async def expect_error(call: Any, code: grpc.StatusCode, reason: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    assert errors.detail_of(err.value).reason == reason
    return err.value.details() or ""


async def test_a_ticket_is_one_trace_through_claim_and_connect_token(
    redis_server: LocalRedis,
    redis: Redis,
    start_service: Callable[[ServiceProcess], ServiceProcess],
    tmp_path: Path,
    database_url: str,
) -> None:
    path = tmp_path / "spans.jsonl"
    env = {"OTEL_TRACES_EXPORTER": "file", "TESSERA_TRACE_FILE": str(path)}
    with running(redis_server.url, database_url, start_service, env) as (auth, mm):
        async with open_stack(auth, mm, redis) as stack:
            alice, alice_md = await guest(stack)
            bob, bob_md = await guest(stack)
            a = await stack.mm_stub.CreateTicket(request("duel", alice), metadata=alice_md)
            b = await stack.mm_stub.CreateTicket(request("duel", bob), metadata=bob_md)
            (*_, final) = await watch_until_done(stack, a.id, alice_md)
            assert final.state == pb.TICKET_STATE_ASSIGNED
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    named: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        named.setdefault(span["name"], []).append(span)
    assigns = {s["attributes"]["tessera.ticket_id"]: s for s in named["matchmaking.assign"]}
    (prepare,) = named["matchmaking.prepare"]
    (tokens,) = named["auth.connect_tokens"]
    for ticket in (a, b):
        (created,) = [
            s
            for s in named["matchmaking.ticket"]
            if s["attributes"]["tessera.ticket_id"] == ticket.id
        ]
        assign = assigns[ticket.id]
        # The ticket's trace: its creation, then its claim, linked to the token batch.
        assert assign["context"]["trace_id"] == created["context"]["trace_id"]
        assert assign["parent_id"] == created["context"]["span_id"]
        assert assign["attributes"]["tessera.result"] == "assigned"
        assert assign["attributes"]["tessera.match_id"] == final.assignment.match_id
        assert assign["attributes"]["tessera.zone"] == "z1"
        assert [link["context"]["span_id"] for link in assign["links"]] == [
            prepare["context"]["span_id"]
        ]
    # auth issued both players' tokens in one call, inside the matchmaker's batch span.
    assert tokens["parent_id"] == prepare["context"]["span_id"]
    assert tokens["attributes"] == {"tessera.requests": 2, "tessera.issued": 2}
    assert tokens["resource"]["attributes"]["service.name"] == "tessera-auth"
    assert prepare["resource"]["attributes"]["service.name"] == "tessera-matchmaking"


async def test_bad_input_gets_clear_errors(stack: Stack) -> None:
    alice, md = await guest(stack)
    bob, bob_md = await guest(stack)
    stub = stack.mm_stub
    bad = grpc.StatusCode.INVALID_ARGUMENT
    message = await expect_error(
        stub.CreateTicket(request("chess", alice), metadata=md), bad, "UNKNOWN_MODE"
    )
    assert "duel" in message
    await expect_error(stub.CreateTicket(request("duel"), metadata=md), bad, "EMPTY_PARTY")
    await expect_error(
        stub.CreateTicket(request("duel", alice, bob), metadata=md), bad, "PARTY_TOO_LARGE"
    )
    nan = request("duel", alice)
    nan.number_attributes["level"] = float("nan")
    await expect_error(stub.CreateTicket(nan, metadata=md), bad, "NON_FINITE_ATTRIBUTE")
    await expect_error(
        stub.CreateTicket(request("5v5", bob, alice), metadata=md),
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_TICKET_OWNER",
    )
    ticket = await stub.CreateTicket(request("5v5", alice, bob), metadata=md)
    message = await expect_error(
        stub.CreateTicket(request("duel", bob), metadata=bob_md),
        grpc.StatusCode.ALREADY_EXISTS,
        "TICKET_EXISTS",
    )
    assert ticket.id in message
    # Bob is on the party ticket, so he may read it; a stranger may not.
    assert (await stub.GetTicket(pb.GetTicketRequest(ticket_id=ticket.id), metadata=bob_md)).id
    _, stranger = await guest(stack)
    await expect_error(
        stub.GetTicket(pb.GetTicketRequest(ticket_id=ticket.id), metadata=stranger),
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_TICKET_PLAYER",
    )
    await expect_error(
        stub.GetTicket(pb.GetTicketRequest(ticket_id="nope"), metadata=md),
        grpc.StatusCode.NOT_FOUND,
        "TICKET_NOT_FOUND",
    )
    await expect_error(
        stub.GetTicket(pb.GetTicketRequest(ticket_id=ticket.id)),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    gs_md = await gameserver(stack)
    await expect_error(
        stub.ReportMatchResult(
            pb.MatchResult(match_id="m", mode="duel", teams=[pb.TeamResult(player_ids=["x"])]),
            metadata=gs_md,
        ),
        bad,
        "TOO_FEW_TEAMS",
    )
    await expect_error(
        stub.CreateBackfill(
            pb.CreateBackfillRequest(match_id="m", mode="duel", region="eu", open_slots={7: 1}),
            metadata=gs_md,
        ),
        bad,
        "BAD_SLOTS",
    )


async def test_heartbeat_cancel_and_expiry(stack: Stack) -> None:
    alice, md = await guest(stack)
    stub = stack.mm_stub
    ticket = await stub.CreateTicket(request("5v5", alice), metadata=md)
    await asyncio.sleep(1.0)
    beat = await stub.HeartbeatTicket(pb.HeartbeatTicketRequest(ticket_id=ticket.id), metadata=md)
    assert beat.state == pb.TICKET_STATE_SEARCHING
    assert beat.expires_at_ms > ticket.expires_at_ms + 500
    watch = asyncio.create_task(watch_until_done(stack, ticket.id, md))
    await asyncio.sleep(0.2)
    cancelled = await stub.CancelTicket(pb.CancelTicketRequest(ticket_id=ticket.id), metadata=md)
    assert cancelled.ticket.state == pb.TICKET_STATE_CANCELLED
    assert [t.state for t in await watch] == [
        pb.TICKET_STATE_SEARCHING,
        pb.TICKET_STATE_CANCELLED,
    ]
    await expect_error(
        stub.CancelTicket(pb.CancelTicketRequest(ticket_id=ticket.id), metadata=md),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TICKET_NOT_SEARCHING",
    )
    # Abandoned: never heartbeated, it expires on its own and frees the player.
    abandoned = await stub.CreateTicket(request("5v5", alice), metadata=md)
    states = [t.state for t in await watch_until_done(stack, abandoned.id, md)]
    assert states == [pb.TICKET_STATE_SEARCHING, pb.TICKET_STATE_EXPIRED]
    assert await stub.CreateTicket(request("5v5", alice), metadata=md)


def backfill_request(match_id: str, destination: pb.Destination) -> pb.CreateBackfillRequest:
    """One open slot on team 1 of a running 5v5 match in region eu."""
    return pb.CreateBackfillRequest(
        match_id=match_id, mode="5v5", region="eu", open_slots={1: 1}, destination=destination
    )


async def test_backfill_takes_new_tickets(stack: Stack) -> None:
    gs_md = await gameserver(stack)
    destination = pb.Destination(
        kind=pb.DESTINATION_KIND_INSTANCE, world="arena", zone="inst-running", region="eu"
    )
    backfill = await stack.mm_stub.CreateBackfill(
        backfill_request("running-1", destination),
        metadata=gs_md,
    )
    alice, md = await guest(stack)
    ticket = await stack.mm_stub.CreateTicket(request("5v5", alice), metadata=md)
    final = (await watch_until_done(stack, ticket.id, md))[-1]
    assert final.state == pb.TICKET_STATE_ASSIGNED
    assert final.assignment.match_id == "running-1"
    assert final.assignment.destination == destination
    assert final.assignment.players[0].team == 1
    assert final.assignment.players[0].connect_token.player_id == alice
    got = await stack.mm_stub.GetBackfill(
        pb.GetBackfillRequest(backfill_id=backfill.id), metadata=gs_md
    )
    assert list(got.ticket_ids) == [ticket.id] and dict(got.open_slots) == {1: 0}
    # A destination its tokens could not name is refused up front; a missing world
    # is the mode's.
    for bad_destination, field in (
        (pb.Destination(world="arena", zone="Inst_Running"), "zone"),
        (pb.Destination(world="-arena", zone="inst-running"), "world"),
    ):
        message = await expect_error(
            stack.mm_stub.CreateBackfill(
                backfill_request("running-2", bad_destination),
                metadata=gs_md,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "BAD_DESTINATION",
        )
        assert message.startswith(f"destination.{field} ")
    defaulted = await stack.mm_stub.CreateBackfill(
        backfill_request("running-3", pb.Destination(zone="z1")),
        metadata=gs_md,
    )
    assert (defaulted.destination.world, defaulted.destination.zone) == ("main", "z1")


async def test_losing_redis_loses_no_account_or_rating(
    redis_server: LocalRedis,
    redis: Redis,
    database: Pool,
    database_url: str,
    start_service: Callable[[ServiceProcess], ServiceProcess],
) -> None:
    """Register, get rated, FLUSHALL Redis, restart auth and the matchmaker: the
    players log in again with their passwords, a new ticket carries the rating the
    result gave, and the result is still known (a repeated report changes nothing)."""
    password = "a long enough password"
    result = pb.MatchResult(match_id="before-the-flush", mode="duel")
    accounts = {}
    auth, mm = start_processes(redis_server.url, database_url, start_service)
    try:
        async with open_stack(auth, mm, redis) as stack:
            for name in ("winner", "loser"):
                register = auth_pb2.RegisterRequest(username=name, password=password)
                accounts[name] = (await stack.auth_stub.Register(register)).account_id
            for rank, name in enumerate(accounts):
                result.teams.append(pb.TeamResult(player_ids=[accounts[name]], rank=rank))
            gs_md = await gameserver(stack)
            assert (await stack.mm_stub.ReportMatchResult(result, metadata=gs_md)).applied
    finally:
        mm.terminate()
        auth.terminate()
    await redis.flushall()
    auth, mm = start_processes(redis_server.url, database_url, start_service)
    try:
        async with open_stack(auth, mm, redis) as stack:
            sessions = {
                name: await stack.auth_stub.Login(
                    auth_pb2.LoginRequest(username=name, password=password)
                )
                for name in accounts
            }
            assert {n: s.account_id for n, s in sessions.items()} == accounts
            gs_md = await gameserver(stack)
            again = await stack.mm_stub.ReportMatchResult(result, metadata=gs_md)
            assert not again.applied
            winner = accounts["winner"]
            md = bearer_metadata(sessions["winner"].access_token)
            ticket = await stack.mm_stub.CreateTicket(request("duel", winner), metadata=md)
            store = Store(redis, RatingRecords(database))
            (candidate,) = await store.searching(Snapshot("duel"), time.time() * 1000)
            recorded = (await store.records.ratings("duel", [winner]))[winner]
            assert candidate.id == ticket.id
            assert candidate.ratings == (recorded.rating[0],)
            assert recorded.version == 1 and recorded.rating[0] > 25.0
    finally:
        mm.terminate()
        auth.terminate()


# Zones with room for every player of a large stream.
BULK_MODES = [
    {"name": "duel", "zone_capacity": 10**9},
    {"name": "5v5", "team_size": 5, "max_party": 5, "zone_capacity": 10**9},
]


@pytest.fixture
async def bulk(
    redis_server: LocalRedis,
    redis: Redis,
    auth: ServiceProcess,
    database_url: str,
    start_service: Callable[[ServiceProcess], ServiceProcess],
) -> AsyncIterator[Stack]:
    """Auth and a matchmaker (API + loop, no connect tokens, 30 s tickets), for streams."""
    mm = ServiceProcess(
        "tessera.matchmaking",
        {
            **COMMON,
            "TESSERA_REDIS_URL": redis_server.url_for("matchmaking"),
            "TESSERA_DATABASE_URL": database_url,
            "TESSERA_AUTH_ADDRESS": auth.grpc_address,
            "TESSERA_MM_CONNECT_TOKENS": "false",
            "TESSERA_MM_TICK_INTERVAL_S": "0.01",
            "TESSERA_MM_MODES": json.dumps(BULK_MODES),
        },
        name="matchmaking",
    )
    try:
        start_service(mm)
        async with open_stack(auth, mm, redis) as opened:
            yield opened
    finally:
        assert mm.terminate() == 0


async def stream(
    stack: Stack, requests: list[pb.CreateTicketRequest], metadata: Any
) -> list[pb.CreateTicketResult]:
    return [r async for r in stack.mm_stub.CreateTickets(iter(requests), metadata=metadata)]


async def test_create_tickets_answers_every_request_in_order(bulk: Stack) -> None:
    gs_md = await gameserver(bulk)
    (earlier,) = await stream(bulk, [request("5v5", "busy")], gs_md)
    taken = earlier.ticket
    nan = request("duel", "n1")
    nan.number_attributes["level"] = float("inf")
    requests = [
        request("5v5", "a1"),
        request("chess", "c1"),
        request("5v5"),
        request("duel", "d1", "d2"),
        request("5v5", "leader", "member"),  # a party the back end names, led by anyone
        request("5v5", "a1"),  # a1 is on the first ticket of this stream
        nan,
        request("5v5", "bad id"),
        request("5v5", "x", "x"),
        request("5v5", "busy"),
        request("5v5", "late", region="EU WEST"),
        request("5v5", "a2"),
    ]
    results = await stream(bulk, requests, gs_md)
    bad, exists = grpc.StatusCode.INVALID_ARGUMENT.value[0], grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert [(r.code, r.error.reason) for r in results] == [
        (0, ""),
        (bad, "UNKNOWN_MODE"),
        (bad, "EMPTY_PARTY"),
        (bad, "PARTY_TOO_LARGE"),
        (0, ""),
        (exists, "TICKET_EXISTS"),
        (bad, "NON_FINITE_ATTRIBUTE"),
        (bad, "BAD_PLAYER_ID"),
        (bad, "DUPLICATE_PLAYER"),
        (exists, "TICKET_EXISTS"),
        (bad, "BAD_REGION"),
        (0, ""),
    ]
    # The same messages and fields as the unary call's.
    assert "duel" in results[1].message and results[1].error.field == "mode"
    assert results[5].ticket.id == "" and results[0].ticket.id in results[5].message
    assert taken.id in results[9].message and results[9].error.field == "players"
    assert results[8].error.field == "players[1].player_id"
    created = [r.ticket for r in results if r.code == 0]
    assert [[p.player_id for p in t.players] for t in created] == [
        ["a1"],
        ["leader", "member"],
        ["a2"],
    ]
    for ticket in created:
        assert ticket.state == pb.TICKET_STATE_SEARCHING and ticket.expires_at_ms > 0
        got = await bulk.mm_stub.GetTicket(pb.GetTicketRequest(ticket_id=ticket.id), metadata=gs_md)
        assert got.players == ticket.players
    assert len(await bulk.redis.keys(Store.ticket_key("*"))) == 4  # 3 + the earlier one


async def test_create_tickets_is_for_services_only(bulk: Stack) -> None:
    _, md = await guest(bulk)
    # Refused when the call starts, before any request is read. (A request still
    # being written when the refusal arrives can fail on the client with INTERNAL,
    # a gRPC race: nothing is sent here.)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stream(bulk, [], md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert errors.detail_of(err.value).reason == "FORBIDDEN"
    assert await bulk.redis.keys(Store.ticket_key("*")) == []


async def test_a_large_stream_all_lands_and_is_matched(bulk: Stack) -> None:
    gs_md = await gameserver(bulk)
    requests = [request("duel", f"player-{i}") for i in range(5000)]
    pubsub = bulk.redis.pubsub()
    await pubsub.subscribe(Store.events_channel)
    results = await stream(bulk, requests, gs_md)
    assert [r.code for r in results] == [0] * 5000
    assert [r.ticket.players[0].player_id for r in results] == [f"player-{i}" for i in range(5000)]
    waiting = {r.ticket.id for r in results}
    deadline = time.monotonic() + 20
    while waiting and time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            state, *ids = message["data"].decode().split(" ")
            if int(state) == pb.TICKET_STATE_ASSIGNED:
                waiting -= set(ids)
    await pubsub.aclose()
    assert not waiting
    # Written in batches: fewer round trips than tickets.
    port = bulk.mm.ports["metrics_port"]
    batches = scrape(port, "tessera_matchmaking_create_batch_tickets_count")
    assert 0 < batches < 5000
    created = scrape(port, "tessera_matchmaking_tickets_total", 'mode="duel"', 'state="created"')
    assert created == 5000


async def test_a_cancelled_stream_leaves_only_whole_tickets(bulk: Stack) -> None:
    gs_md = await gameserver(bulk)
    requests = [request("5v5", f"player-{i}") for i in range(3000)]
    call = bulk.mm_stub.CreateTickets(iter(requests), metadata=gs_md)
    received = []
    async for result in call:
        received.append(result)
        if len(received) == 100:
            call.cancel()
            break
    await asyncio.sleep(0.5)
    keys = await bulk.redis.keys(Store.ticket_key("*"))
    assert 100 <= len(keys) <= 3000
    # The server stopped with the call: nothing more is created afterwards.
    await asyncio.sleep(0.5)
    assert len(await bulk.redis.keys(Store.ticket_key("*"))) == len(keys)
    pooled: list[bytes] = await bulk.redis.zrange(Store.pool_key("5v5"), 0, -1)  # type: ignore[assignment]
    pool = {Store.ticket_key(t.decode()).encode() for t in pooled}
    states: Counter[int] = Counter()
    for key in keys:
        fields: dict[bytes, bytes] = await bulk.redis.hgetall(key)  # type: ignore[assignment]
        assert {b"t", b"p", b"r", b"s", b"e", b"o"} <= fields.keys()
        ticket = pb.Ticket.FromString(fields[b"t"])
        (player,) = ticket.players
        assert fields[b"p"].decode() == player.player_id
        state = int(fields[b"s"])
        states[state] += 1
        owner = await bulk.redis.get(Store.player_key(player.player_id))
        if state == pb.TICKET_STATE_SEARCHING:  # waiting: pooled, holding its player
            assert key in pool and owner == ticket.id.encode()
        else:  # matched meanwhile: out of the pool, with its assignment
            assert state == pb.TICKET_STATE_ASSIGNED and b"a" in fields
            assert key not in pool and owner is None
    assert pool <= set(keys) and states[pb.TICKET_STATE_ASSIGNED] % 10 == 0
    # The service goes on.
    later = await stream(bulk, [request("5v5", f"later-{i}") for i in range(100)], gs_md)
    assert [r.code for r in later] == [0] * 100
    assert bulk.mm.alive()


async def test_a_player_twice_in_one_batch_gets_one_ticket(redis: Redis, database: Pool) -> None:
    """In the servicer itself (real Redis, no network): requests that are all available
    at once are read before the first write, so they form one batch."""
    service = Claims("backend", "sid", ("service",), 0, 0, "", "", "")
    servicer = MatchmakerServicer(
        Store(redis, RatingRecords(database)),
        {m.name: m for m in parse_modes(json.dumps(BULK_MODES))},
        lambda: service,
        Watchers(),
    )
    before = batch_sizes()

    async def requests() -> AsyncIterator[pb.CreateTicketRequest]:
        for player in ("a", "b", "a", "c", "b"):
            yield request("duel", player)

    context: Any = None  # a trusted caller's stream never touches its context
    results = [r async for r in servicer.CreateTickets(requests(), context)]
    exists = grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert [r.code for r in results] == [0, 0, exists, 0, exists]
    assert results[0].ticket.id in results[2].message
    assert results[2].error.reason == results[4].error.reason == "TICKET_EXISTS"
    assert len(await redis.keys(Store.ticket_key("*"))) == 3
    after = batch_sizes()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 5)  # one write of 5 tickets


def batch_sizes() -> tuple[float, float]:
    """This process's CreateTickets writes so far: (count, tickets)."""
    count = REGISTRY.get_sample_value("tessera_matchmaking_create_batch_tickets_count")
    total = REGISTRY.get_sample_value("tessera_matchmaking_create_batch_tickets_sum")
    return count or 0.0, total or 0.0


async def test_watches_past_the_limit_get_retry_info_and_other_calls_still_work(
    redis_server: LocalRedis,
    redis: Redis,
    database: Pool,
    database_url: str,
    start_service: Callable[[ServiceProcess], ServiceProcess],
) -> None:
    env = {"TESSERA_MM_MAX_WATCHES": "3"}
    with running(redis_server.url, database_url, start_service, env) as (auth, mm):
        async with open_stack(auth, mm, redis) as stack:
            alice, md = await guest(stack)
            ticket = await stack.mm_stub.CreateTicket(request("5v5", alice), metadata=md)
            watch = pb.WatchAssignmentRequest(ticket_id=ticket.id)
            calls: list[Any] = [stack.mm_stub.WatchAssignment(watch, metadata=md) for _ in range(3)]
            for call in calls:
                first = await call.read()
                assert first.state == pb.TICKET_STATE_SEARCHING
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stack.mm_stub.WatchAssignment(watch, metadata=md).read()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            detail = errors.detail_of(err.value)
            assert detail.reason == "TOO_MANY_WATCHES" and detail.retry_after_s > 0
            bob, bob_md = await guest(stack)
            assert (await stack.mm_stub.CreateTicket(request("5v5", bob), metadata=bob_md)).id
            calls[0].cancel()
            await asyncio.sleep(0.2)
            again: Any = stack.mm_stub.WatchAssignment(watch, metadata=md)
            assert (await again.read()).id == ticket.id
            for call in [*calls, again]:
                call.cancel()


def test_watchers_count_each_stream_once_up_to_their_limit() -> None:
    watchers = Watchers(limit=2)
    first, second = watchers.add("t1"), watchers.add("t1")
    assert watchers.full() and watchers.count == 2
    watchers.remove("t1", first)
    watchers.remove("t1", first)  # a second removal of the same stream changes nothing
    assert watchers.count == 1 and not watchers.full()
    watchers.notify(["t1"])
    assert second.is_set() and not first.is_set()
