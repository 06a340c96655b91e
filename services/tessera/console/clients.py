"""The console's gRPC calls: relay status and Kick, zone Drain, auth Login and
BanAccount. Relay status goes with the console's own service credentials; the
admin actions (Kick, Drain, BanAccount) with the acting admin's access token.

Protos stay here: callers get plain rows and values back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from tessera.authclient.bearer import bearer_metadata
from tessera.authclient.credentials import ServiceCredentials
from tessera.console.frame import RelayRow
from tessera.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    relay_pb2,
    relay_pb2_grpc,
    zone_pb2,
    zone_pb2_grpc,
)

TIMEOUT_S = 2.0
# Auth makes a login from a failing address wait up to 10 s
# (TESSERA_AUTH_ADDRESS_DELAY_MAX_S), and every console login shares its address.
LOGIN_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Login:
    """A successful auth Login: the account, its access token and roles."""

    account_id: str
    access_token: str
    expires_at: int
    roles: tuple[str, ...]


class Clients:
    """One channel per relay and to auth, opened once; zone channels per call."""

    def __init__(
        self, *, relays: Sequence[str], credentials: ServiceCredentials, world: str
    ) -> None:
        self.world = world
        self.credentials = credentials
        self._relays = {a: credentials.channel_to(a) for a in relays}
        self._auth = credentials.channel

    async def relay_rows(self) -> list[RelayRow]:
        """Every configured relay's id and open sessions (``up`` False if it did not answer)."""
        return list(await asyncio.gather(*(self._relay(a, c) for a, c in self._relays.items())))

    async def _relay(self, address: str, channel: grpc.aio.Channel) -> RelayRow:
        stub: Any = relay_pb2_grpc.RelayStub(channel)
        try:
            s = await stub.GetStatus(relay_pb2.GetRelayStatusRequest(), timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return RelayRow(address, "", 0, up=False)
        return RelayRow(address, s.relay_id, sum(s.sessions.values()), up=True)

    async def kick(self, token: str, player: str, reason: str) -> list[str]:
        """Ask every relay, with the admin's access ``token``, to close ``player``'s
        session; the addresses that did. Raises ConnectionError only when no relay
        answered."""

        async def one(address: str, channel: grpc.aio.Channel) -> bool | None:
            stub: Any = relay_pb2_grpc.RelayStub(channel)
            request = relay_pb2.KickRequest(player_id=player, reason=reason)
            try:
                reply = await stub.Kick(request, metadata=bearer_metadata(token), timeout=TIMEOUT_S)
                return bool(reply.kicked)
            except grpc.aio.AioRpcError:
                return None

        addresses = list(self._relays)
        results = await asyncio.gather(*(one(a, self._relays[a]) for a in addresses))
        if addresses and all(r is None for r in results):
            raise ConnectionError("no relay answered the Kick")
        return [a for a, kicked in zip(addresses, results, strict=True) if kicked]

    async def drain(self, token: str, address: str, target: str, deadline_s: float) -> int:
        """Drain the zone at ``address`` into ``target`` with the admin's access
        ``token``; the entities still to hand away."""
        async with self.credentials.zone_channel(address) as channel:
            stub: Any = zone_pb2_grpc.ZoneStub(channel)
            request = zone_pb2.DrainRequest(
                deadline_s=deadline_s, target=common_pb2.ZoneRef(world=self.world, zone=target)
            )
            reply = await stub.Drain(request, metadata=bearer_metadata(token), timeout=TIMEOUT_S)
            return int(reply.remaining)

    async def login(self, username: str, password: str) -> Login:
        """Auth's password login; raises :class:`grpc.aio.AioRpcError` when refused."""
        stub: Any = auth_pb2_grpc.AuthStub(self._auth)
        s = await stub.Login(
            auth_pb2.LoginRequest(username=username, password=password), timeout=LOGIN_TIMEOUT_S
        )
        return Login(s.account_id, s.access_token, int(s.access_expires_at), tuple(s.roles))

    async def ban(self, token: str, account_id: str, reason: str, until: int) -> int:
        """Auth's BanAccount with the admin's access ``token``; the sessions it revoked.
        Raises :class:`grpc.aio.AioRpcError` when refused."""
        stub: Any = auth_pb2_grpc.AuthStub(self._auth)
        request = auth_pb2.BanAccountRequest(account_id=account_id, reason=reason, until=until)
        reply = await stub.BanAccount(request, metadata=bearer_metadata(token), timeout=TIMEOUT_S)
        return int(reply.revoked_sessions)

    async def close(self) -> None:
        for channel in self._relays.values():
            await channel.close(None)
        await self.credentials.close()
