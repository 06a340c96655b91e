"""PostgreSQL outages as gRPC UNAVAILABLE instead of UNKNOWN.

When the database goes away under a running service (a restart, a failover, a
network cut), asyncpg raises connection errors from whatever query the RPC was
running; unhandled, gRPC reports them as UNKNOWN with no hint. The interceptor
here ends such a call with UNAVAILABLE, the message ``PostgreSQL unavailable:
<cause>``, an ErrorDetail reason ``DATABASE_UNAVAILABLE`` with a retry hint, and
counts it in ``tessera_database_unavailable_total``. The pool reconnects by
itself once the database is back, so the service recovers without a restart.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from prometheus_client import Counter

from tessera.common import errors
from tessera.common.handlers import Behavior, responses, rewrap

log = logging.getLogger(__name__)

UNAVAILABLE = Counter(
    "tessera_database_unavailable",
    "RPCs ended with UNAVAILABLE because PostgreSQL could not be reached",
    ["method"],
)

REASON = "DATABASE_UNAVAILABLE"
RETRY_AFTER_S = 1.0

# Errors that mean "the server is not there" rather than "the query was wrong":
# SQLSTATE class 08 (connection exceptions), the shutdown and start-up states of
# class 57P, and a server out of connection slots.
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def is_outage(err: BaseException) -> bool:
    """True if ``err`` means PostgreSQL could not be reached: an asyncpg connection
    error, or a socket error or timeout raised while inside asyncpg (connecting a
    pool connection, waiting on a query)."""
    if isinstance(err, _OUTAGE_ERRORS):
        return True
    if isinstance(err, OSError | TimeoutError):
        return any(
            str(frame.f_globals.get("__name__", "")).startswith("asyncpg")
            for frame, _ in traceback.walk_tb(err.__traceback__)
        )
    return False


class DatabaseOutageInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Turns a PostgreSQL outage inside any RPC into UNAVAILABLE (see the module)."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        # None for a method no servicer has (the stubs do not say so): left to gRPC.
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[return-value]
        return _guarded(handler, handler_call_details.method)


async def _unavailable(
    context: grpc.aio.ServicerContext[Any, Any], method: str, err: Exception
) -> None:
    UNAVAILABLE.labels(method=method).inc()
    cause = f"{type(err).__name__}: {err}"
    log.warning("PostgreSQL unavailable", extra={"method": method, "error": cause})
    await errors.abort(
        context,
        grpc.StatusCode.UNAVAILABLE,
        f"PostgreSQL unavailable ({cause}); retry shortly",
        reason=REASON,
        retry_after_s=RETRY_AFTER_S,
    )


def _guarded(
    handler: grpc.RpcMethodHandler[Any, Any], method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with outages turned into UNAVAILABLE. gRPC chooses how to
    run a behavior by its kind, so each guard is a coroutine or an async generator
    like the behavior it wraps."""

    def single(behavior: Behavior) -> Behavior:
        async def guard(request: Any, context: Any) -> Any:
            try:
                return await behavior(request, context)
            except Exception as err:
                if not is_outage(err):
                    raise
                await _unavailable(context, method, err)

        return guard

    def stream(behavior: Behavior) -> Behavior:
        async def guard(request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in responses(behavior, request, context):
                    yield item
            except Exception as err:
                if not is_outage(err):
                    raise
                await _unavailable(context, method, err)

        return guard

    return rewrap(handler, single, stream)
