"""Every RPC of every service, from the proto descriptors, against real running
servers (auth, matchmaking, relay, zone): no token -> UNAUTHENTICATED, a valid token
of a role the RPC's rule does not name -> PERMISSION_DENIED, a role it names ->
served (the servicer's own answer to an empty request). OPEN RPCs are served
without a token; health is open; reflection can be switched off."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tessera.auth.keys import KeyRing, SigningKey, write_key
from tessera.auth.servicer import RULES as AUTH_RULES
from tessera.authclient import access
from tessera.authclient.credentials import ServiceCredentials
from tessera.common import errors
from tessera.common.process import ServiceProcess
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import access_metadata, relay_login_env, service_clients
from tessera.matchmaking.servicer import RULES as MATCHMAKING_RULES
from tessera.relay.servicer import RULES as RELAY_RULES
from tessera.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    matchmaking_pb2,
    relay_pb2,
    relay_pb2_grpc,
    zone_pb2,
)
from tessera.zone.servicer import RULES as ZONE_RULES

pytestmark = pytest.mark.integration

SECRET = "matrix-secret-0123456789"
TABLES = {
    "tessera.v1.Auth": AUTH_RULES,
    "tessera.v1.Matchmaker": MATCHMAKING_RULES,
    "tessera.v1.Relay": RELAY_RULES,
    "tessera.v1.Zone": ZONE_RULES,
}
METHODS = [
    method
    for module in (auth_pb2, common_pb2, matchmaking_pb2, relay_pb2, zone_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


@dataclass
class Stack:
    addresses: dict[str, str]  # service full name -> gRPC address
    key: SigningKey
    auth: str

    def md(self, role: str) -> tuple[tuple[str, str], ...]:
        return access_metadata(self.key.kid, self.key.private_key, role)


def _env(redis_url: str, database_url: str) -> dict[str, str]:
    return {
        "TESSERA_REDIS_URL": redis_url,
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_HOST": "127.0.0.1",
        "TESSERA_GRPC_PORT": "0",
        "TESSERA_METRICS_PORT": "0",
        "TESSERA_SHUTDOWN_GRACE_S": "0.5",
        "TESSERA_WORLD": "matrix",
    }


@pytest.fixture(scope="module")
def stack(
    redis_server: LocalRedis, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    key_dir: Path = tmp_path_factory.mktemp("matrix-keys")
    write_key(key_dir, 0)
    key = KeyRing.from_directory(key_dir, overlap_s=3600).current(time.time())
    connect_key = base64.b64encode(os.urandom(32)).decode()
    env = _env(redis_server.url, database_url)
    auth = ServiceProcess(
        "tessera.auth",
        {
            **env,
            "TESSERA_AUTH_KEY_DIR": str(key_dir),
            "TESSERA_CONNECT_KEY": connect_key,
            "TESSERA_AUTH_SERVICE_CLIENTS": service_clients(f"matchmaking={SECRET}"),
            "TESSERA_AUTH_ARGON2_TIME_COST": "1",
            "TESSERA_AUTH_ARGON2_MEMORY_KIB": "64",
            "TESSERA_AUTH_ARGON2_PARALLELISM": "1",
        },
        name="auth",
    ).start()
    procs = [auth]
    try:
        auth.wait_serving(30.0)
        with_auth = {**env, "TESSERA_AUTH_ADDRESS": auth.grpc_address}
        mm = ServiceProcess(
            "tessera.matchmaking",
            {**with_auth, "TESSERA_MM_CLIENT_SECRET": SECRET, "TESSERA_MM_MATCHING": "false"},
            name="matchmaking",
        ).start()
        procs.append(mm)
        relay = ServiceProcess(
            "tessera.relay",
            {
                **with_auth,
                "TESSERA_CONNECT_KEY": connect_key,
                "TESSERA_UDP_HOST": "127.0.0.1",
                "TESSERA_UDP_PORT": "0",
                # Reflection off here: it must then not be served at all.
                "TESSERA_GRPC_REFLECTION": "false",
                **relay_login_env(),
            },
            name="relay",
        ).start()
        procs.append(relay)
        # The zone takes auth's keys from auth, as in a deployment.
        zone = ServiceProcess(
            "tessera.zone",
            {
                **with_auth,
                "TESSERA_ZONE": "matrix-0",
                "TESSERA_ZONE_BOUNDS": "-100,-100,100,100",
                "TESSERA_WORLD_BOUNDS": "-100,-100,100,100",
                "TESSERA_TICK_HZ": "10",
            },
            name="zone",
        ).start()
        procs.append(zone)
        mm.wait_serving(30.0)
        relay.wait_serving(30.0)
        zone.wait_serving(60.0)
        yield Stack(
            {
                "tessera.v1.Auth": auth.grpc_address,
                "tessera.v1.Matchmaker": mm.grpc_address,
                "tessera.v1.Relay": relay.grpc_address,
                "tessera.v1.Zone": zone.grpc_address,
            },
            key,
            auth.grpc_address,
        )
    finally:
        for proc in reversed(procs):
            proc.terminate(10.0)


async def call(
    channel: grpc.aio.Channel, method: MethodDescriptor, metadata: Any = ()
) -> grpc.aio.AioRpcError | None:
    """Call ``method`` with an empty request; its error, or None when it answered."""
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = ("stream" if method.client_streaming else "unary") + "_"
    kind += "stream" if method.server_streaming else "unary"
    stub = getattr(channel, kind)(
        path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_type.FromString,
    )
    # A request stream sends nothing: a refusal ends the call before any message is
    # read, and a client still writing would see its own send fail instead.
    request: Any = iter(()) if method.client_streaming else request_type()
    try:
        if method.server_streaming:
            responses = stub(request, metadata=metadata, timeout=10.0)
            async for _ in responses:
                responses.cancel()  # one answer is enough: it was served
                break
        else:
            await stub(request, metadata=metadata, timeout=10.0)
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.CANCELLED:
            return None
        return err
    return None


@pytest.fixture
async def channels(stack: Stack) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    opened = {name: grpc.aio.insecure_channel(a) for name, a in stack.addresses.items()}
    yield opened
    for channel in opened.values():
        await channel.close(None)


def test_every_service_has_a_table_and_every_rpc_a_rule() -> None:
    services = {
        s.full_name
        for module in (auth_pb2, common_pb2, matchmaking_pb2, relay_pb2, zone_pb2)
        for s in module.DESCRIPTOR.services_by_name.values()
    }
    assert services == set(TABLES)
    assert {f"/{m.containing_service.full_name}/{m.name}" for m in METHODS} == {
        name for table in TABLES.values() for name in table
    }


def _id(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}.{method.name}"


@pytest.mark.parametrize("method", METHODS, ids=_id)
async def test_rpc(
    method: MethodDescriptor, stack: Stack, channels: dict[str, grpc.aio.Channel]
) -> None:
    service = method.containing_service.full_name
    channel = channels[service]
    rule = TABLES[service][f"/{service}/{method.name}"]
    anonymous = await call(channel, method)
    if rule is access.OPEN:
        # Served: whatever the servicer says of an empty request, not the interceptor.
        assert anonymous is None or errors.detail_of(anonymous).reason not in (
            "UNAUTHENTICATED",
            "FORBIDDEN",
        ), anonymous
        return
    assert isinstance(rule, frozenset)
    assert anonymous is not None and anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    assert anonymous.details() == access.UNAUTHENTICATED_MESSAGE
    other_key = SigningKey.generate()
    forged = await call(
        channel, method, access_metadata(other_key.kid, other_key.private_key, *rule)
    )
    assert forged is not None and forged.code() == grpc.StatusCode.UNAUTHENTICATED
    assert forged.details() == access.UNAUTHENTICATED_MESSAGE
    for role in sorted(access.ROLES - rule):
        denied = await call(channel, method, stack.md(role))
        assert denied is not None and denied.code() == grpc.StatusCode.PERMISSION_DENIED, role
    for role in sorted(rule):
        served = await call(channel, method, stack.md(role))
        assert served is None or served.code() not in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        ), (role, served)


async def test_health_is_open_and_reflection_can_be_off(
    stack: Stack, channels: dict[str, grpc.aio.Channel]
) -> None:
    for channel in channels.values():
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5.0)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    async def services(channel: grpc.aio.Channel) -> list[str]:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in stub.ServerReflectionInfo(iter([listing]), timeout=5.0):
            return [s.name for s in reply.list_services_response.service]
        return []

    assert "tessera.v1.Auth" in await services(channels["tessera.v1.Auth"])
    # Asked without a request: a refused stream can end before a request is sent,
    # and grpc.aio then reports that send's failure (INTERNAL), not the status.
    relay = reflection_pb2_grpc.ServerReflectionStub(channels["tessera.v1.Relay"])
    refused = relay.ServerReflectionInfo(timeout=5.0)
    assert await refused.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_service_credentials_from_a_real_login(
    stack: Stack, channels: dict[str, grpc.aio.Channel]
) -> None:
    """A service logs in with its client id and secret and calls with the token it
    got; a player's real token is refused the same call."""
    credentials = ServiceCredentials(stack.auth, "matchmaking", SECRET)
    relay = credentials.channel_to(stack.addresses["tessera.v1.Relay"])
    try:
        stub: Any = relay_pb2_grpc.RelayStub(relay)
        listing = await stub.ListSessions(relay_pb2.ListSessionsRequest(), timeout=5.0)
        assert list(listing.sessions) == []
        auth: Any = auth_pb2_grpc.AuthStub(channels["tessera.v1.Auth"])
        guest = await auth.GuestLogin(auth_pb2.GuestLoginRequest(device_id="matrix-device-000001"))
        player = (("authorization", f"Bearer {guest.access_token}"),)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListSessions(relay_pb2.ListSessionsRequest(), metadata=player, timeout=5.0)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # Cutting a service off at once (OPERATIONS.md, rotating a secret): its
        # sessions are revoked, its token is refused within the revocation feed's
        # delay, and the client logs in again after the refusal.
        first = await credentials.access_token()
        await auth.RevokeSessions(
            auth_pb2.RevokeSessionsRequest(account_id="service:matchmaking"),
            metadata=stack.md("admin"),
        )
        deadline = time.monotonic() + 5.0
        while True:
            try:
                await stub.ListSessions(relay_pb2.ListSessionsRequest(), timeout=5.0)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED
                break
            assert time.monotonic() < deadline, "the revoked service token still served"
            await asyncio.sleep(0.05)
        await stub.ListSessions(relay_pb2.ListSessionsRequest(), timeout=5.0)
        assert await credentials.access_token() != first
    finally:
        await relay.close(None)
        await credentials.close()


async def test_wrong_service_secret_is_refused_at_login(stack: Stack) -> None:
    credentials = ServiceCredentials(stack.auth, "matchmaking", "not-the-secret-0123456789")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await credentials.login()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await credentials.close()
