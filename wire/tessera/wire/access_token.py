"""Access tokens: compact JWS (JWT) signed with Ed25519, encoded and checked here.

The format auth signs and every verifier (``tessera.authclient``) checks. Pure
functions over plain data, no I/O. The verification is written against
``cryptography`` directly rather than a generic JWT library so that exactly one
algorithm is accepted: the header must say ``"alg": "EdDSA"``, which rules out
``alg: none`` and the HMAC-with-the-public-key confusion by construction. The
tokens are standard JWTs (RFC 7519 / RFC 8037) that any EdDSA-capable JWT
library verifies with the keys from ``Auth.GetPublicKeys``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

ALGORITHM = "EdDSA"
MAX_TOKEN_CHARS = 4096
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def b64url(data: bytes) -> str:
    """Base64url without padding (as in JWS and JWK)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Claims:
    """The verified content of an access token."""

    sub: str
    sid: str
    roles: tuple[str, ...]
    iat: int
    exp: int
    iss: str
    aud: str
    kid: str


class TokenError(Exception):
    """A token was rejected. ``reason`` is stable (UPPER_SNAKE_CASE), the message human.

    Reasons: MALFORMED, BAD_SIGNATURE, UNKNOWN_KEY, EXPIRED, NOT_YET_VALID,
    WRONG_ISSUER, WRONG_AUDIENCE, REVOKED, FORBIDDEN, MISSING.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def encode(claims: Claims, key: Ed25519PrivateKey) -> str:
    """Sign ``claims`` as a compact JWS; ``claims.kid`` goes into the header."""
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": claims.kid}
    payload = {
        "sub": claims.sub,
        "sid": claims.sid,
        "roles": list(claims.roles),
        "iat": claims.iat,
        "exp": claims.exp,
        "iss": claims.iss,
        "aud": claims.aud,
    }
    signing_input = f"{_json_b64(header)}.{_json_b64(payload)}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode('ascii')))}"


def _json_b64(obj: Mapping[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def _b64decode(part: str, what: str) -> bytes:
    if _B64URL_RE.fullmatch(part) is None or len(part) % 4 == 1:
        raise TokenError("MALFORMED", f"access token {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("MALFORMED", f"access token {what} is not base64url") from None


def _json_object(part: str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(_b64decode(part, what))
    except (UnicodeDecodeError, ValueError):
        raise TokenError("MALFORMED", f"access token {what} is not JSON") from None
    if not isinstance(obj, dict):
        raise TokenError("MALFORMED", f"access token {what} is not a JSON object")
    return obj


def read_header(token: str) -> str:
    """Check the header of ``token`` and return its ``kid``."""
    if not token:
        raise TokenError("MISSING", "no access token")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("MALFORMED", f"access token longer than {MAX_TOKEN_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("MALFORMED", "access token is not a compact JWS (header.payload.sig)")
    header = _json_object(parts[0], "header")
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise TokenError(
            "BAD_SIGNATURE", f"access token algorithm {alg!r} is not allowed (only {ALGORITHM})"
        )
    if "crit" in header:
        raise TokenError("MALFORMED", "access token header has unsupported 'crit' parameters")
    if header.get("typ", "JWT") != "JWT":
        raise TokenError("MALFORMED", "access token header 'typ' is not JWT")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("MALFORMED", "access token header has no 'kid'")
    return kid


def verify_signature(
    token: str, public_keys: Mapping[str, Ed25519PublicKey]
) -> tuple[str, dict[str, Any]]:
    """Check the header and Ed25519 signature; return (kid, payload object)."""
    kid = read_header(token)
    key = public_keys.get(kid)
    if key is None:
        raise TokenError("UNKNOWN_KEY", f"access token signed with unknown key {kid!r}")
    signing_input, _, signature_b64 = token.rpartition(".")
    signature = _b64decode(signature_b64, "signature")
    if len(signature) != 64:
        raise TokenError("BAD_SIGNATURE", "access token signature is invalid")
    try:
        key.verify(signature, signing_input.encode("ascii"))
    except InvalidSignature:
        raise TokenError("BAD_SIGNATURE", "access token signature is invalid") from None
    return kid, _json_object(signing_input.partition(".")[2], "payload")


def _string(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise TokenError("MALFORMED", f"access token claim {name!r} missing or not a string")
    return value


def _time(payload: Mapping[str, Any], name: str) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TokenError("MALFORMED", f"access token claim {name!r} missing or not an integer")
    return value


def claims_from_payload(
    kid: str,
    payload: Mapping[str, Any],
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway_s: float,
) -> Claims:
    """Type-check the claims and check ``iss``, ``aud``, ``nbf``, ``iat`` and ``exp``."""
    roles = payload.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise TokenError("MALFORMED", "access token claim 'roles' is not a list of strings")
    iss = _string(payload, "iss")
    if iss != issuer:
        raise TokenError("WRONG_ISSUER", f"access token issuer {iss!r} is not {issuer!r}")
    aud = payload.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise TokenError("WRONG_AUDIENCE", f"access token is not meant for audience {audience!r}")
    claims = Claims(
        sub=_string(payload, "sub"),
        sid=_string(payload, "sid"),
        roles=tuple(roles),
        iat=_time(payload, "iat"),
        exp=_time(payload, "exp"),
        iss=iss,
        aud=audience,
        kid=kid,
    )
    nbf = payload.get("nbf", claims.iat)
    if not isinstance(nbf, int) or isinstance(nbf, bool):
        raise TokenError("MALFORMED", "access token claim 'nbf' is not an integer")
    if max(nbf, claims.iat) > now + leeway_s:
        raise TokenError("NOT_YET_VALID", "access token is not valid yet (check clocks)")
    check_expiry(claims, now=now, leeway_s=leeway_s)
    return claims


def check_expiry(claims: Claims, *, now: float, leeway_s: float) -> None:
    """Raise EXPIRED once ``exp`` (plus the clock-skew leeway) has passed."""
    if now >= claims.exp + leeway_s:
        raise TokenError("EXPIRED", f"access token expired {int(now - claims.exp)} s ago")


def check_roles(claims: Claims, roles: Iterable[str]) -> None:
    """Raise FORBIDDEN unless the token has at least one of ``roles`` (if any are given)."""
    wanted = tuple(roles)
    if wanted and not any(role in claims.roles for role in wanted):
        raise TokenError("FORBIDDEN", f"this call needs role {' or '.join(wanted)}")


def decode(
    token: str,
    *,
    public_keys: Mapping[str, Ed25519PublicKey],
    issuer: str,
    audience: str,
    now: float,
    leeway_s: float = 5.0,
    roles: Iterable[str] = (),
) -> Claims:
    """Verify ``token`` completely (except revocation, which needs the verifier's cache)."""
    kid, payload = verify_signature(token, public_keys)
    claims = claims_from_payload(
        kid, payload, issuer=issuer, audience=audience, now=now, leeway_s=leeway_s
    )
    check_roles(claims, roles)
    return claims
