"""Auth's public keys read from a PublicKeySet: strictly for access tokens,
tolerantly for connect tokens."""

from __future__ import annotations

import pytest

from tessera.auth.keys import SigningKey, raw_public_bytes
from tessera.authclient.keys import keys_from_proto, public_key_from_raw, usable_keys
from tessera.v1 import auth_pb2
from tessera.wire.access_token import b64url

KEY = SigningKey.generate()


def published(
    key: SigningKey, *, kid: str = "", alg: str = "EdDSA", crv: str = "Ed25519", x: str = ""
) -> auth_pb2.PublicKey:
    """``key`` as auth publishes it, with any field replaced."""
    return auth_pb2.PublicKey(
        kid=kid or key.kid, alg=alg, crv=crv, x=x or b64url(raw_public_bytes(key.public_key))
    )


def test_keys_from_proto_rejects_foreign_keys() -> None:
    good = auth_pb2.PublicKey(
        kid=KEY.kid, alg="EdDSA", crv="Ed25519", x=b64url(raw_public_bytes(KEY.public_key))
    )
    assert list(keys_from_proto(auth_pb2.PublicKeySet(keys=[good]))) == [KEY.kid]
    for bad in (
        auth_pb2.PublicKey(kid="k", alg="RS256", crv="Ed25519", x=good.x),
        auth_pb2.PublicKey(kid="k", alg="EdDSA", crv="Ed448", x=good.x),
        auth_pb2.PublicKey(kid="", alg="EdDSA", crv="Ed25519", x=good.x),
        auth_pb2.PublicKey(kid="k", alg="EdDSA", crv="Ed25519", x=good.x[:20]),
    ):
        with pytest.raises(ValueError):
            keys_from_proto(auth_pb2.PublicKeySet(keys=[bad]))


def test_usable_keys_skips_foreign_keys_and_keeps_the_rest() -> None:
    other = SigningKey.generate()
    key_set = auth_pb2.PublicKeySet(
        keys=[
            published(KEY),
            published(other, alg="RS256"),
            published(other, crv="Ed448"),
            published(other, kid="short", x=published(other).x[:20]),
        ]
    )
    keys = usable_keys(key_set)
    assert list(keys) == [KEY.kid]
    assert raw_public_bytes(keys[KEY.kid]) == raw_public_bytes(KEY.public_key)
    assert usable_keys(auth_pb2.PublicKeySet()) == {}


def test_usable_keys_and_keys_from_proto_agree_on_good_sets() -> None:
    keys = [SigningKey.generate() for _ in range(3)]
    key_set = auth_pb2.PublicKeySet(keys=[published(k) for k in keys])
    strict, tolerant = keys_from_proto(key_set), usable_keys(key_set)
    assert list(strict) == list(tolerant) == [k.kid for k in keys]
    for kid in strict:
        assert raw_public_bytes(strict[kid]) == raw_public_bytes(tolerant[kid])


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_public_key_from_raw_needs_32_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        public_key_from_raw(b"\x01" * size)
    assert raw_public_bytes(public_key_from_raw(raw_public_bytes(KEY.public_key))) == (
        raw_public_bytes(KEY.public_key)
    )
