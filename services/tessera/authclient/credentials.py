"""A service's own credentials: auth's client-credentials login, renewed before expiry.

:class:`ServiceCredentials` logs in with ``Auth.ServiceLogin`` (a client id and
secret from the component's settings; the token carries role ``service``) and
logs in again :data:`RENEW_BEFORE_S` before the access token expires, or when a
callee rejected it. :meth:`ServiceCredentials.interceptors` puts the current
token on every call of a channel, so a caller opens its channel with them and
calls as usual. :func:`bearer_interceptors` does the same for any other
:class:`TokenSource` (the test harness's local minter).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

import grpc

from tessera.authclient.bearer import bearer_metadata
from tessera.common import tls
from tessera.v1 import auth_pb2, auth_pb2_grpc

# Renew the service session this long before its access token expires.
RENEW_BEFORE_S = 60.0


class TokenSource(Protocol):
    """Something that hands out a caller's current access token."""

    async def access_token(self) -> str: ...

    def rejected(self, token: str) -> None: ...


def bearer_interceptors(source: TokenSource, *, stream_stream: bool = True) -> list[Any]:
    """Client interceptors adding ``authorization: Bearer <token>`` to every call,
    or, without ``stream_stream``, to every call but bidirectional streams."""
    found: list[Any] = [_UnaryUnary(source), _UnaryStream(source), _StreamUnary(source)]
    return [*found, _StreamStream(source)] if stream_stream else found


class ServiceCredentials:
    """The session of service client ``client_id`` with the auth service at ``address``."""

    def __init__(
        self, address: str, client_id: str, client_secret: str, *, timeout_s: float = 5.0
    ) -> None:
        self.channel = tls.channel(address)
        self.stub = auth_pb2_grpc.AuthStub(self.channel)
        self.client_id = client_id
        self.client_secret = client_secret
        self.timeout_s = timeout_s
        self._session: auth_pb2.Session | None = None
        self._lock = asyncio.Lock()

    async def access_token(self, *, renew: bool = False, rejected: str = "") -> str:
        """The service's access token, logging in again when it is due, when asked
        to, or when it is still the ``rejected`` one (so concurrent calls that were
        all refused log in once)."""
        async with self._lock:
            session = self._session
            if (
                session is None
                or session.access_expires_at - RENEW_BEFORE_S < time.time()
                or (renew and rejected in ("", session.access_token))
            ):
                session = await self.stub.ServiceLogin(
                    auth_pb2.ServiceLoginRequest(
                        client_id=self.client_id, client_secret=self.client_secret
                    ),
                    timeout=self.timeout_s,
                )
                self._session = session
            return session.access_token

    async def login(self) -> None:
        """Log in now, so bad credentials fail at start-up rather than at the first call."""
        await self.access_token(renew=True)

    def rejected(self, token: str) -> None:
        """A callee refused ``token``: the next call logs in again."""
        if self._session is not None and self._session.access_token == token:
            self._session = None

    def interceptors(self) -> list[Any]:
        """Client interceptors adding ``authorization: Bearer <token>`` to every call."""
        return bearer_interceptors(self)

    def channel_to(self, address: str, *, zone: bool = False) -> grpc.aio.Channel:
        """A channel to ``address`` (TLS per :mod:`tessera.common.tls`; a ``zone``'s
        as zones serve it) whose calls carry this service's token."""
        return tls.channel(address, zone=zone, interceptors=self.interceptors())

    def zone_channel(self, address: str) -> grpc.aio.Channel:
        """:meth:`channel_to` a zone."""
        return self.channel_to(address, zone=True)

    def link_channel(self, address: str) -> grpc.aio.Channel:
        """A channel to a zone for a relay's ``ZoneLink``: its other calls carry this
        service's token, while a bidirectional stream must bring it in its own
        metadata (``bearer_metadata(await access_token())``) and give a refused one
        back (:meth:`rejected`). grpc.aio passes each message of an intercepted
        stream through a queue and a second task, and a ZoneLink carries every
        input and snapshot batch (docs/AUTH.md, "Service credentials")."""
        interceptors = bearer_interceptors(self, stream_stream=False)
        return tls.channel(address, zone=True, interceptors=interceptors)

    async def close(self) -> None:
        await self.channel.close(None)


class _Bearer:
    """Adds the service's token to a call that carries no ``authorization`` of its own
    (a call made for an admin keeps the admin's token)."""

    def __init__(self, credentials: TokenSource) -> None:
        self.credentials = credentials

    async def details(self, details: grpc.aio.ClientCallDetails) -> tuple[Any, str]:
        metadata: Sequence[tuple[str, Any]] = list(details.metadata or ())
        if any(k == "authorization" for k, _ in metadata):
            return details, ""
        token = await self.credentials.access_token()
        with_token = grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*metadata, *bearer_metadata(token)),
            details.credentials,
            details.wait_for_ready,
        )
        return with_token, token


class _UnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        details, token = await self.details(details)
        call = await continuation(details, request)
        if token and await call.code() == grpc.StatusCode.UNAUTHENTICATED:
            self.credentials.rejected(token)
        return call


class _UnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation((await self.details(details))[0], request)


class _StreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_unary(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation((await self.details(details))[0], request_iterator)


class _StreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation((await self.details(details))[0], request_iterator)
