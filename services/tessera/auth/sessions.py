"""Identifiers, refresh tokens and access-token claims of sessions (pure).

A *session* starts at login and lives as long as its refresh tokens keep being
rotated; its id is the ``sid`` of every access token issued in it and the unit
of revocation (logout, admin revocation, refresh-token reuse).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid

from tessera.wire.access_token import Claims

REFRESH_TOKEN_BYTES = 32


def new_account_id() -> str:
    """A random account id (32 hex characters)."""
    return uuid.uuid4().hex


def new_session_id() -> str:
    """A random session id (22 base64url characters, 128 bits)."""
    return secrets.token_urlsafe(16)


def new_refresh_token() -> str:
    """An opaque refresh token (43 base64url characters, 256 bits)."""
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def digest(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret: the only form in which it is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def access_claims(
    *,
    account_id: str,
    session_id: str,
    roles: tuple[str, ...],
    kid: str,
    issuer: str,
    audience: str,
    now: float,
    ttl_s: int,
) -> Claims:
    """Claims of an access token issued at ``now``."""
    iat = int(now)
    return Claims(
        sub=account_id,
        sid=session_id,
        roles=roles,
        iat=iat,
        exp=iat + ttl_s,
        iss=issuer,
        aud=audience,
        kid=kid,
    )


def revocation_horizon(now: float, *, access_ttl_s: int, leeway_s: int) -> float:
    """Until when a session revoked at ``now`` may still have verifiable access tokens."""
    return float(int(now) + access_ttl_s + leeway_s + 1)


def roles_for(account_id: str, admin_accounts: frozenset[str]) -> tuple[str, ...]:
    """Roles of an account: ``player``, plus ``admin`` if its id is configured as one.

    Admins are named by account id, never by username: a username that is not
    registered yet could be claimed by anyone.
    """
    return ("player", "admin") if account_id in admin_accounts else ("player",)


def client_address(peer: str) -> str:
    """The IP of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``)."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rsplit(":", 1)[0]
        return host.strip("[]") or "unknown"
    return kind or "unknown"
