"""The console's gRPC calls when nothing answers: a relay that is down shows as
such, a kick that no relay answered is an error, not "no session"."""

from __future__ import annotations

import pytest

from tessera.common.process import free_port
from tessera.console.clients import Clients


async def test_relays_that_do_not_answer() -> None:
    dead = f"127.0.0.1:{free_port()}"
    clients = Clients(relays=[dead], auth_address=f"127.0.0.1:{free_port()}", world="w")
    try:
        [row] = await clients.relay_rows()
        assert (row.address, row.up, row.sessions) == (dead, False, 0)
        with pytest.raises(ConnectionError, match="no relay answered the Kick"):
            await clients.kick("p1", "bye")
    finally:
        await clients.close()


async def test_no_relays_configured() -> None:
    clients = Clients(relays=[], auth_address=f"127.0.0.1:{free_port()}", world="w")
    try:
        assert await clients.relay_rows() == []
        assert await clients.kick("p1", "bye") == []
    finally:
        await clients.close()
