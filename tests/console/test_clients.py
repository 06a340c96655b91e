"""The console's gRPC calls when nothing answers: a relay that is down shows as
such, a kick that no relay answered is an error, not "no session"."""

from __future__ import annotations

import pytest

from tessera.authclient.credentials import ServiceCredentials
from tessera.common.process import free_port
from tessera.console.clients import Clients


def nowhere() -> ServiceCredentials:
    """Credentials for an auth that does not run: a relay's status cannot be read."""
    return ServiceCredentials(f"127.0.0.1:{free_port()}", "console", "secret", timeout_s=0.5)


async def test_relays_that_do_not_answer() -> None:
    dead = f"127.0.0.1:{free_port()}"
    clients = Clients(relays=[dead], credentials=nowhere(), world="w")
    try:
        [row] = await clients.relay_rows()
        assert (row.address, row.up, row.sessions) == (dead, False, 0)
        with pytest.raises(ConnectionError, match="no relay answered the Kick"):
            await clients.kick("admin-token", "p1", "bye")
    finally:
        await clients.close()


async def test_no_relays_configured() -> None:
    clients = Clients(relays=[], credentials=nowhere(), world="w")
    try:
        assert await clients.relay_rows() == []
        assert await clients.kick("admin-token", "p1", "bye") == []
    finally:
        await clients.close()
