"""Session identifiers, refresh-token digests and claims."""

from __future__ import annotations

import hashlib

from tessera.auth import sessions


def test_ids_and_tokens_are_random_and_sized() -> None:
    assert len(sessions.new_account_id()) == 32
    assert len(sessions.new_session_id()) == 22
    assert len(sessions.new_refresh_token()) == 43
    assert len({sessions.new_refresh_token() for _ in range(100)}) == 100


def test_digest_is_sha256_hex() -> None:
    assert sessions.digest("abc") == hashlib.sha256(b"abc").hexdigest()


def test_access_claims_and_horizon() -> None:
    c = sessions.access_claims(
        account_id="a",
        session_id="s",
        roles=("player",),
        kid="k",
        issuer="i",
        audience="u",
        now=100.7,
        ttl_s=900,
    )
    assert (c.iat, c.exp, c.sub, c.sid, c.kid) == (100, 1000, "a", "s", "k")
    assert sessions.revocation_horizon(100.7, access_ttl_s=900, leeway_s=5) > c.exp + 5


def test_roles() -> None:
    admins = frozenset({"acc-root"})
    assert sessions.roles_for("acc-root", admins) == ("player", "admin")
    assert sessions.roles_for("acc-bob", admins) == ("player",)


def test_client_address() -> None:
    assert sessions.client_address("ipv4:127.0.0.1:5555") == "127.0.0.1"
    assert sessions.client_address("ipv6:[::1]:5555") == "::1"
    assert sessions.client_address("unix:/tmp/sock") == "unix"
    assert sessions.client_address("") == "unknown"
