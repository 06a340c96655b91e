"""gRPC errors with a machine-readable :class:`ErrorDetail` trailer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import grpc

from tessera.v1 import common_pb2

DETAIL_KEY = "tessera-error-bin"
# Status messages are cut to this many characters, so input echoed into one
# (a name, an id) can never make a status larger than gRPC's metadata limit.
MAX_MESSAGE_CHARS = 200


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str,
    field: str = "",
    retry_after_s: float = 0.0,
    metadata: Mapping[str, str] | None = None,
) -> NoReturn:
    """Abort the RPC with ``code`` and ``message`` (cut to MAX_MESSAGE_CHARS); attach
    an ErrorDetail trailer."""
    detail = common_pb2.ErrorDetail(
        reason=reason, field=field, retry_after_s=retry_after_s, metadata=metadata
    ).SerializeToString()
    context.set_trailing_metadata(((DETAIL_KEY, detail),))
    await context.abort(code, bounded(message))
    raise AssertionError("unreachable")  # context.abort always raises


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text``, cut to ``limit`` characters (the cut marked with an ellipsis)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def detail_of(error: grpc.aio.AioRpcError) -> common_pb2.ErrorDetail:
    """The ErrorDetail of a failed call (empty if the server sent none)."""
    metadata: Any = error.trailing_metadata() or ()  # grpc-stubs types this loosely
    for key, value in metadata:
        if key == DETAIL_KEY and isinstance(value, bytes):
            return common_pb2.ErrorDetail.FromString(value)
    return common_pb2.ErrorDetail()
