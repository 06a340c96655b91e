"""Relay connect tokens for other players, issued by the auth service to a service.

A service (the matchmaker) logs in to auth with client credentials (role
``service``, :class:`.credentials.ServiceCredentials`) and asks
``Auth.IssueConnectTokens`` for many players at once (in
calls of at most :data:`BATCH` requests, sent concurrently), on behalf of each
player and naming the destination world and zone so the relay joins the player
there. Auth answers every request on its own: a token, or the refusal the single
``IssueConnectToken`` call would give. The access token is renewed once more
if auth rejects it. Requests for a region auth has
no relays for are asked again, in one more call, for auth's default relays; such
a region is remembered for a minute, and its requests go to the default relays
at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc

from tessera.authclient.bearer import bearer_metadata
from tessera.authclient.credentials import ServiceCredentials
from tessera.common import tracing
from tessera.v1 import auth_pb2, auth_pb2_grpc

# Requests per IssueConnectTokens call: auth's limit.
BATCH = 512
# How long a region auth knows no relays for is asked for the default relays directly.
UNKNOWN_REGION_TTL_S = 60.0


class TokenRefused(Exception):
    """Auth issued no token for one request of a batch: its status, message and reason."""

    def __init__(self, error: auth_pb2.ConnectTokenError) -> None:
        super().__init__(error.message)
        self.code = error.code
        self.message = error.message
        self.reason = error.detail.reason
        self.field = error.detail.field


TokenOrError = auth_pb2.ConnectToken | Exception


class AuthIssuer:
    """Connect tokens from the auth service at ``address``."""

    def __init__(
        self, address: str, client_id: str, client_secret: str, *, timeout_s: float = 5.0
    ) -> None:
        self.credentials = ServiceCredentials(
            address, client_id, client_secret, timeout_s=timeout_s
        )
        self.channel = self.credentials.channel
        self.stub = auth_pb2_grpc.AuthStub(self.channel)
        self.timeout_s = timeout_s
        self._unknown_regions: dict[str, float] = {}  # region -> until (monotonic)

    async def login(self) -> None:
        """Log in now, so bad credentials fail at start-up rather than at the first match."""
        await self.credentials.login()

    async def issue_many(
        self, requests: Sequence[auth_pb2.ConnectTokenRequest]
    ) -> list[TokenOrError]:
        """One result per request, in order: the token, or why there is none
        (:class:`TokenRefused` for auth's answer to that request, the call's error
        when a whole call failed)."""
        now = time.monotonic()
        self._unknown_regions = {r: t for r, t in self._unknown_regions.items() if t > now}
        requests = [
            _without_region(r) if r.region in self._unknown_regions else r for r in requests
        ]
        results = await self._batches(requests)
        retry = [
            i
            for i, result in enumerate(results)
            if isinstance(result, TokenRefused)
            and result.reason == "UNKNOWN_REGION"
            and requests[i].region
        ]
        if retry:
            for i in retry:
                self._unknown_regions[requests[i].region] = now + UNKNOWN_REGION_TTL_S
            fallback = [_without_region(requests[i]) for i in retry]
            for i, result in zip(retry, await self._batches(fallback), strict=True):
                results[i] = result
        return results

    async def issue(
        self, player_id: str, region: str, session_id: str = "", *, world: str = "", zone: str = ""
    ) -> auth_pb2.ConnectToken:
        """One player's token (a batch of one); raises auth's refusal or the call's error."""
        (result,) = await self.issue_many(
            [
                auth_pb2.ConnectTokenRequest(
                    player_id=player_id,
                    region=region,
                    session_id=session_id,
                    world=world,
                    zone=zone,
                )
            ]
        )
        if isinstance(result, Exception):
            raise result
        return result

    async def _batches(
        self, requests: Sequence[auth_pb2.ConnectTokenRequest]
    ) -> list[TokenOrError]:
        chunks = [requests[i : i + BATCH] for i in range(0, len(requests), BATCH)]
        replies = await asyncio.gather(*(self._call(c) for c in chunks), return_exceptions=True)
        out: list[TokenOrError] = []
        for chunk, reply in zip(chunks, replies, strict=True):
            if isinstance(reply, auth_pb2.IssueConnectTokensResponse):
                if len(reply.results) == len(chunk):
                    out += [_result(r) for r in reply.results]
                else:
                    short = RuntimeError(f"auth answered {len(reply.results)} of {len(chunk)}")
                    out += [short] * len(chunk)
            elif isinstance(reply, Exception):
                out += [reply] * len(chunk)
            else:
                raise reply  # cancelled
        return out

    async def _call(
        self, chunk: Sequence[auth_pb2.ConnectTokenRequest]
    ) -> auth_pb2.IssueConnectTokensResponse:
        request = auth_pb2.IssueConnectTokensRequest(requests=chunk)
        token = await self.credentials.access_token()
        try:
            return await self.stub.IssueConnectTokens(
                request,
                metadata=bearer_metadata(token) + tracing.metadata(),
                timeout=self.timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
        token = await self.credentials.access_token(renew=True, rejected=token)
        return await self.stub.IssueConnectTokens(
            request, metadata=bearer_metadata(token) + tracing.metadata(), timeout=self.timeout_s
        )

    async def close(self) -> None:
        await self.credentials.close()


def _result(result: auth_pb2.ConnectTokenResult) -> TokenOrError:
    if result.WhichOneof("result") == "token":
        return result.token
    return TokenRefused(result.error)


def _without_region(request: auth_pb2.ConnectTokenRequest) -> auth_pb2.ConnectTokenRequest:
    """The request for auth's default relays."""
    out = auth_pb2.ConnectTokenRequest()
    out.CopyFrom(request)
    out.ClearField("region")
    return out
