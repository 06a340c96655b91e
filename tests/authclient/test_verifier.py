"""Verifier and AuthInterceptor, on a real grpc.aio server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tessera.auth.keys import SigningKey
from tessera.auth.store import AuthStore
from tessera.authclient.bearer import bearer_metadata
from tessera.authclient.verifier import AuthInterceptor, Verifier, current_claims
from tessera.common import errors
from tessera.common import store as common_store
from tessera.harness.redis import LocalRedis
from tessera.wire import access_token
from tessera.wire.access_token import Claims, TokenError

KEY = SigningKey.generate()
NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def token_for(sid: str = "s1", roles: tuple[str, ...] = ("player",), exp: int = 900) -> str:
    claims = Claims(
        sub="acc1",
        sid=sid,
        roles=roles,
        iat=int(NOW),
        exp=int(NOW) + exp,
        iss="tessera",
        aud="tessera",
        kid=KEY.kid,
    )
    return access_token.encode(claims, KEY.private_key)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(clock: Clock) -> Verifier:
    return Verifier({KEY.kid: KEY.public_key}, clock=clock)


def reason(verifier: Verifier, token: str, roles: tuple[str, ...] = ()) -> str:
    with pytest.raises(TokenError) as info:
        verifier.verify(token, roles=roles)
    return info.value.reason


def test_verify_and_cache_still_checks_expiry(verifier: Verifier, clock: Clock) -> None:
    token = token_for(exp=60)
    assert verifier.verify(token).sub == "acc1"
    assert verifier.verify(token).sub == "acc1"  # cached
    clock.now += 70
    assert reason(verifier, token) == "EXPIRED"


def test_revocation_applies_to_cached_tokens(verifier: Verifier, clock: Clock) -> None:
    token = token_for(sid="s9")
    verifier.verify(token)
    verifier.revoke("s9", NOW + 1000)
    assert reason(verifier, token) == "REVOKED"
    assert verifier.verify(token_for(sid="other")).sid == "other"
    clock.now += 1001
    verifier.prune()
    assert not verifier.is_revoked("s9")


def test_roles_checked_on_cached_tokens(verifier: Verifier) -> None:
    token = token_for(roles=("player",))
    verifier.verify(token)
    assert reason(verifier, token, ("admin",)) == "FORBIDDEN"
    assert verifier.verify(token, roles=("admin", "player")).sub == "acc1"


def test_key_change_drops_cache(verifier: Verifier) -> None:
    token = token_for()
    verifier.verify(token)
    new = SigningKey.generate()
    verifier.set_keys({new.kid: new.public_key})
    assert reason(verifier, token) == "UNKNOWN_KEY"


def test_invalid_tokens_are_not_cached(verifier: Verifier) -> None:
    token = token_for()
    h, p, _ = token.split(".")
    forged = f"{h}.{p}.{'A' * 86}"
    assert reason(verifier, forged) == "BAD_SIGNATURE"
    assert reason(verifier, forged) == "BAD_SIGNATURE"


def test_cache_is_bounded(clock: Clock) -> None:
    verifier = Verifier({KEY.kid: KEY.public_key}, clock=clock, cache_size=3)
    for i in range(10):
        verifier.verify(token_for(sid=f"s{i}"))
    assert len(verifier._cache) <= 3


# A protected test service with all four method kinds, plus one open method.


async def _whoami(request: bytes, context: Any) -> bytes:
    claims = current_claims()
    return f"{claims.sub}/{claims.sid}/{','.join(claims.roles)}".encode()


async def _count(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for i in range(int(request)):
        yield f"{current_claims().sub}:{i}".encode()


async def _count_by_write(request: bytes, context: Any) -> None:
    await context.write(current_claims().sub.encode())


async def _join(requests: AsyncIterator[bytes], context: Any) -> bytes:
    parts = [r async for r in requests]
    return current_claims().sub.encode() + b"|" + b",".join(parts)


async def _echo(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for r in requests:
        yield current_claims().sid.encode() + r


async def _open(request: bytes, context: Any) -> bytes:
    try:
        current_claims()
    except RuntimeError:
        return b"anonymous"
    return b"claims leaked"


HANDLERS = {
    "WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami),
    "Admin": grpc.unary_unary_rpc_method_handler(_whoami),
    "Count": grpc.unary_stream_rpc_method_handler(_count),
    "CountByWrite": grpc.unary_stream_rpc_method_handler(_count_by_write),
    "Join": grpc.stream_unary_rpc_method_handler(_join),
    "Echo": grpc.stream_stream_rpc_method_handler(_echo),
    "Open": grpc.unary_unary_rpc_method_handler(_open),
}


@pytest.fixture
async def server(verifier: Verifier) -> AsyncIterator[str]:
    interceptor = AuthInterceptor(
        verifier,
        allow=("/tessera.test.Protected/Open",),
        roles={"/tessera.test.Protected/Admin": ("admin",)},
    )
    srv = grpc.aio.server(interceptors=[interceptor])
    srv.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("tessera.test.Protected", HANDLERS),)
    )
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield f"127.0.0.1:{port}"
    await srv.stop(None)


@pytest.fixture
async def channel(server: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server) as ch:
        yield ch


def method(channel: grpc.aio.Channel, name: str, kind: str = "unary_unary") -> Any:
    return getattr(channel, kind)(f"/tessera.test.Protected/{name}")


async def rejected(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_all_method_kinds_see_the_claims(channel: grpc.aio.Channel) -> None:
    md = bearer_metadata(token_for(sid="s7"))
    assert await method(channel, "WhoAmI")(b"", metadata=md) == b"acc1/s7/player"
    got = [r async for r in method(channel, "Count", "unary_stream")(b"3", metadata=md)]
    assert got == [b"acc1:0", b"acc1:1", b"acc1:2"]
    got = [r async for r in method(channel, "CountByWrite", "unary_stream")(b"", metadata=md)]
    assert got == [b"acc1"]
    joined = await method(channel, "Join", "stream_unary")(iter([b"a", b"b"]), metadata=md)
    assert joined == b"acc1|a,b"
    echoed = [r async for r in method(channel, "Echo", "stream_stream")(iter([b"x"]), metadata=md)]
    assert echoed == [b"s7x"]


async def test_allow_list_needs_no_token(channel: grpc.aio.Channel) -> None:
    assert await method(channel, "Open")(b"") == b"anonymous"


@pytest.mark.parametrize("kind_name", [("unary_unary", "WhoAmI"), ("unary_stream", "Count")])
async def test_missing_token_is_unauthenticated(
    channel: grpc.aio.Channel, kind_name: tuple[str, str]
) -> None:
    kind, name = kind_name
    call = method(channel, name, kind)(b"1")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if kind == "unary_unary":
            await call
        else:
            [r async for r in call]
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization" in (info.value.details() or "")
    assert errors.detail_of(info.value).reason == "TOKEN_MISSING"


async def test_bad_expired_revoked_and_forbidden(
    channel: grpc.aio.Channel, verifier: Verifier, clock: Clock
) -> None:
    whoami = method(channel, "WhoAmI")
    err = await rejected(whoami(b"", metadata=bearer_metadata("not.a.token")))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert errors.detail_of(err).reason == "TOKEN_MALFORMED"

    err = await rejected(method(channel, "Admin")(b"", metadata=bearer_metadata(token_for())))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "admin" in (err.details() or "")
    admin = bearer_metadata(token_for(roles=("player", "admin")))
    assert await method(channel, "Admin")(b"", metadata=admin) == b"acc1/s1/player,admin"

    verifier.revoke("s1", NOW + 900)
    err = await rejected(whoami(b"", metadata=admin))
    assert errors.detail_of(err).reason == "TOKEN_REVOKED"
    assert "revoked" in (err.details() or "")

    clock.now += 2000
    err = await rejected(whoami(b"", metadata=bearer_metadata(token_for(sid="s2"))))
    assert errors.detail_of(err).reason == "TOKEN_EXPIRED"
    assert "expired" in (err.details() or "")


def test_current_claims_outside_an_rpc() -> None:
    with pytest.raises(RuntimeError, match="allow-list"):
        current_claims()


@pytest.mark.integration
async def test_revocation_feed_survives_a_redis_restart(tmp_path: Path) -> None:
    server = LocalRedis(tmp_path)
    server.start()
    verifier = Verifier({KEY.kid: KEY.public_key})
    client = common_store.connect(server.url)
    try:
        await verifier.start(server.url, timeout_s=10)
        auth_store = AuthStore(client)
        await auth_store.revoke_session("before", until=time.time() + 60, now=time.time())
        await _eventually(lambda: verifier.is_revoked("before"), 2.0)
        server.restart()
        await auth_store.revoke_session("after", until=time.time() + 60, now=time.time())
        await _eventually(lambda: verifier.is_revoked("after"), 10.0)
    finally:
        await verifier.close()
        await client.aclose()
        server.stop()


async def _eventually(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
