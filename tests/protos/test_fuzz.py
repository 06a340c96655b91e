"""Every RPC of every service, fuzzed from the proto descriptors against real
processes (auth, zone, relay, matchmaking on one Redis and one PostgreSQL):
empty, extreme, non-finite, huge and undecodable requests each get a precise
status within a deadline (UNAVAILABLE or ABORTED only with retry info), an
error message of bounded length, retry info on RESOURCE_EXHAUSTED (but for
gRPC's own message size limit); every server still answers health afterwards,
and nothing hostile was stored (entity state finite and inside the world,
checkpoints' strings bounded, the operator not locked out). Play streams racing
in their first message get precise statuses too."""

from __future__ import annotations

import asyncio
import base64
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tessera.authclient.bearer import bearer_metadata
from tessera.client.login import guest_connect_token
from tessera.common.errors import detail_of
from tessera.common.process import ServiceProcess, free_udp_port
from tessera.common.store import WorldKeys
from tessera.common.store import connect as redis_connect
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import relay_login_env, service_clients
from tessera.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    matchmaking_pb2,
    relay_pb2,
    zone_pb2,
)

from .fuzzcases import Case, cases, message_class

pytestmark = pytest.mark.integration

WORLD = "fuzz"
SECRET = "fuzz-service-secret-0123456789"
ADMIN_PASSWORD = "correct horse battery staple"
SEED = 20
CASES_PER_METHOD = 48
DEADLINE_S = 10.0
STREAM_READ_S = 2.0
MAX_MESSAGE = 200
# gRPC's own answer to a message over the servers' size limit (docs/ARCHITECTURE.md).
TOO_LARGE = re.compile(r"^(SERVER: )?Received message larger than max \(\d+ vs\. \d+\)$")
# What a client's mistake may get.
PRECISE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# Not the client's mistake (a race lost, a dependency down): precise when they
# say when to retry.
RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
SERVICES = {"Auth": auth_pb2, "Zone": zone_pb2, "Relay": relay_pb2, "Matchmaker": matchmaking_pb2}
# Requests that get past the first checks, so the mutated field is the one judged.
BASELINES: dict[str, Message] = {
    "Zone/Join": zone_pb2.JoinRequest(
        player_id="fuzz-player", relay_id="fuzz-relay", spawn=common_pb2.Vec3(x=1, y=0, z=1)
    ),
    "Zone/Leave": zone_pb2.LeaveRequest(player_id="fuzz-player", relay_id="fuzz-relay"),
    "Zone/SetBounds": zone_pb2.SetBoundsRequest(
        bounds=common_pb2.Bounds(min_x=-100, min_z=-100, max_x=100, max_z=100), map_version=0
    ),
    "Zone/ZoneLink": zone_pb2.ZoneLinkUp(hello=zone_pb2.LinkHello(relay_id="fuzz-relay")),
    "Auth/Login": auth_pb2.LoginRequest(username="fuzz-user", password="fuzz password 0123"),
    "Auth/Register": auth_pb2.RegisterRequest(username="fuzz-new", password="fuzz password 0123"),
    "Auth/BanAccount": auth_pb2.BanAccountRequest(account_id="nobody", reason="fuzz"),
}


def baseline(stack: Stack, name: str) -> Message | None:
    if name == "Matchmaker/CreateTicket":
        return matchmaking_pb2.CreateTicketRequest(
            mode="duel",
            players=[matchmaking_pb2.TicketPlayer(player_id=stack.admin_id)],
            regions=[matchmaking_pb2.RegionLatency(region="default", latency_ms=20)],
        )
    return BASELINES.get(name)


# Stream calls whose first message must be a valid opening: sent before each case.
OPENINGS: dict[str, Message] = {
    "Zone/ZoneLink": zone_pb2.ZoneLinkUp(hello=zone_pb2.LinkHello(relay_id="fuzz-relay")),
}


@dataclass
class Stack:
    processes: dict[str, ServiceProcess]
    redis_url: str
    admin: tuple[str, str]  # (username, password)
    admin_id: str


