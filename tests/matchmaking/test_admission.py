"""Connect tokens from a real auth process, on behalf of players, naming the
match's destination."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from redis.asyncio import Redis

from tessera.auth.connect import open_connect_token
from tessera.auth.verifier import keys_from_proto
from tessera.common.localredis import LocalRedis
from tessera.common.process import ServiceProcess
from tessera.matchmaking.admission import AuthIssuer
from tessera.v1 import auth_pb2

pytestmark = pytest.mark.integration

SECRET = "admission-secret-0123456789"
SEALING_KEY = os.urandom(32)


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
            "TESSERA_CONNECT_KEY": base64.b64encode(SEALING_KEY).decode(),
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


async def test_tokens_name_the_destination_even_after_region_fallback(
    auth: ServiceProcess,
) -> None:
    issuer = AuthIssuer(auth.grpc_address, "matchmaking", SECRET)
    try:
        await issuer.login()
        zone = "inst-0123456789abcdef01234567"
        token = await issuer.issue("player-3", "mars", "session-3", world="arenas", zone=zone)
        assert (token.world, token.zone) == ("arenas", zone)
        assert list(token.relay_addresses) == ["127.0.0.1:7000"]
        keys = keys_from_proto(await issuer.stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest()))
        grant = open_connect_token(
            token.token,
            public_keys=keys,
            sealing_key=SEALING_KEY,
            relay_address="127.0.0.1:7000",
            now=time.time(),
        )
        assert (grant.player_id, grant.session_id) == ("player-3", "session-3")
        assert (grant.world, grant.zone) == ("arenas", zone)
        # Auth refuses a name that is not a DNS label; the issuer does not retry it.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await issuer.issue("player-3", "eu-west", world="arenas", zone="Not_A_Label")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await issuer.close()
