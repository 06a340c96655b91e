"""Wrapping the behavior of a gRPC method handler, whatever its kind.

gRPC picks how to run a behavior by inspecting it (coroutine function, async
generator function), so a wrapper must be a real ``async def`` of the kind it
wraps: one for methods with a single response, one for streaming responses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

Behavior = Callable[..., Any]


def rewrap(
    handler: grpc.RpcMethodHandler[Any, Any],
    single: Callable[[Behavior], Behavior],
    streaming: Callable[[Behavior], Behavior],
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its behavior wrapped by ``single`` (one response) or
    ``streaming`` (a response stream)."""
    serializers: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(single(handler.unary_unary), **serializers)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(single(handler.stream_unary), **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **serializers)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **serializers)


async def responses(behavior: Behavior, request: Any, context: Any) -> AsyncIterator[Any]:
    """Run a streaming behavior: an async generator's items, or a coroutine that
    writes with ``context.write()`` (nothing to yield)."""
    result = behavior(request, context)
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        await result