def methods() -> Iterator[MethodDescriptor]:
    for name, module in SERVICES.items():
        yield from module.DESCRIPTOR.services_by_name[name].methods


def method_id(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}/{method.name}"


def _process(module: str, env: dict[str, str], name: str) -> ServiceProcess:
    return ServiceProcess(module, env, name=name).start()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Stack]:
    redis = LocalRedis(tmp_path_factory.mktemp("fuzz-redis"))
    redis.start()
    connect_key = base64.b64encode(os.urandom(32)).decode()
    udp_port = free_udp_port()
    common = {
        "TESSERA_REDIS_URL": redis.url,
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_GRPC_PORT": "0",
        "TESSERA_METRICS_PORT": "0",
        "TESSERA_HOST": "127.0.0.1",
        "TESSERA_WORLD": WORLD,
        "TESSERA_SHUTDOWN_GRACE_S": "1",
    }
    auth_env = {
        **common,
        "TESSERA_AUTH_GENERATE_KEYS": "true",
        "TESSERA_CONNECT_KEY": connect_key,
        "TESSERA_AUTH_RELAYS": f"default=127.0.0.1:{udp_port}",
        "TESSERA_AUTH_REGISTRATIONS_PER_ADDRESS": "100000",
        "TESSERA_AUTH_LOGIN_FAILS_PER_ADDRESS": "100000",
        "TESSERA_AUTH_SERVICE_CLIENTS": service_clients(f"matchmaking={SECRET}"),
        "TESSERA_AUTH_ARGON2_TIME_COST": "1",
        "TESSERA_AUTH_ARGON2_MEMORY_KIB": "64",
        "TESSERA_AUTH_ARGON2_PARALLELISM": "1",
    }
    running: dict[str, ServiceProcess] = {}
    try:
        first = _process("tessera.auth", auth_env, "auth")
        running["auth"] = first
        first.wait_serving(60.0)
        admin_id = asyncio.run(_register(first.grpc_address))
        first.terminate()
        admin_env = {**auth_env, "TESSERA_AUTH_ADMIN_ACCOUNTS": admin_id}
        auth = _process("tessera.auth", admin_env, "auth")
        running["auth"] = auth
        auth.wait_serving(60.0)  # the zone takes auth's keys from its address
        running["zone"] = _process(
            "tessera.zone",
            {
                **common,
                "TESSERA_ZONE": "zone-a",
                "TESSERA_ZONE_BOUNDS": "-100,-100,100,100",
                "TESSERA_WORLD_BOUNDS": "-100,-100,100,100",
                "TESSERA_TICK_HZ": "10",
                "TESSERA_AUTH_ADDRESS": auth.grpc_address,
            },
            "zone",
        )
        running["relay"] = _process(
            "tessera.relay",
            {
                **common,
                "TESSERA_UDP_HOST": "127.0.0.1",
                "TESSERA_UDP_PORT": str(udp_port),
                "TESSERA_AUTH_ADDRESS": auth.grpc_address,
                "TESSERA_CONNECT_KEY": connect_key,
                **relay_login_env(),
            },
            "relay",
        )
        running["matchmaking"] = _process(
            "tessera.matchmaking",
            {
                **common,
                "TESSERA_AUTH_ADDRESS": auth.grpc_address,
                "TESSERA_MM_CLIENT_ID": "matchmaking",
                "TESSERA_MM_CLIENT_SECRET": SECRET,
            },
            "matchmaking",
        )
        for proc in running.values():
            proc.wait_serving(60.0)
        yield Stack(running, redis.url, ("fuzz-admin", ADMIN_PASSWORD), admin_id)
    finally:
        for proc in running.values():
            proc.terminate()
        redis.stop()


