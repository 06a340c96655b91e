"""Connect tokens from a real auth process, on behalf of players."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator

import grpc
import pytest
from redis.asyncio import Redis

from tessera.common.localredis import LocalRedis
from tessera.common.process import ServiceProcess
from tessera.matchmaking.admission import AuthIssuer

pytestmark = pytest.mark.integration

SECRET = "admission-secret-0123456789"


@pytest.fixture
def auth(
    redis_server: LocalRedis,
    redis: Redis,
    start_service: Callable[[ServiceProcess], ServiceProcess],
) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        "tessera.auth",
        {
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_REDIS_URL": redis_server.url,
            "TESSERA_AUTH_GENERATE_KEYS": "true",
            "TESSERA_CONNECT_KEY": base64.b64encode(os.urandom(32)).decode(),
            "TESSERA_AUTH_SERVICE_CLIENTS": f"matchmaking={SECRET}",
            "TESSERA_AUTH_RELAYS": "default=127.0.0.1:7000;eu-west=127.0.0.1:7001",
        },
        name="auth",
    )
    start_service(process)
    yield process
    process.terminate()


async def test_tokens_for_players_with_region_fallback(auth: ServiceProcess) -> None:
    issuer = AuthIssuer(auth.grpc_address, "matchmaking", SECRET)
    try:
        await issuer.login()
        eu = await issuer.issue("player-1", "eu-west", "session-1")
        assert eu.player_id == "player-1"
        assert list(eu.relay_addresses) == ["127.0.0.1:7001"]
        assert eu.token and len(eu.client_to_server_key) == 32
        # A match region auth has no relays for gets the default relays.
        elsewhere = await issuer.issue("player-2", "mars")
        assert list(elsewhere.relay_addresses) == ["127.0.0.1:7000"]
    finally:
        await issuer.close()


async def test_wrong_secret_fails_at_login(auth: ServiceProcess) -> None:
    issuer = AuthIssuer(auth.grpc_address, "matchmaking", "not-the-secret-0123456789")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await issuer.login()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await issuer.close()
