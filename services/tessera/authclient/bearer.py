"""Access tokens in gRPC call metadata: ``authorization: Bearer <token>``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tessera.wire.access_token import TokenError


def bearer_metadata(access_token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``access_token`` for an authenticated RPC."""
    return (("authorization", f"Bearer {access_token}"),)


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The token of the ``authorization: Bearer <token>`` entry; raise MISSING otherwise."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise TokenError("MALFORMED", "authorization metadata is not 'Bearer <token>'")
    raise TokenError("MISSING", "missing 'authorization: Bearer <access token>' metadata")
