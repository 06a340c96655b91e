"""Access-token verification, local to every Tessera service that accepts tokens.

:class:`Verifier` checks signature, ``exp``/``nbf``/``iat`` (with a small clock
skew leeway), ``iss``, ``aud``, roles and revocation with no I/O on the hot path:
the public keys come from ``Auth.GetPublicKeys`` (refreshed every ``max_age_s``
and at once when a token names an unknown ``kid``) or are a fixed set
(:class:`Trust`), revoked session ids arrive over Redis pub/sub into a local
set (:func:`.store.follow_revocations`, so a revoked token is rejected within
about a second everywhere). The token rules themselves are :mod:`tessera.wire.access_token`.

Ed25519 verification costs tens of microseconds, so tokens whose signature and
static claims already checked out are remembered (bounded cache keyed by the
token string); a cached token still gets its expiry, revocation and role checks
on every call. The cache is dropped whenever the key set changes.

:class:`tessera.authclient.access.AccessInterceptor` applies it to gRPC calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tessera.authclient import metrics, store
from tessera.authclient.keys import keys_from_json, keys_from_proto
from tessera.common import store as common_store
from tessera.common import tls
from tessera.common.config import PREFIX, ConfigError, Env
from tessera.common.store import Client
from tessera.v1 import auth_pb2, auth_pb2_grpc
from tessera.wire import access_token
from tessera.wire.access_token import Claims, TokenError

log = logging.getLogger(__name__)

_REASONS = (
    *("MALFORMED", "BAD_SIGNATURE", "UNKNOWN_KEY", "EXPIRED", "NOT_YET_VALID"),
    *("WRONG_ISSUER", "WRONG_AUDIENCE", "REVOKED", "FORBIDDEN", "MISSING"),
)
_COUNTERS = {reason: metrics.VERIFICATIONS.labels(reason) for reason in [*_REASONS, "ok"]}
MIN_KEY_REFRESH_S = 1.0


@dataclass(frozen=True)
class Trust:
    """Where a verifier takes auth's public keys from: the auth service at
    ``auth_address`` (``GetPublicKeys``, following key rotation) or the fixed
    ``public_keys`` (a process that must verify tokens without an auth service to
    ask, e.g. a zone in a test harness)."""

    auth_address: str = ""
    public_keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Env) -> Trust:
        """Exactly one of TESSERA_AUTH_ADDRESS (``host:port``) or
        TESSERA_AUTH_PUBLIC_KEYS (a ``PublicKeySet`` as JSON); ConfigError otherwise."""
        address = env.string("AUTH_ADDRESS", "", pattern=r"\S+:\d{1,5}")
        raw = env.string("AUTH_PUBLIC_KEYS", "")
        if bool(address) == bool(raw):
            raise ConfigError(
                PREFIX + "AUTH_ADDRESS",
                address,
                "exactly one of TESSERA_AUTH_ADDRESS (the auth service, host:port) "
                "or TESSERA_AUTH_PUBLIC_KEYS (auth's PublicKeySet as JSON)",
            )
        if address:
            return cls(auth_address=address)
        try:
            return cls(public_keys=keys_from_json(raw))
        except ValueError as err:
            raise ConfigError(PREFIX + "AUTH_PUBLIC_KEYS", raw[:200], str(err)) from None


class Verifier:
    """Verifies access tokens against cached public keys and a revocation set."""

    def __init__(
        self,
        public_keys: Mapping[str, Ed25519PublicKey] | None = None,
        *,
        issuer: str = "tessera",
        audience: str = "tessera",
        leeway_s: float = 5.0,
        cache_size: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.cache_size = cache_size
        self.clock = clock
        self._keys: dict[str, Ed25519PublicKey] = dict(public_keys or {})
        self._cache: dict[str, Claims] = {}
        self._revoked: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_keys: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._channel: grpc.aio.Channel | None = None
        self._redis: Client | None = None

    # state

    @property
    def public_keys(self) -> Mapping[str, Ed25519PublicKey]:
        """kid -> public key, e.g. for :func:`tessera.wire.connect_token.open_connect_token`."""
        return self._keys

    def set_keys(self, public_keys: Mapping[str, Ed25519PublicKey]) -> None:
        """Replace the accepted keys (drops the verified-token cache)."""
        self._keys = dict(public_keys)
        self._cache = {}

    def revoke(self, session_id: str, until: float) -> None:
        """Reject every token of ``session_id`` until ``until`` (Unix seconds)."""
        self._revoked[session_id] = max(until, self._revoked.get(session_id, 0.0))

    def is_revoked(self, session_id: str) -> bool:
        return session_id in self._revoked

    def prune(self) -> None:
        """Forget revocations whose tokens have all expired."""
        now = self.clock()
        self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}

    # hot path

    def verify(self, token: str, *, roles: Iterable[str] = ()) -> Claims:
        """Verify ``token`` (and that it has one of ``roles``, if given); raise TokenError."""
        try:
            claims = self._verify(token, roles)
        except TokenError as err:
            _COUNTERS[err.reason].inc()
            raise
        _COUNTERS["ok"].inc()
        return claims

    def _verify(self, token: str, roles: Iterable[str]) -> Claims:
        now = self.clock()
        claims = self._cache.get(token)
        if claims is None:
            try:
                kid, payload = access_token.verify_signature(token, self._keys)
            except TokenError as err:
                if err.reason == "UNKNOWN_KEY":
                    self._request_key_refresh()
                raise
            claims = access_token.claims_from_payload(
                kid,
                payload,
                issuer=self.issuer,
                audience=self.audience,
                now=now,
                leeway_s=self.leeway_s,
            )
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[token] = claims
        else:
            access_token.check_expiry(claims, now=now, leeway_s=self.leeway_s)
        if claims.sid in self._revoked:
            raise TokenError("REVOKED", "access token's session has been revoked")
        access_token.check_roles(claims, roles)
        return claims

    # background refresh

    @classmethod
    async def connect(
        cls,
        auth_address: str,
        redis_url: str,
        *,
        issuer: str = "tessera",
        audience: str = "tessera",
        leeway_s: float = 5.0,
        timeout_s: float = 30.0,
    ) -> Verifier:
        """A verifier fed by the auth service at ``auth_address`` and Redis at ``redis_url``.

        Returns once the first key set is loaded and the revocation channel is
        subscribed (retrying for up to ``timeout_s``); call :meth:`close` at shutdown.
        """
        verifier = cls(issuer=issuer, audience=audience, leeway_s=leeway_s)
        await verifier.start(redis_url, auth_address=auth_address, timeout_s=timeout_s)
        return verifier

    @classmethod
    async def trusting(cls, trust: Trust, redis_url: str, *, timeout_s: float = 30.0) -> Verifier:
        """A verifier with the keys ``trust`` names and revocations from Redis."""
        verifier = cls(trust.public_keys)
        await verifier.start(
            redis_url, auth_address=trust.auth_address or None, timeout_s=timeout_s
        )
        return verifier

    async def start(
        self, redis_url: str, *, auth_address: str | None = None, timeout_s: float = 30.0
    ) -> None:
        """Start the background feeds and wait until they have delivered once.

        Revocations always come from Redis; keys come from the auth service at
        ``auth_address`` or, without one, from the owner calling :meth:`set_keys`
        (auth itself does that with its own key ring).
        """
        self._loop = asyncio.get_running_loop()
        self._redis = redis = common_store.connect(redis_url)
        revocations_ready = asyncio.Event()
        waits = [revocations_ready]
        self._tasks = [
            asyncio.create_task(
                store.follow_revocations(
                    redis,
                    revoke=self.revoke,
                    prune=self.prune,
                    ready=revocations_ready,
                    clock=self.clock,
                ),
                name="verifier-revocations",
            )
        ]
        if auth_address is not None:
            self._wake_keys = asyncio.Event()
            self._channel = tls.channel(auth_address)
            keys_ready = asyncio.Event()
            waits.append(keys_ready)
            self._tasks.append(
                asyncio.create_task(self._refresh_keys(keys_ready), name="verifier-keys")
            )
        try:
            async with asyncio.timeout(timeout_s):
                for event in waits:
                    await event.wait()
        except TimeoutError:
            await self.close()
            raise ConnectionError(
                f"verifier could not load keys from auth at {auth_address} "
                f"and revocations from Redis within {timeout_s} s"
            ) from None

    async def close(self) -> None:
        """Stop the background tasks and close the connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _request_key_refresh(self) -> None:
        if self._loop is not None and self._wake_keys is not None:
            self._loop.call_soon_threadsafe(self._wake_keys.set)

    async def _refresh_keys(self, ready: asyncio.Event) -> None:
        assert self._channel is not None and self._wake_keys is not None
        stub = auth_pb2_grpc.AuthStub(self._channel)
        backoff = 0.1
        while True:
            try:
                key_set = await stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest(), timeout=5)
                keys = keys_from_proto(key_set)
            except (grpc.aio.AioRpcError, ValueError) as err:
                log.warning("public key refresh failed", extra={"error": str(err)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if keys != self._keys:
                self.set_keys(keys)
                log.info("public keys loaded", extra={"kids": sorted(keys)})
            ready.set()
            self.prune()
            max_age = min(max(float(key_set.max_age_s or 60), MIN_KEY_REFRESH_S), 3600.0)
            self._wake_keys.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max_age):
                    await self._wake_keys.wait()
            await asyncio.sleep(MIN_KEY_REFRESH_S)  # at most one unknown-kid fetch a second