async def _register(address: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        stub: Any = auth_pb2_grpc.AuthStub(channel)
        session = await stub.Register(
            auth_pb2.RegisterRequest(username="fuzz-admin", password=ADMIN_PASSWORD)
        )
        return str(session.account_id)


async def _admin_metadata(stack: Stack) -> tuple[tuple[str, str], ...]:
    """A fresh admin session (roles player and admin): every RPC's credentials today."""
    async with grpc.aio.insecure_channel(stack.processes["auth"].grpc_address) as channel:
        stub: Any = auth_pb2_grpc.AuthStub(channel)
        user, password = stack.admin
        session = await stub.Login(auth_pb2.LoginRequest(username=user, password=password))
        assert "admin" in session.roles
        return bearer_metadata(session.access_token)


async def _service_metadata(stack: Stack) -> tuple[tuple[str, str], ...]:
    """A service session (the matchmaker's client): the zone's RPCs take only
    ``service`` (or ``admin`` for a few), so its cases reach the servicer."""
    async with grpc.aio.insecure_channel(stack.processes["auth"].grpc_address) as channel:
        stub: Any = auth_pb2_grpc.AuthStub(channel)
        request = auth_pb2.ServiceLoginRequest(client_id="matchmaking", client_secret=SECRET)
        session = await stub.ServiceLogin(request)
        return bearer_metadata(session.access_token)


SERVED_BY = {"Auth": "auth", "Zone": "zone", "Relay": "relay", "Matchmaker": "matchmaking"}


@dataclass
class Answer:
    code: grpc.StatusCode
    message: str
    error: grpc.aio.AioRpcError | None


async def _call(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    case: Case,
    metadata: tuple[tuple[str, str], ...],
) -> Answer:
    path = f"/{method.containing_service.full_name}/{method.name}"
    opening = OPENINGS.get(method_id(method))
    try:
        if not method.client_streaming and not method.server_streaming:
            await channel.unary_unary(path, None, None)(
                case.payload, timeout=DEADLINE_S, metadata=metadata
            )
            return Answer(grpc.StatusCode.OK, "", None)
        if method.client_streaming:
            sent = [opening.SerializeToString()] if opening is not None else []
            call: Any = channel.stream_stream(path, None, None)(
                iter([*sent, case.payload]), timeout=DEADLINE_S, metadata=metadata
            )
        else:
            call = channel.unary_stream(path, None, None)(
                case.payload, timeout=DEADLINE_S, metadata=metadata
            )
        return await _drain(call, message_class(method.output_type))
    except grpc.aio.AioRpcError as err:
        return Answer(err.code(), err.details() or "", err)


async def _drain(call: Any, output: type[Message]) -> Answer:
    """Read a response stream until it ends, or leave it open (a live stream is
    not a hang) after STREAM_READ_S. An error reported in-band (a result's
    ``message``, as CreateTickets sends) is judged like a status message."""
    longest = ""

    async def read() -> None:
        nonlocal longest
        async for raw in call:
            text = getattr(output.FromString(raw), "message", "")
            if isinstance(text, str) and len(text) > len(longest):
                longest = text

    try:
        await asyncio.wait_for(read(), STREAM_READ_S)
    except TimeoutError:
        call.cancel()
    return Answer(grpc.StatusCode.OK, longest, None)


async def test_racing_first_play_messages_get_precise_statuses(stack: Stack) -> None:
    """Play streams racing with one connect token, and with several tokens of one
    player, each end with a precise status (one of them admitted at most per token);
    the relay still serves afterwards."""
    auth = stack.processes["auth"].grpc_address
    tokens = [await guest_connect_token(auth, "fuzz-racer-0123456789") for _ in range(3)]
    plays = [tokens[0]] * 6 + tokens[1:]
    async with grpc.aio.insecure_channel(stack.processes["relay"].grpc_address) as channel:
        play = channel.stream_stream("/tessera.v1.Relay/Play", None, None)

        async def race(token: auth_pb2.ConnectToken) -> Answer:
            messages = [
                relay_pb2.ClientMessage(connect=relay_pb2.Connect(connect_token=token.token)),
                relay_pb2.ClientMessage(ping=relay_pb2.Ping(id=1)),
            ]
            call: Any = play(iter([m.SerializeToString() for m in messages]), timeout=DEADLINE_S)
            try:
                return await _drain(call, relay_pb2.ServerMessage)
            except grpc.aio.AioRpcError as err:
                return Answer(err.code(), err.details() or "", err)

        answers = await asyncio.gather(*(race(t) for t in plays))
        health: Any = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S)
    problems = [p for a in answers for p in _judge(a)]
    assert not problems, "\n".join(problems)
    assert sum(a.code == grpc.StatusCode.OK for a in answers[:6]) <= 1  # one use per token
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("method", list(methods()), ids=method_id)
async def test_every_answer_is_precise_and_bounded(stack: Stack, method: MethodDescriptor) -> None:
    name = method_id(method)
    zone = method.containing_service.name == "Zone"
    metadata = await (_service_metadata(stack) if zone else _admin_metadata(stack))
    process = stack.processes[SERVED_BY[method.containing_service.name]]
    problems = []
    async with grpc.aio.insecure_channel(process.grpc_address) as channel:
        for case in cases(
            method, baseline=baseline(stack, name), seed=SEED, limit=CASES_PER_METHOD
        ):
            answer = await _call(channel, method, case, metadata)
            problems += [f"{name} {case.label}: {p}" for p in _judge(answer)]
        health: Any = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert not problems, "\n".join(problems)


