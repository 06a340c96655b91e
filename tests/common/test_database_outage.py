"""Which errors count as a PostgreSQL outage, and the interceptor over a real
PostgreSQL that stops (under a running auth: tests/auth/test_integration.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from tessera.common import errors
from tessera.common.database import connect
from tessera.common.database_outage import DatabaseOutageInterceptor, is_outage
from tessera.common.process import free_port
from tessera.harness.postgres import LocalPostgres


@pytest.mark.parametrize(
    "err",
    [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    ],
)
def test_connection_errors_are_outages(err: Exception) -> None:
    assert is_outage(err)


@pytest.mark.parametrize(
    "err",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.PostgresSyntaxError("syntax error"),
        asyncpg.DataError("invalid input"),
        ValueError("bad input"),
    ],
)
def test_query_errors_are_not(err: Exception) -> None:
    assert not is_outage(err)


async def test_socket_errors_count_only_from_inside_asyncpg() -> None:
    with pytest.raises(OSError) as refused:
        await asyncpg.connect(f"postgresql://u@127.0.0.1:{free_port()}/db", timeout=5)
    assert is_outage(refused.value)
    for err in (ConnectionRefusedError("redis"), TimeoutError("elsewhere")):
        try:
            raise err
        except OSError as raised:
            assert not is_outage(raised)


@pytest.fixture
async def guarded(postgres: LocalPostgres) -> AsyncIterator[grpc.aio.Channel]:
    """A gRPC server behind the interceptor whose methods query ``postgres``:
    Query (unary), Rows (server streaming, one row before its query) and Broken
    (a query error, not an outage)."""
    pool = await connect(postgres.url(), max_size=2, timeout_s=5)

    async def query(request: bytes, context: Any) -> bytes:
        return str(await pool.fetchval("SELECT 1")).encode()

    async def rows(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"first"
        yield str(await pool.fetchval("SELECT 2")).encode()

    async def broken(request: bytes, context: Any) -> bytes:
        return str(await pool.fetchval("SELECT no_such_column")).encode()

    handlers = {
        "Query": grpc.unary_unary_rpc_method_handler(query),
        "Rows": grpc.unary_stream_rpc_method_handler(rows),
        "Broken": grpc.unary_unary_rpc_method_handler(broken),
    }
    server = grpc.aio.server(interceptors=[DatabaseOutageInterceptor()])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)
    await pool.close()


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    with LocalPostgres() as server:
        yield server


def unavailable_count(method: str) -> float:
    value = REGISTRY.get_sample_value("tessera_database_unavailable_total", {"method": method})
    return value or 0.0


async def test_the_interceptor_maps_outages_and_passes_the_rest(
    postgres: LocalPostgres, guarded: grpc.aio.Channel
) -> None:
    query = guarded.unary_unary("/t.T/Query", None, None)
    rows = guarded.unary_stream("/t.T/Rows", None, None)
    broken = guarded.unary_unary("/t.T/Broken", None, None)
    assert await query(b"") == b"1"
    assert [r async for r in rows(b"")] == [b"first", b"2"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await broken(b"")
    assert info.value.code() == grpc.StatusCode.UNKNOWN

    before = unavailable_count("/t.T/Rows")
    postgres.halt()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await query(b"")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert errors.detail_of(info.value).reason == "DATABASE_UNAVAILABLE"
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for row in rows(b""):
            received.append(row)
    assert received == [b"first"]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "PostgreSQL unavailable" in (info.value.details() or "")
    assert unavailable_count("/t.T/Rows") == before + 1
