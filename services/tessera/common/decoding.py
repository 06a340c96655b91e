"""Undecodable requests get ``INVALID_ARGUMENT``, not gRPC's ``UNKNOWN``.

gRPC's Python server turns a request its deserializer cannot parse into
``UNKNOWN`` ("Unexpected DecodeError"), which reads as a server fault.
:func:`registering` wraps a generated ``add_*Servicer_to_server`` so every
method decodes with a deserializer that never raises: an undecodable unary
request is refused with ``INVALID_ARGUMENT`` (reason ``UNDECODABLE``) before the
servicer runs, and an undecodable message in a request stream ends that stream
(the servicer sees the client stop sending) with the same status. A servicer
may also yield a response it serialised itself (``bytes``), sent as is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from tessera.common.errors import DETAIL_KEY, abort
from tessera.v1 import common_pb2

Context = grpc.aio.ServicerContext[Any, Any]
REASON = "UNDECODABLE"


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request message that did not parse."""

    type_name: str

    @property
    def message(self) -> str:
        return f"the request is not a valid {self.type_name}"


def registering(add_to_server: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """``add_to_server`` registering decode-safe method handlers instead."""

    def add(servicer: Any, server: Any) -> None:
        add_to_server(servicer, _Registrar(server))

    return add


class _Registrar:
    """What a generated ``add_*Servicer_to_server`` calls, passing safe handlers on."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Skipped: the generated code registers the same handlers by name next."""

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        safe = {name: _safe(handler) for name, handler in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, safe),)
        )
        self._server.add_registered_method_handlers(service, safe)


def _safe(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    parse, serialize = handler.request_deserializer, handler.response_serializer
    assert parse is not None and serialize is not None
    args = {"request_deserializer": _decoder(parse), "response_serializer": _encoder(serialize)}
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary), **args)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_unary_stream(handler.unary_stream), **args)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_streaming(handler.stream_unary), **args)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(_stream_stream(handler.stream_stream), **args)


def _decoder(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    type_name = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
    name = type_name.full_name if type_name is not None else "message"

    def decode(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return Undecodable(name)

    return decode


def _encoder(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """``serialize``, passing a response the servicer serialised itself (bytes) as is."""

    def encode(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)

    return encode


async def _refuse(context: Context, bad: Undecodable) -> None:
    await abort(context, grpc.StatusCode.INVALID_ARGUMENT, bad.message, reason=REASON)


def _unary(behavior: Any) -> Any:
    async def call(request: Any, context: Context) -> Any:
        if isinstance(request, Undecodable):
            await _refuse(context, request)
        return await behavior(request, context)

    return call


def _unary_stream(behavior: Any) -> Any:
    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await _refuse(context, request)
        async for response in behavior(request, context):
            yield response

    return call


def _checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
    """The request stream up to its first undecodable message, which ends it and
    sets the call's final status to INVALID_ARGUMENT."""

    async def iterate() -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                detail = common_pb2.ErrorDetail(reason=REASON).SerializeToString()
                context.set_trailing_metadata(((DETAIL_KEY, detail),))
                context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
                context.set_details(request.message)
                return
            yield request

    return iterate()


def _streaming(behavior: Any) -> Any:
    async def call(requests: AsyncIterator[Any], context: Context) -> Any:
        return await behavior(_checked(requests, context), context)

    return call


def _stream_stream(behavior: Any) -> Any:
    async def call(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for response in behavior(_checked(requests, context), context):
            yield response

    return call
