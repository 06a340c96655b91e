"""ServiceCredentials' channels: every call carries the service's token, a call
made for someone else keeps its own, a refused token is dropped (real grpc.aio
server on 127.0.0.1 with the access interceptor; the session is set directly, so
no auth runs here: the login itself is in test_rpc_matrix.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tessera.auth.keys import SigningKey
from tessera.authclient import access
from tessera.authclient.bearer import bearer_metadata
from tessera.authclient.credentials import ServiceCredentials
from tessera.authclient.verifier import Verifier
from tessera.common.process import free_port
from tessera.harness.tokens import access_metadata
from tessera.v1 import auth_pb2

KEY = SigningKey.generate()


async def _whoami(request: bytes, context: Any) -> bytes:
    claims = access.current_claims()
    return f"{claims.sub}:{','.join(claims.roles)}".encode()


async def _whoami_stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield await _whoami(b"", context)


def _token(*roles: str, sub: str) -> str:
    (entry,) = access_metadata(KEY.kid, KEY.private_key, *roles, sub=sub)
    return entry[1].removeprefix("Bearer ")


@pytest.fixture
async def server() -> AsyncIterator[str]:
    rules: dict[str, access.Rule] = {
        "/tessera.test.Svc/WhoAmI": access.ROLES,
        "/tessera.test.Svc/Link": access.ROLES,
    }
    srv = grpc.aio.server(
        interceptors=[access.AccessInterceptor(Verifier({KEY.kid: KEY.public_key}), rules)]
    )
    handlers = {
        "WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami),
        "Link": grpc.stream_stream_rpc_method_handler(_whoami_stream),
    }
    srv.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("tessera.test.Svc", handlers),)
    )
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield f"127.0.0.1:{port}"
    await srv.stop(None)


def logged_in(token: str) -> ServiceCredentials:
    """Credentials whose session is ``token`` (auth's address leads nowhere)."""
    credentials = ServiceCredentials(f"127.0.0.1:{free_port()}", "svc", "secret", timeout_s=0.5)
    credentials._session = auth_pb2.Session(
        access_token=token, access_expires_at=int(time.time()) + 900
    )
    return credentials


async def test_calls_carry_the_service_token_unless_they_bring_their_own(server: str) -> None:
    credentials = logged_in(_token("service", sub="service:svc"))
    channel = credentials.channel_to(server)
    try:
        whoami = channel.unary_unary("/tessera.test.Svc/WhoAmI", None, None)
        assert await whoami(b"") == b"service:svc:service"
        admin = access_metadata(KEY.kid, KEY.private_key, "admin", sub="boss")
        assert await whoami(b"", metadata=admin) == b"boss:admin"
    finally:
        await channel.close(None)
        await credentials.close()


async def test_a_refused_token_is_dropped_and_the_next_call_logs_in(server: str) -> None:
    credentials = logged_in("not.a.token")
    channel = credentials.channel_to(server)
    try:
        whoami = channel.unary_unary("/tessera.test.Svc/WhoAmI", None, None)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await whoami(b"")
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert credentials._session is None
        # The next call logs in again: here auth is unreachable, and that is the error.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await whoami(b"")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close(None)
        await credentials.close()


async def test_a_link_channel_leaves_bidirectional_streams_to_bring_their_token(
    server: str,
) -> None:
    """The relay's ZoneLink channel: unary calls carry the token as on any channel;
    a bidirectional stream is not intercepted and brings the token itself."""
    credentials = logged_in(_token("service", sub="service:svc"))
    channel = credentials.link_channel(server)
    try:
        whoami = channel.unary_unary("/tessera.test.Svc/WhoAmI", None, None)
        assert await whoami(b"") == b"service:svc:service"
        link = channel.stream_stream("/tessera.test.Svc/Link", None, None)
        bare = link(None)
        await bare.write(b"")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await bare.read()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        own = link(None, metadata=bearer_metadata(await credentials.access_token()))
        await own.write(b"")
        assert await own.read() == b"service:svc:service"
        await own.done_writing()
    finally:
        await channel.close(None)
        await credentials.close()