def _judge(answer: Answer) -> list[str]:
    detail = detail_of(answer.error) if answer.error is not None else None
    retry = detail is not None and detail.retry_after_s > 0
    if answer.code not in PRECISE and not (answer.code in RETRY and retry):
        return [f"{answer.code.name}: {answer.message[:MAX_MESSAGE]}"]
    found = []
    if len(answer.message) > MAX_MESSAGE:
        found.append(f"message of {len(answer.message)} chars: {answer.message[:80]}…")
    if detail is not None and len(detail.SerializeToString()) > 2 * MAX_MESSAGE:
        found.append(f"error detail of {detail.ByteSize()} bytes")
    if (
        answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        and not retry
        and not TOO_LARGE.search(answer.message)
    ):
        found.append(f"RESOURCE_EXHAUSTED without retry info: {answer.message}")
    return found


async def test_nothing_hostile_was_stored(stack: Stack) -> None:
    """After the fuzz: the zone's entities are finite and inside the world, every
    checkpoint's strings are bounded, and the operator's map version 0 is still
    accepted."""
    metadata = await _service_metadata(stack)
    async with grpc.aio.insecure_channel(stack.processes["zone"].grpc_address) as channel:
        status = await channel.unary_unary(
            "/tessera.v1.Zone/GetStatus",
            request_serializer=zone_pb2.GetStatusRequest.SerializeToString,
            response_deserializer=zone_pb2.ZoneStatus.FromString,
        )(zone_pb2.GetStatusRequest(include_entities=True), timeout=DEADLINE_S, metadata=metadata)
    assert status.bounds.max_x - status.bounds.min_x > 0
    assert all(-100 <= x <= 100 for x in status.sample_x)
    assert all(-100 <= z <= 100 for z in status.sample_z)
    assert all(len(p) <= 128 for p in status.entity_players)
    # Versions move forward only the operator's way: no fuzzed version locked it out.
    async with grpc.aio.insecure_channel(stack.processes["zone"].grpc_address) as channel:
        await channel.unary_unary(
            "/tessera.v1.Zone/SetBounds",
            request_serializer=zone_pb2.SetBoundsRequest.SerializeToString,
            response_deserializer=zone_pb2.SetBoundsResponse.FromString,
        )(
            zone_pb2.SetBoundsRequest(bounds=status.bounds, map_version=0),
            timeout=DEADLINE_S,
            metadata=metadata,
        )
    redis = redis_connect(stack.redis_url)
    try:
        keys = WorldKeys(WORLD)
        raw = await redis.hgetall(keys.checkpoints)
    finally:
        await redis.aclose()
    state_class: Any = message_class(zone_pb2.EntityState.DESCRIPTOR)
    for value in raw.values():
        state = state_class.FromString(value)
        assert len(state.relay_id) <= 253 and len(state.player_id) <= 128
        p = state.position
        assert all(math.isfinite(v) and abs(v) <= 1e4 for v in (p.x, p.y, p.z)), state
