"""Auth test helpers: an auth service in-process on a real gRPC server, real Redis and
real PostgreSQL."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from tessera.auth.__main__ import assemble
from tessera.auth.config import AuthConfig
from tessera.authclient.bearer import bearer_metadata
from tessera.common.config import Env, ServerConfig
from tessera.common.database import Pool
from tessera.common.server import GrpcService
from tessera.harness.redis import LocalRedis
from tessera.v1 import auth_pb2, auth_pb2_grpc

SEALING_KEY = os.urandom(32)
# Cheap argon2 for tests; the benchmark measures the real default cost.
CHEAP = {
    "AUTH_ARGON2_TIME_COST": "1",
    "AUTH_ARGON2_MEMORY_KIB": "64",
    "AUTH_ARGON2_PARALLELISM": "1",
}
BASE = {
    "AUTH_GENERATE_KEYS": "true",
    "CONNECT_KEY": base64.b64encode(SEALING_KEY).decode(),
    "AUTH_RELAYS": "default=127.0.0.1:7777;eu-west=10.0.0.1:7777,10.0.0.2:7777",
    "AUTH_SERVICE_CLIENTS": "matchmaking=mm-secret-0123456789",
    "AUTH_LOGIN_FAILS_PER_ADDRESS": "1000",
    "AUTH_REGISTRATIONS_PER_ADDRESS": "1000",
    **CHEAP,
}


@dataclass
class RunningAuth:
    service: GrpcService
    channel: grpc.aio.Channel
    stub: auth_pb2_grpc.AuthAsyncStub

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.service.grpc_port}"


StartAuth = Callable[..., Awaitable[RunningAuth]]


@pytest.fixture
async def start_auth(
    redis: Redis, redis_server: LocalRedis, database: Pool, database_url: str
) -> AsyncIterator[StartAuth]:
    """Start an auth service with BASE settings plus overrides (TESSERA_ prefix left out)."""
    running: list[RunningAuth] = []

    async def start(**overrides: str) -> RunningAuth:
        settings = {**BASE, "DATABASE_URL": database_url, **overrides}
        env = Env({f"TESSERA_{k}": v for k, v in settings.items()})
        server = ServerConfig(
            name="auth",
            host="127.0.0.1",
            grpc_port=0,
            metrics_port=0,
            redis_url=redis_server.url,
            log_level="warning",
            shutdown_grace_s=0.5,
        )
        service = await assemble(server, AuthConfig.from_env(env))
        await service.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}")
        auth = RunningAuth(service, channel, auth_pb2_grpc.AuthStub(channel))
        running.append(auth)
        return auth

    yield start
    for auth in running:
        await auth.channel.close(None)
        await auth.service.stop()


@pytest.fixture
async def auth(start_auth: StartAuth) -> RunningAuth:
    return await start_auth()


async def fails(call: Any) -> grpc.aio.AioRpcError:
    """The error ``call`` fails with."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def service_metadata(auth: RunningAuth) -> tuple[tuple[str, str], ...]:
    """Call metadata with a service access token (client credentials of BASE)."""
    service = await auth.stub.ServiceLogin(
        auth_pb2.ServiceLoginRequest(client_id="matchmaking", client_secret="mm-secret-0123456789")
    )
    return bearer_metadata(service.access_token)
