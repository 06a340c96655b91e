"""Which errors count as a PostgreSQL outage (the interceptor's end to end behaviour
under a running auth is in tests/auth/test_integration.py)."""

from __future__ import annotations

import asyncpg
import pytest

from tessera.common.database_outage import is_outage
from tessera.common.process import free_port


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
