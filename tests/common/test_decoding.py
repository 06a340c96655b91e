"""Undecodable requests get INVALID_ARGUMENT (reason UNDECODABLE), on a real gRPC
server: unary calls before the servicer runs, streams at the bad message; a
response the servicer serialised itself goes out as is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tessera.common.config import ServerConfig
from tessera.common.errors import detail_of
from tessera.common.server import GrpcService
from tessera.v1 import relay_pb2, relay_pb2_grpc

GARBAGE = b"\xff\xff\xff"
SERIALISED = relay_pb2.ServerMessage(pong=relay_pb2.Pong(client_time_ms=7)).SerializeToString()


class Echo(relay_pb2_grpc.RelayServicer):
    """GetStatus names the relay; Play answers one Accepted per message it reads."""

    def __init__(self) -> None:
        self.calls = 0
        self.read: list[relay_pb2.ClientMessage] = []

    async def GetStatus(self, request: Any, context: Any) -> relay_pb2.RelayStatus:
        self.calls += 1
        return relay_pb2.RelayStatus(relay_id="echo")

    async def Play(
        self, request_iterator: AsyncIterator[relay_pb2.ClientMessage], context: Any
    ) -> AsyncIterator[Any]:
        async for message in request_iterator:
            self.read.append(message)
            yield relay_pb2.ServerMessage(accepted=relay_pb2.Accepted())
            yield SERIALISED  # a response the servicer serialised itself


@pytest.fixture
async def served() -> AsyncIterator[tuple[Echo, grpc.aio.Channel]]:
    config = ServerConfig(
        name="echo",
        host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        redis_url="redis://127.0.0.1:1",
        log_level="warning",
        shutdown_grace_s=0.1,
    )
    service = GrpcService(config)
    echo = Echo()  # type: ignore[abstract]  # Kick and ListSessions answer UNIMPLEMENTED
    service.add(relay_pb2_grpc.add_RelayServicer_to_server, echo, "tessera.v1.Relay")
    await service.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}")
    yield echo, channel
    await channel.close(None)
    await service.server.stop(None)


async def test_an_undecodable_unary_request_never_reaches_the_servicer(
    served: tuple[Echo, grpc.aio.Channel],
) -> None:
    echo, channel = served
    call = channel.unary_unary("/tessera.v1.Relay/GetStatus", None, None)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(GARBAGE, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "the request is not a valid tessera.v1.GetRelayStatusRequest"
    assert detail_of(err.value).reason == "UNDECODABLE"
    assert echo.calls == 0
    reply = relay_pb2.RelayStatus.FromString(await call(b"", timeout=5))
    assert reply.relay_id == "echo" and echo.calls == 1


async def test_an_undecodable_stream_message_ends_the_stream_with_invalid_argument(
    served: tuple[Echo, grpc.aio.Channel],
) -> None:
    echo, channel = served
    good = relay_pb2.ClientMessage(ping=relay_pb2.Ping(client_time_ms=1)).SerializeToString()
    call = channel.stream_stream("/tessera.v1.Relay/Play", None, None)(
        iter([good, GARBAGE, good]), timeout=5
    )
    answers = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for answer in call:
            answers.append(answer)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail_of(err.value).reason == "UNDECODABLE"
    assert len(echo.read) == 1  # nothing after the bad message
    assert answers == [
        relay_pb2.ServerMessage(accepted=relay_pb2.Accepted()).SerializeToString(),
        SERIALISED,
    ]
