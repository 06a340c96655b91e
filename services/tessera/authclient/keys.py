"""Auth's public keys as verifiers read them from ``Auth.GetPublicKeys``.

Two readings of a ``PublicKeySet``: :func:`keys_from_proto` for access tokens
(a bad entry fails the whole answer, so the verifier keeps its last good set)
and :func:`usable_keys` for connect tokens (entries of another algorithm or size
are skipped, so the relay keeps admitting with the keys it understands).
:func:`keys_from_json` reads a fixed set given as JSON instead of fetched
(``TESSERA_AUTH_PUBLIC_KEYS``, like a static JWKS), :func:`key_set_json` writes one.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf import json_format

from tessera.v1 import auth_pb2
from tessera.wire.access_token import ALGORITHM, b64url

CURVE = "Ed25519"
RAW_KEY_BYTES = 32


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from its raw 32 bytes (raises ValueError otherwise)."""
    if len(raw) != RAW_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key has 32 bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _supported(key: auth_pb2.PublicKey) -> bool:
    return key.alg == ALGORITHM and key.crv == CURVE


def _raw(key: auth_pb2.PublicKey) -> bytes:
    return base64.urlsafe_b64decode(key.x + "=" * (-len(key.x) % 4))


def keys_from_proto(key_set: auth_pb2.PublicKeySet) -> dict[str, Ed25519PublicKey]:
    """kid -> public key from a PublicKeySet; raises ValueError on a bad entry."""
    out: dict[str, Ed25519PublicKey] = {}
    for key in key_set.keys:
        if not _supported(key) or not key.kid:
            raise ValueError(f"unsupported public key {key.kid!r}: {key.alg}/{key.crv}")
        out[key.kid] = public_key_from_raw(_raw(key))
    return out


def usable_keys(key_set: auth_pb2.PublicKeySet) -> dict[str, Ed25519PublicKey]:
    """kid -> Ed25519 public key for every usable entry of a PublicKeySet."""
    keys: dict[str, Ed25519PublicKey] = {}
    for key in key_set.keys:
        if not _supported(key):
            continue
        raw = _raw(key)
        if len(raw) == RAW_KEY_BYTES:
            keys[key.kid] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


def public_key_entry(kid: str, key: Ed25519PublicKey, retired_at: int = 0) -> auth_pb2.PublicKey:
    """The ``PublicKey`` entry publishing ``key`` under ``kid``."""
    x = b64url(key.public_bytes(Encoding.Raw, PublicFormat.Raw))
    return auth_pb2.PublicKey(kid=kid, alg=ALGORITHM, crv=CURVE, x=x, retired_at=retired_at)


def key_set_json(keys: Mapping[str, Ed25519PublicKey]) -> str:
    """A ``PublicKeySet`` of ``keys`` as JSON, the form :func:`keys_from_json` reads."""
    key_set = auth_pb2.PublicKeySet(keys=[public_key_entry(k, v) for k, v in keys.items()])
    return json_format.MessageToJson(key_set, indent=None)


def keys_from_json(text: str) -> dict[str, Ed25519PublicKey]:
    """kid -> public key from a ``PublicKeySet`` as JSON; ValueError if it is not
    one or holds no key."""
    try:
        key_set = json_format.Parse(text, auth_pb2.PublicKeySet())
    except json_format.ParseError as err:
        raise ValueError(f"not a PublicKeySet in JSON: {err}") from None
    keys = keys_from_proto(key_set)
    if not keys:
        raise ValueError("the PublicKeySet holds no key")
    return keys
