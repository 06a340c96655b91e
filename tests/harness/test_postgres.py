"""LocalPostgres: halt() is an outage, not a reset: start() brings the same data
back on the same port."""

from __future__ import annotations

import asyncpg

from tessera.harness.postgres import LocalPostgres


async def test_halt_then_start_keeps_data_and_port() -> None:
    with LocalPostgres() as server:
        url = server.create_database("kept")
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
        await conn.close()
        port = server.port
        server.halt()
        assert server.proc is None and server.data.exists()
        server.start()
        assert server.port == port
        conn = await asyncpg.connect(url)
        assert await conn.fetchval("SELECT v FROM t") == 7
        await conn.close()
    assert not server.dir.exists()
