"""The access table and its interceptor, on a real grpc.aio server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tessera.authclient import access
from tessera.authclient.access import current_claims
from tessera.authclient.bearer import bearer_metadata
from tessera.authclient.verifier import Verifier
from tessera.common import errors
from tessera.v1 import relay_pb2, zone_pb2

from .conftest import NOW, Clock, token_for


def test_a_table_names_every_rpc_of_its_service() -> None:
    relay = relay_pb2.DESCRIPTOR.services_by_name["Relay"]
    rules: dict[str, access.Rule] = {
        "Play": access.OPEN,
        "GetStatus": access.roles("service"),
        "ListSessions": access.roles("service"),
        "Kick": access.roles("admin"),
    }
    assert access.table(relay, rules)["/tessera.v1.Relay/Kick"] == frozenset({"admin"})
    with pytest.raises(ValueError, match=r"without a rule \['Kick'\]"):
        access.table(relay, {k: v for k, v in rules.items() if k != "Kick"})
    with pytest.raises(ValueError, match=r"rules for no RPC \['Join'\]"):
        access.table(relay, {**rules, "Join": access.OPEN})
    zone = zone_pb2.DESCRIPTOR.services_by_name["Zone"]
    with pytest.raises(ValueError, match=r"tessera\.v1\.Zone"):
        access.table(zone, rules)


@pytest.mark.parametrize("names", [(), ("root",), ("player", "superuser")])
def test_roles_are_the_known_three(names: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="roles must be some of"):
        access.roles(*names)


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
    "Unruled": grpc.unary_unary_rpc_method_handler(_whoami),
}


@pytest.fixture
async def server(verifier: Verifier) -> AsyncIterator[str]:
    rules: dict[str, access.Rule] = {
        f"/tessera.test.Protected/{name}": access.ROLES for name in HANDLERS
    }
    rules["/tessera.test.Protected/Open"] = access.OPEN
    rules["/tessera.test.Protected/Admin"] = access.roles("admin")
    del rules["/tessera.test.Protected/Unruled"]
    interceptor = access.AccessInterceptor(verifier, rules)
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


async def test_open_methods_need_no_token(channel: grpc.aio.Channel) -> None:
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
    assert info.value.details() == access.UNAUTHENTICATED_MESSAGE
    assert errors.detail_of(info.value).reason == "UNAUTHENTICATED"


async def test_every_bad_token_gets_the_same_answer_and_a_wrong_role_is_denied(
    channel: grpc.aio.Channel, verifier: Verifier, clock: Clock
) -> None:
    whoami = method(channel, "WhoAmI")
    admin = bearer_metadata(token_for(roles=("player", "admin")))
    assert await method(channel, "Admin")(b"", metadata=admin) == b"acc1/s1/player,admin"
    err = await rejected(method(channel, "Admin")(b"", metadata=bearer_metadata(token_for())))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "admin" in (err.details() or "")

    answers = []
    for md in (
        bearer_metadata("not.a.token"),
        (("authorization", "Basic abc"),),
        bearer_metadata(token_for(sid="s2")[:-4] + "AAAA"),
    ):
        answers.append(await rejected(whoami(b"", metadata=md)))
    verifier.revoke("s1", NOW + 900)
    answers.append(await rejected(whoami(b"", metadata=admin)))
    clock.now += 2000
    answers.append(await rejected(whoami(b"", metadata=bearer_metadata(token_for(sid="s3")))))
    for err in answers:
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.details() == access.UNAUTHENTICATED_MESSAGE
        assert errors.detail_of(err).reason == "UNAUTHENTICATED"


async def test_a_method_without_a_rule_is_refused_even_with_a_token(
    channel: grpc.aio.Channel,
) -> None:
    admin = bearer_metadata(token_for(roles=("player", "service", "admin")))
    err = await rejected(method(channel, "Unruled")(b"", metadata=admin))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "no access rule" in (err.details() or "")


def test_current_claims_outside_an_rpc() -> None:
    with pytest.raises(RuntimeError, match="OPEN"):
        current_claims()
