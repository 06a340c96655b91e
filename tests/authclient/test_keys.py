"""Auth's public keys read from a PublicKeySet: strictly for access tokens,
tolerantly for connect tokens; a fixed set as JSON and where a verifier's keys
come from (Trust)."""

from __future__ import annotations

import json

import pytest

from tessera.auth.keys import SigningKey, raw_public_bytes
from tessera.authclient.keys import (
    key_set_json,
    keys_from_json,
    keys_from_proto,
    public_key_from_raw,
    usable_keys,
)
from tessera.authclient.verifier import Trust
from tessera.common.config import ConfigError, Env
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


def test_a_key_set_as_json_reads_back_as_the_same_keys() -> None:
    other = SigningKey.generate()
    keys = {KEY.kid: KEY.public_key, other.kid: other.public_key}
    back = keys_from_json(key_set_json(keys))
    assert {kid: raw_public_bytes(k) for kid, k in back.items()} == {
        kid: raw_public_bytes(k) for kid, k in keys.items()
    }
    # The JSON is the PublicKeySet GetPublicKeys answers, as auth publishes a key.
    entry = json.loads(key_set_json({KEY.kid: KEY.public_key}))["keys"][0]
    assert entry == {"kid": KEY.kid, "alg": "EdDSA", "crv": "Ed25519", "x": published(KEY).x}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not a PublicKeySet"),
        ("[1, 2]", "not a PublicKeySet"),
        ('{"keys": [{"kid": "k", "alg": "RS256", "crv": "Ed25519", "x": "AA"}]}', "unsupported"),
        ('{"keys": [{"kid": "k", "alg": "EdDSA", "crv": "Ed25519", "x": "AA"}]}', "32 bytes"),
        ('{"keys": []}', "holds no key"),
        ('{"keyz": []}', "not a PublicKeySet"),
    ],
)
def test_a_bad_key_set_as_json_is_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        keys_from_json(text)


def test_trust_takes_exactly_one_source() -> None:
    keys = key_set_json({KEY.kid: KEY.public_key})
    fixed = Trust.from_env(Env({"TESSERA_AUTH_PUBLIC_KEYS": keys}))
    assert fixed.auth_address == "" and list(fixed.public_keys) == [KEY.kid]
    assert Trust.from_env(Env({"TESSERA_AUTH_ADDRESS": "auth:50051"})) == Trust("auth:50051")
    both = {"TESSERA_AUTH_ADDRESS": "auth:50051", "TESSERA_AUTH_PUBLIC_KEYS": keys}
    for env in ({}, both):
        with pytest.raises(ConfigError, match="exactly one of") as err:
            Trust.from_env(Env(env))
        assert err.value.variable == "TESSERA_AUTH_ADDRESS"
    with pytest.raises(ConfigError) as bad:
        Trust.from_env(Env({"TESSERA_AUTH_PUBLIC_KEYS": '{"keys": []}'}))
    assert bad.value.variable == "TESSERA_AUTH_PUBLIC_KEYS"
    with pytest.raises(ConfigError, match="TESSERA_AUTH_ADDRESS"):
        Trust.from_env(Env({"TESSERA_AUTH_ADDRESS": "no-port"}))
