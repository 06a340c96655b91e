"""Resume credentials: sealed for every relay of the world, bound to the player,
session and world, expiring, and refused when forged or malformed."""

from __future__ import annotations

import os

import pytest

from tessera.relay import resume


def grant(now: float = 1000.0) -> resume.ResumeGrant:
    return resume.new_grant(
        player_id="alice",
        session_id="sid-1",
        world="w",
        relay_id="relay-a",
        timeout_s=10.0,
        now=now,
    )


def test_a_credential_opens_with_the_key_derived_from_the_same_connect_key() -> None:
    connect_key = os.urandom(32)
    issued = grant()
    blob = resume.seal(issued, resume.derive_key(connect_key))
    assert len(blob) < 1196  # fits a RESUME datagram
    opened = resume.open_credential(blob, resume.derive_key(connect_key), now=1001.0)
    assert opened == issued
    assert opened.expires_at == 1000.0 + resume.LIFETIME_S
    # Fresh channel keys for the resumed connection, and a fresh id, every time.
    other = grant()
    assert other.token_id != issued.token_id
    assert other.client_to_server_key != issued.client_to_server_key


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "malformed"),
        (b"\x02" + bytes(60), "malformed"),
        (b"\x01" + os.urandom(80), "forged"),
    ],
)
def test_malformed_and_forged_credentials_are_refused(blob: bytes, reason: str) -> None:
    with pytest.raises(resume.ResumeError) as info:
        resume.open_credential(blob, resume.derive_key(os.urandom(32)), now=0.0)
    assert info.value.reason == reason


def test_another_worlds_key_a_flipped_bit_or_an_expired_credential_is_refused() -> None:
    key = resume.derive_key(os.urandom(32))
    blob = resume.seal(grant(), key)
    with pytest.raises(resume.ResumeError) as info:
        resume.open_credential(blob, resume.derive_key(os.urandom(32)), now=1000.0)
    assert info.value.reason == "forged"
    flipped = bytearray(blob)
    flipped[-20] ^= 1
    with pytest.raises(resume.ResumeError) as info:
        resume.open_credential(bytes(flipped), key, now=1000.0)
    assert info.value.reason == "forged"
    with pytest.raises(resume.ResumeError) as info:
        resume.open_credential(blob, key, now=1000.0 + resume.LIFETIME_S + 1)
    assert info.value.reason == "expired"
