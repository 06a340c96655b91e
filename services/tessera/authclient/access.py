"""Who may call what: one access table per service and the interceptor enforcing it.

Every service declares, for each RPC of its proto service, the roles a caller's
access token needs (``player``, ``service``, ``admin``) or :data:`OPEN` (no token:
logins, key discovery, the relay's ``Play`` whose first message carries a connect
token). :func:`table` builds that declaration from the proto descriptor and
refuses one that misses an RPC or names one that does not exist, so a service
with an undeclared RPC does not start. :class:`AccessInterceptor` verifies the
bearer token locally (:class:`~tessera.authclient.verifier.Verifier`) and ends a
call with ``UNAUTHENTICATED`` (no token or a bad one; the message never says
which check failed: the reason is counted in
``tessera_auth_token_verifications_total``) or ``PERMISSION_DENIED`` (a valid
token without an accepted role). Health and reflection stay open; a method the
table does not know is refused.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from tessera.authclient.bearer import bearer_token
from tessera.authclient.verifier import Verifier
from tessera.common import errors
from tessera.common.handlers import Behavior, responses, rewrap
from tessera.wire.access_token import Claims, TokenError

PLAYER: Final = "player"
SERVICE: Final = "service"
ADMIN: Final = "admin"
ROLES: Final = frozenset({PLAYER, SERVICE, ADMIN})


class _Open:
    """The rule of an RPC anyone may call without a token."""

    def __repr__(self) -> str:
        return "OPEN"


OPEN: Final = _Open()
Rule = frozenset[str] | _Open

# Open whatever the table says: probes and tooling (reflection can be switched off
# with TESSERA_GRPC_REFLECTION, which then does not register it at all).
ALWAYS_OPEN = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
UNAUTHENTICATED_MESSAGE = "missing or invalid access token"

_claims: contextvars.ContextVar[Claims] = contextvars.ContextVar("tessera_auth_claims")


def roles(*names: str) -> frozenset[str]:
    """The rule of an RPC callers with any of ``names`` may use."""
    unknown = set(names) - ROLES
    if not names or unknown:
        raise ValueError(f"roles must be some of {sorted(ROLES)}, got {list(names)}")
    return frozenset(names)


def table(service: ServiceDescriptor, rules: Mapping[str, Rule]) -> dict[str, Rule]:
    """Full method name (``/tessera.v1.Zone/Join``) -> rule for every RPC of ``service``,
    from ``rules`` keyed by method name; ValueError if an RPC has no rule or a rule
    names no RPC."""
    methods = [m.name for m in service.methods]
    missing = sorted(set(methods) - set(rules))
    unknown = sorted(set(rules) - set(methods))
    if missing or unknown:
        raise ValueError(
            f"access table of {service.full_name}: "
            f"RPCs without a rule {missing}, rules for no RPC {unknown}"
        )
    return {f"/{service.full_name}/{name}": rules[name] for name in methods}


def current_claims() -> Claims:
    """The verified claims of the RPC being handled (set by :class:`AccessInterceptor`)."""
    try:
        return _claims.get()
    except LookupError:
        raise RuntimeError(
            "no verified access token here: the method is OPEN or runs outside an RPC"
        ) from None


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Enforces an access table (one or more services' :func:`table` merged)."""

    def __init__(self, verifier: Verifier, rules: Mapping[str, Rule]) -> None:
        self.verifier = verifier
        self.rules = dict(rules)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(ALWAYS_OPEN):
            return handler
        rule = self.rules.get(method)
        if isinstance(rule, _Open):
            return handler
        outcome: Claims | TokenError
        if rule is None:
            outcome = TokenError("FORBIDDEN", f"{method} has no access rule")
        else:
            try:
                token = bearer_token(handler_call_details.invocation_metadata)
                outcome = self.verifier.verify(token, roles=sorted(rule))
            except TokenError as err:
                outcome = err
        return _wrap(handler, outcome)


async def _deny(context: grpc.aio.ServicerContext[Any, Any], err: TokenError) -> None:
    if err.reason == "FORBIDDEN":
        await errors.abort(
            context, grpc.StatusCode.PERMISSION_DENIED, err.message, reason="FORBIDDEN"
        )
    await errors.abort(
        context, grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE, reason="UNAUTHENTICATED"
    )


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], outcome: Claims | TokenError
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler, but denied on ``TokenError`` or run with the claims set."""

    async def enter(context: Any) -> contextvars.Token[Claims]:
        if isinstance(outcome, TokenError):
            await _deny(context, outcome)
        assert isinstance(outcome, Claims)
        return _claims.set(outcome)

    def leave(reset: contextvars.Token[Claims]) -> None:
        with contextlib.suppress(ValueError):  # a stream closed from another context
            _claims.reset(reset)

    def unary(behavior: Behavior) -> Behavior:
        async def call(request: Any, context: Any) -> Any:
            reset = await enter(context)
            try:
                return await behavior(request, context)
            finally:
                leave(reset)

        return call

    def streaming(behavior: Behavior) -> Behavior:
        async def call(request: Any, context: Any) -> AsyncIterator[Any]:
            reset = await enter(context)
            try:
                async for item in responses(behavior, request, context):
                    yield item
            finally:
                leave(reset)

        return call

    return rewrap(handler, unary, streaming)
