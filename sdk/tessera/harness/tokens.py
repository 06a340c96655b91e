"""Access tokens signed directly with a test's own key (auth's key directory), for
tests that need a caller of a given role without a login."""

from __future__ import annotations

import time
import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tessera.wire import access_token
from tessera.wire.access_token import Claims


def access_metadata(
    kid: str, key: Ed25519PrivateKey, *roles: str, sub: str = "tester", ttl_s: int = 900
) -> tuple[tuple[str, str], ...]:
    """Call metadata with an access token of ``roles`` signed by ``key`` (id ``kid``)."""
    now = int(time.time())
    claims = Claims(
        sub=sub,
        sid=uuid.uuid4().hex,
        roles=roles,
        iat=now,
        exp=now + ttl_s,
        iss="tessera",
        aud="tessera",
        kid=kid,
    )
    return (("authorization", f"Bearer {access_token.encode(claims, key)}"),)
