"""Connect-token opening with auth's keys: fetched from a stand-in Auth server,
cached for max_age_s, refreshed early after an unknown key."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tessera.auth.keys import SigningKey, raw_public_bytes
from tessera.authclient.connect import MIN_REFRESH_S, ConnectTokenOpener
from tessera.v1 import auth_pb2
from tessera.wire.access_token import b64url
from tessera.wire.connect_token import (
    ConnectGrant,
    ConnectTokenError,
    issue_connect_token,
    new_channel_key,
    new_token_id,
)

SEALING_KEY = os.urandom(32)
RELAY = "127.0.0.1:7777"


class KeyServer:
    """Auth's GetPublicKeys, answering with whatever keys the test publishes."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.max_age_s = 0
        self.calls = 0

    async def GetPublicKeys(
        self, request: auth_pb2.GetPublicKeysRequest, context: Any
    ) -> auth_pb2.PublicKeySet:
        self.calls += 1
        return auth_pb2.PublicKeySet(
            keys=[
                auth_pb2.PublicKey(
                    kid=k.kid, alg="EdDSA", crv="Ed25519", x=b64url(raw_public_bytes(k.public_key))
                )
                for k in self.keys
            ],
            max_age_s=self.max_age_s,
        )


@pytest.fixture
async def key_server() -> AsyncIterator[tuple[KeyServer, str]]:
    servicer = KeyServer()
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.GetPublicKeys,
        request_deserializer=auth_pb2.GetPublicKeysRequest.FromString,
        response_serializer=auth_pb2.PublicKeySet.SerializeToString,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("tessera.v1.Auth", {"GetPublicKeys": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture
async def opener(key_server: tuple[KeyServer, str]) -> AsyncIterator[ConnectTokenOpener]:
    tokens = ConnectTokenOpener(
        auth_address=key_server[1], sealing_key=SEALING_KEY, relay_address=RELAY
    )
    yield tokens
    await tokens.close()


def token(key: SigningKey, *, relay: str = RELAY, lifetime_s: int = 60) -> bytes:
    now = int(time.time())
    grant = ConnectGrant(
        token_id=new_token_id(),
        player_id="p1",
        session_id="s1",
        relay_addresses=(relay,),
        client_to_server_key=new_channel_key(),
        server_to_client_key=new_channel_key(),
        issued_at=now,
        expires_at=now + lifetime_s,
        timeout_s=10,
    )
    return issue_connect_token(grant, signing_key=key, sealing_key=SEALING_KEY)


def refusal(opener: ConnectTokenOpener, raw: bytes) -> str:
    with pytest.raises(ConnectTokenError) as info:
        opener.open(raw, time.time())
    return info.value.reason


async def test_refresh_loads_the_keys_and_their_max_age(
    key_server: tuple[KeyServer, str], opener: ConnectTokenOpener
) -> None:
    servicer, _ = key_server
    key = SigningKey.generate()
    servicer.keys, servicer.max_age_s = [key], 42
    await opener.refresh()
    assert list(opener.public_keys) == [key.kid]
    assert opener.max_age_s == 42.0
    assert opener.open(token(key), time.time()).player_id == "p1"
    servicer.max_age_s = 0  # auth names none: the default
    await opener.refresh()
    assert opener.max_age_s == 300.0


async def test_an_unknown_key_asks_for_an_early_refresh(
    key_server: tuple[KeyServer, str], opener: ConnectTokenOpener
) -> None:
    servicer, _ = key_server
    old, new = SigningKey.generate(), SigningKey.generate()
    servicer.keys = [old]
    await opener.refresh()
    fetched = opener.fetched_at
    assert not opener.due(fetched + 1.0)
    assert refusal(opener, token(new)) == "BAD_SIGNATURE"
    assert opener.refresh_wanted
    # Rate-limited: not before MIN_REFRESH_S after the last fetch.
    assert not opener.due(fetched + MIN_REFRESH_S - 0.1)
    assert opener.due(fetched + MIN_REFRESH_S + 0.1)
    servicer.keys = [old, new]
    await opener.refresh()
    assert not opener.due(opener.fetched_at + MIN_REFRESH_S + 0.1)  # the wish was met
    assert opener.open(token(new), time.time()).session_id == "s1"
    assert servicer.calls == 2


async def test_other_refusals_do_not_refresh(
    key_server: tuple[KeyServer, str], opener: ConnectTokenOpener
) -> None:
    servicer, _ = key_server
    key = SigningKey.generate()
    servicer.keys = [key]
    await opener.refresh()
    assert refusal(opener, token(key, relay="10.0.0.1:7777")) == "WRONG_RELAY"
    assert refusal(opener, token(key, lifetime_s=0)) == "EXPIRED"
    assert refusal(opener, b"garbage") == "MALFORMED"
    assert not opener.refresh_wanted
    # Past max_age_s the keys are due anyway.
    assert opener.due(opener.fetched_at + opener.max_age_s + 0.1)


async def test_refresh_raises_when_auth_is_unreachable() -> None:
    tokens = ConnectTokenOpener(
        auth_address="127.0.0.1:1", sealing_key=SEALING_KEY, relay_address=RELAY
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await tokens.refresh()
        assert tokens.public_keys == {} and tokens.due(time.monotonic())
    finally:
        await tokens.close()
