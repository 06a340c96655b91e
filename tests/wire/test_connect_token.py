"""Connect tokens: round trip, confidentiality, destinations, match context and every
rejection reason."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.auth.keys import SigningKey
from tessera.wire import connect_token
from tessera.wire.connect_token import ConnectGrant, ConnectTokenError, MatchContext

KEY = SigningKey.generate()
KEYS = {KEY.kid: KEY.public_key}
SEAL = os.urandom(32)
NOW = 1_700_000_000


def grant(**changes: object) -> ConnectGrant:
    base: dict[str, object] = {
        "token_id": bytes(range(16)),
        "player_id": "player-1",
        "session_id": "sess-1",
        "relay_addresses": ("10.0.0.1:7777", "10.0.0.2:7777"),
        "client_to_server_key": b"\x01" * 32,
        "server_to_client_key": b"\x02" * 32,
        "issued_at": NOW,
        "expires_at": NOW + 30,
        "timeout_s": 10,
    }
    base.update(changes)
    return ConnectGrant(**base)  # type: ignore[arg-type]


def issue(g: ConnectGrant | None = None, key: SigningKey = KEY) -> bytes:
    return connect_token.issue_connect_token(g or grant(), signing_key=key, sealing_key=SEAL)


def open_(token: bytes, **kw: object) -> ConnectGrant:
    args: dict[str, object] = {
        "public_keys": KEYS,
        "sealing_key": SEAL,
        "relay_address": "10.0.0.2:7777",
        "now": NOW + 1,
    }
    args.update(kw)
    return connect_token.open_connect_token(token, **args)  # type: ignore[arg-type]


def reason(token: bytes, **kw: object) -> str:
    with pytest.raises(ConnectTokenError) as info:
        open_(token, **kw)
    assert str(info.value)
    return info.value.reason


def test_round_trip() -> None:
    g = grant(player_id="spieler-ä")
    assert open_(issue(g)) == g
    assert (g.world, g.zone) == ("", "")


@pytest.mark.parametrize(
    ("world", "zone"),
    [("main", "inst-0123456789abcdef01234567"), ("main", ""), ("", "zone-b"), ("w" * 63, "z" * 63)],
)
def test_round_trip_with_destination(world: str, zone: str) -> None:
    g = grant(world=world, zone=zone)
    opened = open_(issue(g))
    assert opened == g and (opened.world, opened.zone) == (world, zone)


@pytest.mark.parametrize(
    "match",
    [
        MatchContext("0123456789abcdef0123456789abcdef", 0),
        MatchContext("m", 255, "healer"),
        MatchContext("a" * 64, 1, "r" * 32),
        MatchContext("backfill:7.x_y-z", 3, "täNk"),
    ],
)
def test_round_trip_with_match_context(match: MatchContext) -> None:
    g = grant(world="main", zone="inst-0123456789abcdef01234567", match=match)
    token = issue(g)
    assert token[4] == connect_token.MATCH_VERSION
    assert open_(token) == g
    # Sealed: the claims are not readable in the token (long enough ones tested).
    assert len(match.match_id) < 8 or match.match_id.encode() not in token
    assert len(match.role) < 4 or match.role.encode() not in token


def test_a_token_without_match_context_stays_version_2() -> None:
    plain, matched = grant(), grant(match=MatchContext("m1", 0))
    assert issue(plain)[4] == connect_token.VERSION
    assert open_(issue(plain)).match is None
    assert len(issue(matched)) == len(issue(plain)) + 5  # "m1", team, empty role


@pytest.mark.parametrize(
    ("match", "field"),
    [
        (MatchContext("", 0), "match_id"),
        (MatchContext("a" * 65, 0), "match_id"),
        (MatchContext("has space", 0), "match_id"),
        (MatchContext("m\xe4", 0), "match_id"),
        (MatchContext("m", -1), "team"),
        (MatchContext("m", 256), "team"),
        (MatchContext("m", 0, "r" * 33), "role"),
        (MatchContext("m", 0, "ä" * 17), "role"),
        (MatchContext("m", 0, "tank\n"), "role"),
    ],
)
def test_issue_refuses_a_match_context_out_of_bounds(match: MatchContext, field: str) -> None:
    problem = connect_token.match_problem(match)
    assert problem is not None and problem[0] == field
    with pytest.raises(ValueError, match=field):
        issue(grant(match=match))


def sign_claims(public: bytes, claims: bytes) -> bytes:
    """Seal ``claims`` after the keys and sign, as a (compromised) issuer could."""
    nonce = os.urandom(12)
    plain = b"\x01" * 32 + b"\x02" * 32 + claims
    body = public + nonce + ChaCha20Poly1305(SEAL).encrypt(nonce, plain, public)
    return body + KEY.private_key.sign(body)


@pytest.mark.parametrize(
    "claims",
    [
        b"\x00\x00\x00\x00",  # empty match id
        b"\x02m\x00\x00",  # match id running past the end
        b"\x01m\x00\x00\x00",  # trailing byte
        b"\x01m\x00\x03ab",  # role running past the end
        b"\x01 \x00\x00",  # match id not in the alphabet
        b"\x01m\x00\x01\n",  # role not printable
        b"\x01m\x00\x02\xff\xfe",  # role not UTF-8
    ],
)
def test_signed_match_claims_that_do_not_parse_are_malformed(claims: bytes) -> None:
    public = bytearray(public_part(issue()))
    public[4] = connect_token.MATCH_VERSION
    good = sign_claims(bytes(public), b"\x01m\x02\x00")
    assert open_(good).match == MatchContext("m", 2)  # the forging itself is sound
    assert reason(sign_claims(bytes(public), claims)) == "MALFORMED"


def test_a_tampered_or_truncated_match_token_is_rejected() -> None:
    token = issue(grant(match=MatchContext("m1", 1, "tank")))
    for i in range(len(token)):
        forged = bytearray(token)
        forged[i] ^= 0x01
        assert reason(bytes(forged)) in {"MALFORMED", "BAD_SIGNATURE"}, i
    assert reason(token[:-1]) in {"MALFORMED", "BAD_SIGNATURE"}
    # Relabelled version 2: its seal is now too short for any claims.
    assert reason(token[:4] + b"\x02" + token[5:]) in {"MALFORMED", "BAD_SIGNATURE"}
    assert reason(issue()[:4] + b"\x03" + issue()[5:]) == "MALFORMED"


@pytest.mark.parametrize(
    "name", ["Main", "zone_b", "-zone", "zone-", "z" * 64, "zöne", "a.b", " zone", "zone\n"]
)
def test_issue_refuses_a_destination_that_is_not_a_dns_label(name: str) -> None:
    with pytest.raises(ValueError, match="DNS label"):
        issue(grant(world=name))
    with pytest.raises(ValueError, match="DNS label"):
        issue(grant(zone=name))


def sign(public: bytes, key: SigningKey = KEY) -> bytes:
    """Seal and sign an arbitrary public part, as a (compromised) issuer could."""
    nonce = os.urandom(12)
    sealed = ChaCha20Poly1305(SEAL).encrypt(nonce, b"\x01" * 32 + b"\x02" * 32, public)
    body = public + nonce + sealed
    return body + key.private_key.sign(body)


def public_part(token: bytes) -> bytes:
    return token[: -(12 + 80 + 64)]


@pytest.mark.parametrize("bad", [b"MAIN", b"ma_n", b"-ain", b"m\xe4in", b"m" * 64])
def test_a_signed_destination_that_is_not_a_dns_label_is_malformed(bad: bytes) -> None:
    token = issue(grant(world="main", zone="main"))
    public = public_part(token)
    assert public.endswith(b"\x04main\x04main")
    head = public[: -len(b"\x04main\x04main")]
    assert open_(sign(public)).world == "main"  # the forging itself is sound
    as_world = head + bytes((len(bad),)) + bad + b"\x04main"
    as_zone = head + b"\x04main" + bytes((len(bad),)) + bad
    assert reason(sign(as_world)) == "MALFORMED"
    assert reason(sign(as_zone)) == "MALFORMED"


def test_a_destination_running_past_the_end_is_malformed() -> None:
    public = public_part(issue(grant(world="main", zone="")))
    # A zone length that swallows the nonce, sealed keys and signature.
    assert reason(sign(public[:-1] + b"\x3f")) == "MALFORMED"


def test_channel_keys_are_not_visible_in_the_token() -> None:
    g = grant(client_to_server_key=os.urandom(32), server_to_client_key=os.urandom(32))
    token = issue(g)
    assert g.client_to_server_key not in token
    assert g.server_to_client_key not in token
    assert g.client_to_server_key[:8] not in token


def test_same_grant_seals_differently_each_time() -> None:
    assert issue() != issue()


def test_expired() -> None:
    token = issue()
    assert reason(token, now=NOW + 30) == "EXPIRED"
    assert reason(token, now=NOW - 60) == "EXPIRED"  # issued in the future


def test_wrong_relay() -> None:
    assert reason(issue(), relay_address="10.0.0.3:7777") == "WRONG_RELAY"


def test_wrong_signing_key_or_unknown_kid() -> None:
    other = SigningKey.generate()
    assert reason(issue(key=other)) == "BAD_SIGNATURE"  # unknown kid
    assert reason(issue(key=other), public_keys={other.kid: KEY.public_key}) == "BAD_SIGNATURE"


def test_every_flipped_byte_is_rejected() -> None:
    token = issue()
    for i in range(len(token)):
        forged = bytearray(token)
        forged[i] ^= 0x01
        with pytest.raises(ConnectTokenError) as info:
            open_(bytes(forged))
        assert info.value.reason in {"MALFORMED", "BAD_SIGNATURE"}, i


def test_wrong_sealing_key() -> None:
    assert reason(issue(), sealing_key=os.urandom(32)) == "BAD_SIGNATURE"


def test_truncated_trailing_and_garbage_are_malformed() -> None:
    token = issue()
    assert reason(token[:-1]) == "MALFORMED"
    assert reason(token + b"\x00") == "MALFORMED"
    assert reason(b"") == "MALFORMED"
    assert reason(b"\x00" * 2000) == "MALFORMED"
    assert reason(b"XXXX" + token[4:]) == "MALFORMED"
    assert reason(token[:4] + b"\x01" + token[5:]) == "MALFORMED"  # version 1: gone
    assert reason(token[:4] + b"\x03" + token[5:]) == "MALFORMED"


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_random_bytes_never_crash(data: bytes) -> None:
    with pytest.raises(ConnectTokenError):
        open_(data)


def test_issue_refuses_out_of_range_fields() -> None:
    with pytest.raises(ValueError):
        issue(grant(token_id=b"short"))
    with pytest.raises(ValueError):
        issue(grant(relay_addresses=()))
    with pytest.raises(ValueError):
        issue(grant(relay_addresses=tuple(f"h{i}:1" for i in range(9))))
    with pytest.raises(ValueError):
        issue(grant(player_id=""))
    with pytest.raises(ValueError):
        issue(grant(player_id="x" * 200))
    with pytest.raises(ValueError):
        issue(grant(expires_at=NOW - 1))
    with pytest.raises(ValueError):
        issue(grant(zone="Zone-B"))
    with pytest.raises(ValueError):
        connect_token.issue_connect_token(grant(), signing_key=KEY, sealing_key=b"short")


def test_layout_matches_the_documented_offsets() -> None:
    g = grant(relay_addresses=("r:1",), player_id="p", session_id="s")
    token = issue(g)
    kid = KEY.kid.encode()
    assert token[:4] == b"TSCT" and token[4] == 2 and token[5] == len(kid)
    pos = 6 + len(kid)
    assert token[6:pos] == kid
    assert token[pos : pos + 16] == g.token_id
    pos += 16
    assert struct.unpack(">QQI", token[pos : pos + 20]) == (NOW, NOW + 30, 10)
    pos += 20
    assert token[pos : pos + 3] == b"\x00\x01p"
    assert token[pos + 3 : pos + 6] == b"\x00\x01s"
    assert token[pos + 6 : pos + 11] == b"\x01\x03r:1"
    assert token[pos + 11 : pos + 13] == b"\x00\x00"  # no world, no zone
    assert len(token) == pos + 13 + 12 + 80 + 64
    assert len(token) == connect_token.MIN_TOKEN_BYTES + len(kid) - 1 + 2
    routed = issue(
        grant(relay_addresses=("r:1",), player_id="p", session_id="s", world="w1", zone="z")
    )
    assert routed[pos + 11 : pos + 16] == b"\x02w1\x01z"
    assert len(routed) == len(token) + 3


def test_the_documented_example_opens() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "protocol" / "tokens.md").read_text()
    hex_token = doc.split("```\n")[-2].strip()  # the last code block: the example token
    key = SigningKey.from_private(Ed25519PrivateKey.from_private_bytes(bytes(range(32))), 0)
    assert key.kid == "1IG2tMH7J2wbJZnO"
    g = connect_token.open_connect_token(
        bytes.fromhex(hex_token),
        public_keys={key.kid: key.public_key},
        sealing_key=bytes(range(100, 132)),
        relay_address="127.0.0.1:7777",
        now=1_800_000_001,
    )
    assert g.client_to_server_key == b"\x11" * 32
    assert g.server_to_client_key == b"\x22" * 32
    assert (g.player_id, g.session_id, g.timeout_s) == ("player-1", "sess-1", 10)
    assert (g.world, g.zone) == ("main", "inst-5f2a9c1e0b7d4e3f8a6b1c2d")
    assert (g.issued_at, g.expires_at, g.relay_addresses) == (
        1_800_000_000,
        1_800_000_030,
        ("127.0.0.1:7777",),
    )
    assert g.token_id == bytes(range(0xA0, 0xB0))
