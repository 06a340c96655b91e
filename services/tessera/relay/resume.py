"""Resume credentials (docs/protocol/udp.md, "Resume"): what lets a client carry
on as the same session through any relay of the world.

A credential is sealed with a key every relay of the world derives from the
connect key it shares with auth, so any relay can open it; it binds the player,
the auth session, the world, the issuing relay, an expiry and a fresh pair of
channel keys for the resumed connection. Whether it is still the player's
newest, unused credential is Redis's to say (:mod:`tessera.relay.store`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tessera.wire.connect_token import MatchContext

VERSION = 1
# A credential is valid this long; a new one replaces it every ROTATE_S (sent on
# the reliable channel, so a lost datagram only delays it).
LIFETIME_S = 60.0
ROTATE_S = 20.0
_INFO = b"tessera relay resume key v1"
_AAD = b"tessera-resume-v1"
_FIXED = struct.Struct("<16s32s32sdH")
_NONCE_SIZE = 12


class ResumeError(Exception):
    """A credential that does not open; ``reason`` is a stable label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ResumeGrant:
    """What an opened credential grants (the relay's Grant, like a connect token's)."""

    token_id: bytes  # the credential id
    player_id: str
    session_id: str
    world: str
    relay_id: str
    client_to_server_key: bytes
    server_to_client_key: bytes
    expires_at: float
    timeout_s: float
    zone: str = ""
    # A resumed session keeps the player where they are: no match context to pass.
    match: MatchContext | None = None


def derive_key(connect_key: bytes) -> bytes:
    """The world's resume sealing key (HKDF-SHA256 of the shared connect key)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(connect_key)


def new_grant(
    *,
    player_id: str,
    session_id: str,
    world: str,
    relay_id: str,
    timeout_s: float,
    now: float,
    lifetime_s: float = LIFETIME_S,
) -> ResumeGrant:
    """A fresh credential: a random id and fresh channel keys."""
    return ResumeGrant(
        token_id=os.urandom(16),
        player_id=player_id,
        session_id=session_id,
        world=world,
        relay_id=relay_id,
        client_to_server_key=os.urandom(32),
        server_to_client_key=os.urandom(32),
        expires_at=now + lifetime_s,
        timeout_s=timeout_s,
    )


def seal(grant: ResumeGrant, key: bytes) -> bytes:
    """``version | nonce(12) | ChaCha20-Poly1305(fixed fields, then four u16-length
    UTF-8 strings: player, session, world, relay)``."""
    plain = _FIXED.pack(
        grant.token_id,
        grant.client_to_server_key,
        grant.server_to_client_key,
        grant.expires_at,
        min(65535, round(grant.timeout_s)),
    )
    for text in (grant.player_id, grant.session_id, grant.world, grant.relay_id):
        raw = text.encode()
        plain += struct.pack("<H", len(raw)) + raw
    nonce = os.urandom(_NONCE_SIZE)
    return bytes([VERSION]) + nonce + ChaCha20Poly1305(key).encrypt(nonce, plain, _AAD)


def open_credential(blob: bytes, key: bytes, now: float) -> ResumeGrant:
    """The grant inside ``blob``; ResumeError ``malformed`` / ``forged`` / ``expired``."""
    if len(blob) < 1 + _NONCE_SIZE + 16 or blob[0] != VERSION:
        raise ResumeError("malformed", "not a resume credential of this version")
    nonce = blob[1 : 1 + _NONCE_SIZE]
    try:
        plain = ChaCha20Poly1305(key).decrypt(nonce, blob[1 + _NONCE_SIZE :], _AAD)
    except InvalidTag:
        raise ResumeError("forged", "resume credential does not authenticate") from None
    try:
        cid, c2s, s2c, expires_at, timeout_s = _FIXED.unpack_from(plain)
        offset = _FIXED.size
        texts: list[str] = []
        for _ in range(4):
            (length,) = struct.unpack_from("<H", plain, offset)
            offset += 2
            texts.append(plain[offset : offset + length].decode())
            offset += length
    except (struct.error, UnicodeDecodeError):
        raise ResumeError("malformed", "resume credential layout is broken") from None
    if expires_at < now:
        raise ResumeError("expired", "resume credential has expired")
    player, session, world, relay = texts
    return ResumeGrant(
        token_id=cid,
        player_id=player,
        session_id=session,
        world=world,
        relay_id=relay,
        client_to_server_key=c2s,
        server_to_client_key=s2c,
        expires_at=expires_at,
        timeout_s=float(timeout_s),
    )
