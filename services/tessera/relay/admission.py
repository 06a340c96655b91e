"""Connect-token admission: auth's public keys, cached and refreshed, and the
verification of a token for this relay's address.

The keys come from ``Auth.GetPublicKeys`` and are cached for the ``max_age_s``
the answer names; a token signed with an unknown key id triggers one early
refresh (rate-limited), so a key rotation does not lock clients out.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tessera.relay.errors import Rejected
from tessera.v1 import auth_pb2, auth_pb2_grpc
from tessera.wire.connect_token import ConnectGrant, ConnectTokenError, open_connect_token

log = logging.getLogger(__name__)

MIN_REFRESH_S = 5.0


def public_keys_from(key_set: auth_pb2.PublicKeySet) -> dict[str, Ed25519PublicKey]:
    """kid -> Ed25519 public key for every usable entry of a PublicKeySet."""
    keys: dict[str, Ed25519PublicKey] = {}
    for key in key_set.keys:
        if key.alg != "EdDSA" or key.crv != "Ed25519":
            continue
        raw = base64.urlsafe_b64decode(key.x + "=" * (-len(key.x) % 4))
        if len(raw) == 32:
            keys[key.kid] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


def verify(
    token: bytes,
    *,
    public_keys: Mapping[str, Ed25519PublicKey],
    sealing_key: bytes,
    relay_address: str,
    now: float,
) -> ConnectGrant:
    """Open a connect token; Rejected with a lower-case reason (e.g. "expired")."""
    try:
        return open_connect_token(
            token,
            public_keys=public_keys,
            sealing_key=sealing_key,
            relay_address=relay_address,
            now=now,
        )
    except ConnectTokenError as err:
        raise Rejected(err.reason.lower(), err.message) from None


class Admission:
    """Verifies connect tokens with auth's current keys."""

    def __init__(self, *, auth_address: str, sealing_key: bytes, relay_address: str) -> None:
        self.auth_address = auth_address
        self.sealing_key = sealing_key
        self.relay_address = relay_address
        self.public_keys: dict[str, Ed25519PublicKey] = {}
        self.max_age_s = 300.0
        self.fetched_at = 0.0
        self._channel = grpc.aio.insecure_channel(auth_address)
        self._stub: Any = auth_pb2_grpc.AuthStub(self._channel)
        self.refresh_wanted = False

    async def refresh(self) -> None:
        """Fetch the key set from auth (raises grpc errors)."""
        key_set = await self._stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest(), timeout=3.0)
        self.public_keys = public_keys_from(key_set)
        self.max_age_s = float(key_set.max_age_s or 300)
        self.fetched_at = time.monotonic()
        self.refresh_wanted = False
        log.info("auth keys loaded", extra={"kids": sorted(self.public_keys)})

    def due(self, now: float) -> bool:
        """Whether the keys should be fetched again."""
        age = now - self.fetched_at
        return age > self.max_age_s or (self.refresh_wanted and age > MIN_REFRESH_S)

    def open(self, token: bytes, now: float) -> ConnectGrant:
        """The gateway's TokenOpener."""
        try:
            return verify(
                token,
                public_keys=self.public_keys,
                sealing_key=self.sealing_key,
                relay_address=self.relay_address,
                now=now,
            )
        except Rejected as err:
            if err.reason == "bad_signature":
                self.refresh_wanted = True
            raise

    async def close(self) -> None:
        await self._channel.close(None)
