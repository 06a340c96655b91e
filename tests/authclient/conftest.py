"""What the verifier and access-interceptor tests share: a signing key, a settable
clock and tokens signed with that key."""

from __future__ import annotations

import pytest

from tessera.auth.keys import SigningKey
from tessera.authclient.verifier import Verifier
from tessera.wire import access_token
from tessera.wire.access_token import Claims

KEY = SigningKey.generate()
NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def token_for(sid: str = "s1", roles: tuple[str, ...] = ("player",), exp: int = 900) -> str:
    claims = Claims(
        sub="acc1",
        sid=sid,
        roles=roles,
        iat=int(NOW),
        exp=int(NOW) + exp,
        iss="tessera",
        aud="tessera",
        kid=KEY.kid,
    )
    return access_token.encode(claims, KEY.private_key)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(clock: Clock) -> Verifier:
    return Verifier({KEY.kid: KEY.public_key}, clock=clock)
