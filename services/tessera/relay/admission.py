"""The relay's admission: which connect tokens and resume credentials open a session.

A token is opened by its opener (e.g.
:class:`tessera.authclient.connect.ConnectTokenOpener`, whose errors
:func:`rejecting` turns into :class:`~tessera.relay.errors.Rejected` with the
reason in lower case: ``expired``, ``bad_signature``, ``wrong_relay``,
``malformed``), must be for this relay's world and not of a revoked login session,
and is spent world-wide in Redis, so it opens one session on one relay; a resume
credential likewise. Each handshake is the root of a trace (:func:`admitting`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from redis.exceptions import RedisError

from tessera.common import tracing
from tessera.relay import resume
from tessera.relay.errors import Rejected
from tessera.relay.store import RelayStore
from tessera.wire.connect_token import ConnectGrant, ConnectTokenError, MatchContext

log = logging.getLogger(__name__)


class Grant(Protocol):
    """What the relay uses from an opened connect token (auth's ConnectGrant)."""

    @property
    def token_id(self) -> bytes: ...
    @property
    def player_id(self) -> str: ...
    @property
    def session_id(self) -> str: ...
    @property
    def client_to_server_key(self) -> bytes: ...
    @property
    def server_to_client_key(self) -> bytes: ...
    @property
    def expires_at(self) -> float: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def world(self) -> str: ...
    @property
    def zone(self) -> str: ...
    @property
    def match(self) -> MatchContext | None: ...


# Opens a connect token at time ``now``; raises Rejected with the reason.
TokenOpener = Callable[[bytes, float], Grant]


def rejecting(open_token: Callable[[bytes, float], ConnectGrant]) -> TokenOpener:
    """The gateway's TokenOpener over ``open_token``, which raises ConnectTokenError."""

    def opener(token: bytes, now: float) -> ConnectGrant:
        try:
            return open_token(token, now)
        except ConnectTokenError as err:
            raise Rejected(err.reason.lower(), err.message) from None

    return opener


def admitting(transport: str, *, resuming: bool = False) -> AbstractContextManager[Span]:
    """The span ``relay.admit`` of one handshake, a new trace: the token's checks,
    the placement and the zone's Join (whose span is its child)."""
    return tracing.tracer.start_as_current_span(
        "relay.admit",
        context=Context(),
        kind=SpanKind.SERVER,
        attributes={"tessera.transport": transport, "tessera.resume": resuming},
    )


class Admission:
    """Connect tokens and resume credentials, checked and spent for one world."""

    def __init__(
        self,
        *,
        world: str,
        resume_key: bytes,
        opener: TokenOpener,
        store: RelayStore,
        rotated: Callable[[resume.ResumeGrant], bytes | None] = lambda _grant: None,
    ) -> None:
        self.world = world
        self.resume_key = resume_key
        self.opener = opener
        self.store = store
        # The id of the credential that replaced a given one in a session this
        # relay holds (the gateway's), which a resume with the replaced one spends.
        self.rotated = rotated
        # Revoked auth sessions -> Unix time until which their tokens matter.
        self.revoked: dict[str, float] = {}

    async def admit(self, token: bytes, now: float) -> Grant:
        """Open and verify a connect token and spend it world-wide; Rejected if it is
        bad, names another world, belongs to a revoked session, or was used on any
        relay of the world."""
        grant = self.opener(token, now)
        if grant.world and grant.world != self.world:
            raise Rejected(
                "wrong_world",
                f"connect token is for world {grant.world}, this relay serves {self.world}",
            )
        if grant.session_id in self.revoked:
            raise Rejected("revoked", "the connect token's session has been revoked")
        try:
            fresh = await self.store.spend_token(grant.token_id, grant.expires_at - now)
        except (RedisError, OSError) as err:
            raise Rejected("store_unavailable", f"cannot record the token as used: {err}") from err
        if not fresh:
            raise Rejected("replayed", "connect token already used")
        return grant

    async def admit_resume(self, credential: bytes, now: float) -> resume.ResumeGrant:
        """Open a resume credential and use it; Rejected (``malformed``, ``forged``,
        ``expired``, ``wrong_world``, ``revoked``, ``replayed``: used already or
        superseded by a newer one, ``store_unavailable``). A credential superseded
        only by its own session's rotation, on this relay, spends the newer one
        instead (the grant then carries that id)."""
        grant = self._open_resume(credential, now)
        if grant.world != self.world:
            raise Rejected("wrong_world", f"resume credential is for world {grant.world}")
        if grant.session_id in self.revoked:
            raise Rejected("revoked", "the resume credential's session has been revoked")
        newer = None
        try:
            fresh = await self.store.spend_resume(grant.player_id, grant.token_id)
            if not fresh and (newer := self.rotated(grant)) is not None:
                fresh = await self.store.spend_resume(grant.player_id, newer)
        except (RedisError, OSError) as err:
            raise Rejected("store_unavailable", f"cannot use the credential: {err}") from err
        if not fresh:
            raise Rejected("replayed", "resume credential used already or superseded")
        return grant if newer is None else dataclasses.replace(grant, token_id=newer)

    def open_unspent(self, token: bytes, now: float, *, resuming: bool) -> Grant:
        """Open a connect token (resume credential) without checking or spending
        it, for its keys only (to seal a refusal its holder can read); Rejected
        if it does not open."""
        return self._open_resume(token, now) if resuming else self.opener(token, now)

    def _open_resume(self, credential: bytes, now: float) -> resume.ResumeGrant:
        try:
            return resume.open_credential(credential, self.resume_key, now)
        except resume.ResumeError as err:
            raise Rejected(err.reason, str(err)) from None

    async def release(self, grant: Grant) -> None:
        """Make a token (or resume credential) usable again after its session could
        not be opened."""
        try:
            if isinstance(grant, resume.ResumeGrant):
                await self.store.restore_resume(
                    grant.player_id, grant.token_id, grant.expires_at - time.time()
                )
            else:
                await self.store.unspend_token(grant.token_id)
        except (RedisError, OSError) as err:
            log.warning("token not released", extra={"player": grant.player_id, "error": str(err)})

    def revoke(self, session_id: str, until: float) -> None:
        """Refuse the tokens and credentials of ``session_id`` until ``until``."""
        self.revoked[session_id] = max(until, self.revoked.get(session_id, 0.0))

    def prune(self) -> None:
        """Forget revocations after which no token of the session can verify."""
        now = time.time()
        self.revoked = {sid: until for sid, until in self.revoked.items() if until > now}
