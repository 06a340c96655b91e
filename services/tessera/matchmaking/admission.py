"""Admission: relay connect tokens for assigned players, issued by the auth service.

The matchmaker logs in to auth with client credentials (role ``service``) and
asks ``Auth.IssueConnectToken`` on behalf of each assigned player, naming the
match's destination world and zone so the relay joins the player there. The
access token is renewed before it expires, and once more if auth rejects it. A
match region auth has no relays for falls back to auth's default relays.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from tessera.auth.verifier import bearer_metadata
from tessera.common import errors
from tessera.v1 import auth_pb2, auth_pb2_grpc

# Renew the service session this long before its access token expires.
RENEW_BEFORE_S = 60.0


class AuthIssuer:
    """Connect tokens from the auth service at ``address``."""

    def __init__(
        self,
        address: str,
        client_id: str,
        client_secret: str,
        *,
        timeout_s: float = 5.0,
        in_flight: int = 64,
    ) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = auth_pb2_grpc.AuthStub(self.channel)
        self.client_id = client_id
        self.client_secret = client_secret
        self.timeout_s = timeout_s
        self._session: auth_pb2.Session | None = None
        self._lock = asyncio.Lock()
        self._in_flight = asyncio.Semaphore(in_flight)

    async def _access_token(self, *, renew: bool = False) -> str:
        async with self._lock:
            session = self._session
            if renew or session is None or session.access_expires_at - RENEW_BEFORE_S < time.time():
                session = await self.stub.ServiceLogin(
                    auth_pb2.ServiceLoginRequest(
                        client_id=self.client_id, client_secret=self.client_secret
                    ),
                    timeout=self.timeout_s,
                )
                self._session = session
            return session.access_token

    async def login(self) -> None:
        """Log in now, so bad credentials fail at start-up rather than at the first match."""
        await self._access_token(renew=True)

    async def issue(
        self, player_id: str, region: str, session_id: str = "", *, world: str = "", zone: str = ""
    ) -> auth_pb2.ConnectToken:
        """A token admitting ``player_id`` to a relay of ``region`` that joins them
        into ``zone`` of ``world`` (empty: the relay's choice)."""
        request = auth_pb2.ConnectTokenRequest(
            region=region, player_id=player_id, session_id=session_id, world=world, zone=zone
        )
        try:
            return await self._issue(request)
        except grpc.aio.AioRpcError as err:
            if errors.detail_of(err).reason != "UNKNOWN_REGION":
                raise
        request.ClearField("region")
        return await self._issue(request)

    async def _issue(self, request: auth_pb2.ConnectTokenRequest) -> auth_pb2.ConnectToken:
        async with self._in_flight:
            return await self._issue_now(request)

    async def _issue_now(self, request: auth_pb2.ConnectTokenRequest) -> auth_pb2.ConnectToken:
        token = await self._access_token()
        try:
            return await self.stub.IssueConnectToken(
                request, metadata=bearer_metadata(token), timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
        token = await self._access_token(renew=True)
        return await self.stub.IssueConnectToken(
            request, metadata=bearer_metadata(token), timeout=self.timeout_s
        )

    async def close(self) -> None:
        await self.channel.close(None)
