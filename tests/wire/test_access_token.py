"""Access tokens: encoding, standard compliance and every rejection reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.auth.keys import SigningKey, raw_public_bytes
from tessera.wire import access_token
from tessera.wire.access_token import Claims, TokenError, b64url

KEY = SigningKey.generate()
KEYS = {KEY.kid: KEY.public_key}
NOW = 1_700_000_000


def claims(**changes: object) -> Claims:
    base = {
        "sub": "acc1",
        "sid": "sess1",
        "roles": ("player",),
        "iat": NOW,
        "exp": NOW + 900,
        "iss": "tessera",
        "aud": "tessera",
        "kid": KEY.kid,
    }
    base.update(changes)
    return Claims(**base)  # type: ignore[arg-type]


def decode(token: str, **kw: object) -> Claims:
    args: dict[str, object] = {
        "public_keys": KEYS,
        "issuer": "tessera",
        "audience": "tessera",
        "now": NOW + 1,
    }
    args.update(kw)
    return access_token.decode(token, **args)  # type: ignore[arg-type]


def reason(token: str, **kw: object) -> str:
    with pytest.raises(TokenError) as info:
        decode(token, **kw)
    assert str(info.value)  # a human message
    return info.value.reason


def forge(header: dict[str, object], payload: dict[str, object], signature: bytes) -> str:
    h = b64url(json.dumps(header).encode())
    p = b64url(json.dumps(payload).encode())
    return f"{h}.{p}.{b64url(signature)}"


def payload_of(c: Claims) -> dict[str, object]:
    return {
        "sub": c.sub,
        "sid": c.sid,
        "roles": list(c.roles),
        "iat": c.iat,
        "exp": c.exp,
        "iss": c.iss,
        "aud": c.aud,
    }


def test_round_trip() -> None:
    c = claims(roles=("player", "admin"))
    assert decode(access_token.encode(c, KEY.private_key)) == c


def test_tokens_are_standard_jwts_pyjwt_accepts() -> None:
    token = access_token.encode(claims(), KEY.private_key)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": KEY.kid}
    decoded = jwt.decode(
        token,
        KEY.public_key,
        algorithms=["EdDSA"],
        audience="tessera",
        issuer="tessera",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert decoded["sub"] == "acc1" and decoded["roles"] == ["player"]


def test_pyjwt_made_eddsa_token_is_accepted() -> None:
    token = jwt.encode(
        payload_of(claims()), KEY.private_key, algorithm="EdDSA", headers={"kid": KEY.kid}
    )
    assert decode(token).sub == "acc1"


def test_expired_and_leeway() -> None:
    token = access_token.encode(claims(exp=NOW + 10), KEY.private_key)
    assert decode(token, now=NOW + 12, leeway_s=5).sub == "acc1"  # within leeway
    assert reason(token, now=NOW + 15, leeway_s=5) == "EXPIRED"


def test_not_yet_valid() -> None:
    assert reason(access_token.encode(claims(iat=NOW + 60), KEY.private_key)) == "NOT_YET_VALID"
    token = forge(
        {"alg": "EdDSA", "kid": KEY.kid},
        {**payload_of(claims()), "nbf": NOW + 60},
        b"",
    )
    signing_input = token.rsplit(".", 1)[0]
    token = f"{signing_input}.{b64url(KEY.private_key.sign(signing_input.encode()))}"
    assert reason(token) == "NOT_YET_VALID"


def test_wrong_signature_key_and_tampering() -> None:
    other = Ed25519PrivateKey.generate()
    token = access_token.encode(claims(), other)  # same kid, different key
    assert reason(token) == "BAD_SIGNATURE"
    good = access_token.encode(claims(), KEY.private_key)
    h, p, s = good.split(".")
    evil = b64url(json.dumps({**payload_of(claims()), "roles": ["admin"]}).encode())
    assert reason(f"{h}.{evil}.{s}") == "BAD_SIGNATURE"
    assert reason(f"{h}.{p}.{b64url(b'x' * 63)}") == "BAD_SIGNATURE"


def test_unknown_kid() -> None:
    assert reason(access_token.encode(claims(kid="nope"), KEY.private_key)) == "UNKNOWN_KEY"


def test_alg_none_is_rejected() -> None:
    token = forge({"alg": "none", "kid": KEY.kid}, payload_of(claims()), b"")
    assert reason(token) == "BAD_SIGNATURE"
    unsigned = jwt.encode(payload_of(claims()), "", algorithm="none", headers={"kid": KEY.kid})
    assert reason(unsigned) == "BAD_SIGNATURE"


def test_hmac_with_the_public_key_is_rejected() -> None:
    # The classic confusion: HS256 keyed with the (public) verification key bytes.
    public = raw_public_bytes(KEY.public_key)
    header = b64url(json.dumps({"alg": "HS256", "kid": KEY.kid}).encode())
    payload = b64url(json.dumps({**payload_of(claims()), "roles": ["admin"]}).encode())
    mac = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(TokenError) as info:
        decode(f"{header}.{payload}.{b64url(mac)}")
    assert info.value.reason == "BAD_SIGNATURE"
    assert "HS256" in str(info.value)


def test_wrong_audience_and_issuer() -> None:
    assert reason(access_token.encode(claims(aud="other"), KEY.private_key)) == "WRONG_AUDIENCE"
    assert reason(access_token.encode(claims(iss="evil"), KEY.private_key)) == "WRONG_ISSUER"


def test_audience_list_is_accepted() -> None:
    token = jwt.encode(
        {**payload_of(claims()), "aud": ["x", "tessera"]},
        KEY.private_key,
        algorithm="EdDSA",
        headers={"kid": KEY.kid},
    )
    assert decode(token).aud == "tessera"


def test_roles_any_of() -> None:
    token = access_token.encode(claims(roles=("player",)), KEY.private_key)
    assert decode(token, roles=("player", "service")).sub == "acc1"
    assert reason(token, roles=("admin",)) == "FORBIDDEN"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        "e30.e30.",  # header without alg
        b64url(b"[1]") + ".e30.",
        b64url(b"\xff\xfe") + ".e30.",
        "x" * 5000,
    ],
)
def test_malformed(token: str) -> None:
    assert reason(token) in {"MALFORMED", "MISSING", "BAD_SIGNATURE"}


def test_malformed_reasons_are_specific() -> None:
    assert reason("") == "MISSING"
    assert reason("a.b") == "MALFORMED"
    assert reason("x" * 5000) == "MALFORMED"
    header = b64url(json.dumps({"alg": "EdDSA"}).encode())
    assert reason(f"{header}.e30.") == "MALFORMED"  # no kid
    crit = b64url(json.dumps({"alg": "EdDSA", "kid": KEY.kid, "crit": ["x"]}).encode())
    assert reason(f"{crit}.e30.") == "MALFORMED"


@pytest.mark.parametrize(
    "payload",
    [
        {"sid": "s", "iat": NOW, "exp": NOW + 9, "iss": "tessera", "aud": "tessera"},
        {"sub": 5, "sid": "s", "iat": NOW, "exp": NOW + 9, "iss": "tessera", "aud": "tessera"},
        {"sub": "a", "sid": "s", "iat": "x", "exp": NOW + 9, "iss": "tessera", "aud": "tessera"},
        {"sub": "a", "sid": "s", "iat": NOW, "exp": True, "iss": "tessera", "aud": "tessera"},
        {"sub": "a", "sid": "s", "iat": NOW, "exp": 1.5, "iss": "tessera", "aud": "tessera"},
        {"sub": "a", "sid": "s", "roles": "admin", "iat": NOW, "exp": NOW + 9, "iss": "tessera",
         "aud": "tessera"},
    ],
)  # fmt: skip
def test_signed_but_ill_typed_claims_are_malformed(payload: dict[str, object]) -> None:
    token = jwt.encode(payload, KEY.private_key, algorithm="EdDSA", headers={"kid": KEY.kid})
    assert reason(token) == "MALFORMED"


def test_non_ascii_base64_padding_variants_are_rejected() -> None:
    good = access_token.encode(claims(), KEY.private_key)
    h, p, s = good.split(".")
    assert reason(f"{h}=.{p}.{s}") == "MALFORMED"
    assert reason(f"{h}.{p}.{base64.b64encode(b'x' * 64).decode()}") in {
        "MALFORMED",
        "BAD_SIGNATURE",
    }


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=300)
    | st.from_regex(r"[A-Za-z0-9_-]{0,80}\.[A-Za-z0-9_-]{0,80}\.[A-Za-z0-9_-]{0,90}")
)
def test_arbitrary_strings_only_ever_raise_token_error(token: str) -> None:
    with pytest.raises(TokenError):
        decode(token)
