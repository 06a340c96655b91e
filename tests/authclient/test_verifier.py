"""The access-token verifier: claims, cache, revocations, the revocation feed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tessera.auth.keys import SigningKey
from tessera.auth.store import AuthStore
from tessera.authclient.verifier import Verifier
from tessera.common import store as common_store
from tessera.harness.redis import LocalRedis
from tessera.wire.access_token import TokenError

from .conftest import KEY, NOW, Clock, token_for


def reason(verifier: Verifier, token: str, roles: tuple[str, ...] = ()) -> str:
    with pytest.raises(TokenError) as info:
        verifier.verify(token, roles=roles)
    return info.value.reason


def test_verify_and_cache_still_checks_expiry(verifier: Verifier, clock: Clock) -> None:
    token = token_for(exp=60)
    assert verifier.verify(token).sub == "acc1"
    assert verifier.verify(token).sub == "acc1"  # cached
    clock.now += 70
    assert reason(verifier, token) == "EXPIRED"


def test_revocation_applies_to_cached_tokens(verifier: Verifier, clock: Clock) -> None:
    token = token_for(sid="s9")
    verifier.verify(token)
    verifier.revoke("s9", NOW + 1000)
    assert reason(verifier, token) == "REVOKED"
    assert verifier.verify(token_for(sid="other")).sid == "other"
    clock.now += 1001
    verifier.prune()
    assert not verifier.is_revoked("s9")


def test_roles_checked_on_cached_tokens(verifier: Verifier) -> None:
    token = token_for(roles=("player",))
    verifier.verify(token)
    assert reason(verifier, token, ("admin",)) == "FORBIDDEN"
    assert verifier.verify(token, roles=("admin", "player")).sub == "acc1"


def test_key_change_drops_cache(verifier: Verifier) -> None:
    token = token_for()
    verifier.verify(token)
    new = SigningKey.generate()
    verifier.set_keys({new.kid: new.public_key})
    assert reason(verifier, token) == "UNKNOWN_KEY"


def test_invalid_tokens_are_not_cached(verifier: Verifier) -> None:
    token = token_for()
    h, p, _ = token.split(".")
    forged = f"{h}.{p}.{'A' * 86}"
    assert reason(verifier, forged) == "BAD_SIGNATURE"
    assert reason(verifier, forged) == "BAD_SIGNATURE"


def test_cache_is_bounded(clock: Clock) -> None:
    verifier = Verifier({KEY.kid: KEY.public_key}, clock=clock, cache_size=3)
    for i in range(10):
        verifier.verify(token_for(sid=f"s{i}"))
    assert len(verifier._cache) <= 3


@pytest.mark.integration
async def test_revocation_feed_survives_a_redis_restart(tmp_path: Path) -> None:
    server = LocalRedis(tmp_path)
    server.start()
    verifier = Verifier({KEY.kid: KEY.public_key})
    client = common_store.connect(server.url)
    try:
        await verifier.start(server.url, timeout_s=10)
        auth_store = AuthStore(client)
        await auth_store.revoke_session("before", until=time.time() + 60, now=time.time())
        await _eventually(lambda: verifier.is_revoked("before"), 2.0)
        server.restart()
        await auth_store.revoke_session("after", until=time.time() + 60, now=time.time())
        await _eventually(lambda: verifier.is_revoked("after"), 10.0)
    finally:
        await verifier.close()
        await client.aclose()
        server.stop()


async def _eventually(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
