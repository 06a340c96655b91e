"""Connect tokens: a relay's admission ticket for one client connection.

Pure functions, no I/O. A token is a signed binary record (Ed25519, the same
key ring as access tokens, ``kid`` inside) binding the player, the session, the
relay addresses that may accept it, its lifetime, a random token id (the
relay's replay key) and optionally the destination world and zone the relay must
join the player into. The per-connection ChaCha20-Poly1305 keys travel inside
the token *sealed* with ChaCha20-Poly1305 under a 32-byte key shared by auth
and the relays, so an eavesdropper who sees the token learns nothing about the
channel keys; so does the matchmaker's match context (match id, team, role),
when there is one (version 3; a token without one is still version 2). The
client receives the same keys in clear from ``Auth.IssueConnectToken`` over its
own authenticated connection.

The byte layout is specified in docs/protocol/tokens.md; keep them in step.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from tessera.wire.names import NAME_RE

MAGIC = b"TSCT"
VERSION = 2  # without a match context
MATCH_VERSION = 3  # with a match context among the sealed claims
TOKEN_ID_BYTES = 16
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SIGNATURE_BYTES = 64
SEALED_BYTES = 2 * KEY_BYTES + TAG_BYTES
MAX_TOKEN_BYTES = 1024
MAX_RELAYS = 8
MAX_ID_BYTES = 128
MAX_NAME_BYTES = 63
MAX_MATCH_ID_BYTES = 64
MAX_TEAM = 255
MAX_ROLE_BYTES = 32
MATCH_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
CLOCK_SKEW_S = 5.0
_TIMES = struct.Struct(">QQI")
# magic, version, kid length, 1-byte kid, token id, times, two 1-byte ids, one
# 1-byte relay address, empty world and zone, nonce, sealed keys, signature.
MIN_TOKEN_BYTES = (
    4 + 1 + 1 + 1 + TOKEN_ID_BYTES + _TIMES.size + 3 + 3 + 3 + 1 + 1 + NONCE_BYTES
    + SEALED_BYTES + SIGNATURE_BYTES
)  # fmt: skip
# The smallest match claims: a 1-byte match id, the team, an empty role.
MIN_CLAIMS_BYTES = 1 + 1 + 1 + 1


@dataclass(frozen=True)
class MatchContext:
    """The match a token admits the player to, as the matchmaker formed it:
    ``team`` is the team index within the match (from 0), ``role`` the role
    assigned in role-composed modes ("" = none)."""

    match_id: str
    team: int
    role: str = ""


def match_problem(match: MatchContext) -> tuple[str, str] | None:
    """Why ``match`` cannot go into a token, as (field, message); None if it can."""
    if MATCH_ID_RE.fullmatch(match.match_id) is None:
        return "match_id", (
            f"match_id must be 1-{MAX_MATCH_ID_BYTES} characters of"
            " A-Z, a-z, 0-9, '.', '_', ':', '-'"
        )
    if not 0 <= match.team <= MAX_TEAM:
        return "team", f"team must be 0-{MAX_TEAM}, got {match.team}"
    role = match.role.encode("utf-8")
    if len(role) > MAX_ROLE_BYTES or not match.role.isprintable():
        return "role", f"role must be at most {MAX_ROLE_BYTES} bytes of printable UTF-8"
    return None


def _claims(match: MatchContext) -> bytes:
    """The sealed match claims (after the channel keys) of a version-3 token."""
    problem = match_problem(match)
    if problem is not None:
        raise ValueError(problem[1])
    match_id, role = match.match_id.encode("ascii"), match.role.encode("utf-8")
    return bytes((len(match_id),)) + match_id + bytes((match.team, len(role))) + role


def _open_claims(claims: bytes) -> MatchContext:
    """The match context of sealed claims; MALFORMED if they do not parse."""
    reader = _Reader(claims)
    match_id = reader.text(reader.byte(), "match id", "ascii")
    team = reader.byte()
    length = reader.byte()
    role = reader.text(length, "role", "utf-8") if length else ""
    match = MatchContext(match_id, team, role)
    if reader.pos != len(claims) or match_problem(match) is not None:
        raise ConnectTokenError("MALFORMED", "connect token match claims are malformed")
    return match


@dataclass(frozen=True)
class ConnectGrant:
    """What a connect token grants; ``issued_at``/``expires_at`` are Unix seconds.
    ``world``/``zone`` name the destination ("" = the relay's world / choice);
    ``match`` is the matchmaker's match context (None = not a match's token)."""

    token_id: bytes
    player_id: str
    session_id: str
    relay_addresses: tuple[str, ...]
    client_to_server_key: bytes
    server_to_client_key: bytes
    issued_at: int
    expires_at: int
    timeout_s: int
    world: str = ""
    zone: str = ""
    match: MatchContext | None = None


def is_destination_name(name: str) -> bool:
    """Whether ``name`` may be a token's destination world or zone ("" or a DNS label)."""
    return not name or NAME_RE.fullmatch(name) is not None


class ConnectTokenError(Exception):
    """A connect token was rejected. ``reason``: MALFORMED, BAD_SIGNATURE, EXPIRED, WRONG_RELAY."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def new_token_id() -> bytes:
    """A fresh random token id."""
    return os.urandom(TOKEN_ID_BYTES)


def new_channel_key() -> bytes:
    """A fresh random 32-byte ChaCha20-Poly1305 key."""
    return os.urandom(KEY_BYTES)


def _short(value: bytes, what: str, limit: int) -> bytes:
    if not value or len(value) > limit:
        raise ValueError(f"connect token {what} must be 1-{limit} bytes")
    return value


def _public_part(grant: ConnectGrant, kid: str) -> bytes:
    if len(grant.token_id) != TOKEN_ID_BYTES:
        raise ValueError(f"token_id must be {TOKEN_ID_BYTES} bytes")
    if not 1 <= len(grant.relay_addresses) <= MAX_RELAYS:
        raise ValueError(f"a connect token names 1-{MAX_RELAYS} relay addresses")
    if not 0 <= grant.issued_at <= grant.expires_at or not 0 <= grant.timeout_s < 2**32:
        raise ValueError("connect token times out of range")
    out = bytearray(MAGIC)
    kid_bytes = _short(kid.encode("ascii"), "kid", 255)
    version = VERSION if grant.match is None else MATCH_VERSION
    out += bytes((version, len(kid_bytes))) + kid_bytes + grant.token_id
    out += _TIMES.pack(grant.issued_at, grant.expires_at, grant.timeout_s)
    for text, what in ((grant.player_id, "player id"), (grant.session_id, "session id")):
        raw = _short(text.encode("utf-8"), what, MAX_ID_BYTES)
        out += struct.pack(">H", len(raw)) + raw
    out.append(len(grant.relay_addresses))
    for address in grant.relay_addresses:
        raw = _short(address.encode("ascii"), "relay address", 255)
        out += bytes((len(raw),)) + raw
    for name, what in ((grant.world, "world"), (grant.zone, "zone")):
        if not is_destination_name(name):
            raise ValueError(f"connect token {what} {name!r} must be empty or a DNS label")
        out += bytes((len(name),)) + name.encode("ascii")
    return bytes(out)


@functools.lru_cache(maxsize=4)
def _sealer(sealing_key: bytes) -> ChaCha20Poly1305:
    """The cipher for ``sealing_key``, made once (a process seals with one key)."""
    return ChaCha20Poly1305(sealing_key)


class Signer(Protocol):
    """A signing key with its id (auth's ``SigningKey`` is one)."""

    @property
    def kid(self) -> str: ...
    @property
    def private_key(self) -> Ed25519PrivateKey: ...


def issue_connect_token(
    grant: ConnectGrant, *, signing_key: Signer, sealing_key: bytes, nonce: bytes | None = None
) -> bytes:
    """Encode, seal and sign ``grant``; raises ValueError for out-of-range fields.
    ``nonce`` is random unless given (fixed only for the conformance vectors,
    docs/protocol/vectors/: a nonce must never be reused with a sealing key)."""
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    elif len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    if len(sealing_key) != KEY_BYTES or len(grant.client_to_server_key) != KEY_BYTES:
        raise ValueError("sealing and channel keys must be 32 bytes")
    if len(grant.server_to_client_key) != KEY_BYTES:
        raise ValueError("sealing and channel keys must be 32 bytes")
    public = _public_part(grant, signing_key.kid)
    claims = b"" if grant.match is None else _claims(grant.match)
    sealed = _sealer(sealing_key).encrypt(
        nonce, grant.client_to_server_key + grant.server_to_client_key + claims, public
    )
    body = public + nonce + sealed
    token = body + signing_key.private_key.sign(body)
    if len(token) > MAX_TOKEN_BYTES:
        raise ValueError(f"connect token would exceed {MAX_TOKEN_BYTES} bytes")
    return token


class _Reader:
    """Bounds-checked reads; any overrun is a MALFORMED token."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ConnectTokenError("MALFORMED", "connect token is truncated")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def text(self, length: int, what: str, encoding: str) -> str:
        if length == 0:
            raise ConnectTokenError("MALFORMED", f"connect token has an empty {what}")
        try:
            return self.take(length).decode(encoding)
        except UnicodeDecodeError:
            raise ConnectTokenError(
                "MALFORMED", f"connect token {what} is not {encoding}"
            ) from None

    def name(self, what: str) -> str:
        """A destination name: u8 length (0-63) + a DNS label, or empty."""
        length = self.byte()
        if length == 0:
            return ""
        raw = self.take(length)
        if length > MAX_NAME_BYTES or NAME_RE.fullmatch(raw.decode("latin-1")) is None:
            raise ConnectTokenError("MALFORMED", f"connect token {what} is not a DNS label")
        return raw.decode("ascii")


def open_connect_token(
    token: bytes,
    *,
    public_keys: Mapping[str, Ed25519PublicKey],
    sealing_key: bytes,
    relay_address: str,
    now: float,
) -> ConnectGrant:
    """Verify ``token`` for the relay at ``relay_address`` and unseal its channel keys
    (and match context, in a version-3 token).

    Checks, in order: size and layout, including a destination world or zone
    that is not a DNS label (MALFORMED), key id and Ed25519 signature
    (BAD_SIGNATURE, also for an unknown ``kid`` or a seal that does not open),
    lifetime (EXPIRED), relay address (WRONG_RELAY). Replay (a token id seen
    before) is the relay's check.
    """
    if not MIN_TOKEN_BYTES <= len(token) <= MAX_TOKEN_BYTES:
        raise ConnectTokenError("MALFORMED", f"connect token size {len(token)} out of range")
    reader = _Reader(token)
    if reader.take(4) != MAGIC:
        raise ConnectTokenError("MALFORMED", "not a Tessera connect token")
    version = reader.byte()
    if version not in (VERSION, MATCH_VERSION):
        raise ConnectTokenError("MALFORMED", f"unsupported connect token version {version}")
    kid = reader.text(reader.byte(), "kid", "ascii")
    token_id = reader.take(TOKEN_ID_BYTES)
    issued_at, expires_at, timeout_s = _TIMES.unpack(reader.take(_TIMES.size))
    player_id = reader.text(struct.unpack(">H", reader.take(2))[0], "player id", "utf-8")
    session_id = reader.text(struct.unpack(">H", reader.take(2))[0], "session id", "utf-8")
    count = reader.byte()
    if not 1 <= count <= MAX_RELAYS:
        raise ConnectTokenError("MALFORMED", f"connect token names {count} relays")
    relays = tuple(reader.text(reader.byte(), "relay address", "ascii") for _ in range(count))
    world, zone = reader.name("world"), reader.name("zone")
    public_end = reader.pos
    nonce = reader.take(NONCE_BYTES)
    # Version 3 seals the match claims after the keys: its sealed part runs up to
    # the signature and holds at least the smallest claims.
    sealed_bytes = SEALED_BYTES
    if version == MATCH_VERSION:
        sealed_bytes = len(token) - reader.pos - SIGNATURE_BYTES
        if sealed_bytes < SEALED_BYTES + MIN_CLAIMS_BYTES:
            raise ConnectTokenError("MALFORMED", "connect token match claims are truncated")
    sealed = reader.take(sealed_bytes)
    body_end = reader.pos
    signature = reader.take(SIGNATURE_BYTES)
    if reader.pos != len(token):
        raise ConnectTokenError("MALFORMED", "connect token has trailing bytes")

    key = public_keys.get(kid)
    if key is None:
        raise ConnectTokenError("BAD_SIGNATURE", f"connect token signed with unknown key {kid!r}")
    try:
        key.verify(signature, token[:body_end])
    except InvalidSignature:
        raise ConnectTokenError("BAD_SIGNATURE", "connect token signature is invalid") from None
    if now >= expires_at:
        raise ConnectTokenError("EXPIRED", f"connect token expired {int(now - expires_at)} s ago")
    if issued_at > now + CLOCK_SKEW_S:
        raise ConnectTokenError("EXPIRED", "connect token is not valid yet (check clocks)")
    if relay_address not in relays:
        raise ConnectTokenError("WRONG_RELAY", f"connect token is not valid for {relay_address}")
    try:
        keys = ChaCha20Poly1305(sealing_key).decrypt(nonce, sealed, token[:public_end])
    except InvalidTag:
        raise ConnectTokenError(
            "BAD_SIGNATURE", "connect token seal does not open (sealing key mismatch?)"
        ) from None
    match = None if version == VERSION else _open_claims(keys[2 * KEY_BYTES :])
    return ConnectGrant(
        token_id=token_id,
        player_id=player_id,
        session_id=session_id,
        relay_addresses=relays,
        client_to_server_key=keys[:KEY_BYTES],
        server_to_client_key=keys[KEY_BYTES : 2 * KEY_BYTES],
        issued_at=issued_at,
        expires_at=expires_at,
        timeout_s=timeout_s,
        world=world,
        zone=zone,
        match=match,
    )
