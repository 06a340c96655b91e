"""The auth store's scripts against a real Redis: rotation, revocation, limits."""

from __future__ import annotations

import asyncio
import time

import pytest

from tessera.auth import store
from tessera.auth.store import AuthStore
from tessera.authclient import store as client_store
from tessera.common.store import Client

pytestmark = [pytest.mark.integration, pytest.mark.redis_cluster]
NOW = time.time()


async def session(s: AuthStore, sid: str, refresh: str, account_id: str = "acc") -> None:
    await s.create_session(
        session_id=sid,
        account_id=account_id,
        roles=("player",),
        kind="password",
        refresh_hash=refresh,
        ttl_s=100,
    )


async def test_rotation_reuse_and_unknown(redis: Client) -> None:
    s = AuthStore(redis)
    await session(s, "s1", "h0")
    ok = await s.rotate_refresh("h0", "h1", ttl_s=100, revoke_until=NOW + 60, now=NOW)
    assert (ok.status, ok.session_id, ok.account_id, ok.roles) == ("OK", "s1", "acc", ("player",))
    assert (
        await s.rotate_refresh("h1", "h2", ttl_s=100, revoke_until=NOW + 60, now=NOW)
    ).status == "OK"
    reused = await s.rotate_refresh("h0", "h9", ttl_s=100, revoke_until=NOW + 60, now=NOW)
    assert (reused.status, reused.session_id) == ("REUSED", "s1")
    gone = await s.rotate_refresh("h2", "h3", ttl_s=100, revoke_until=NOW + 60, now=NOW)
    # An ended session's token still names its account (whose ban a refresh reports).
    assert (gone.status, gone.session_id, gone.account_id) == ("GONE", "s1", "acc")
    await redis.set(store.refresh_key("old"), "s1")  # written before tokens named accounts
    old = await s.rotate_refresh("old", "h5", ttl_s=100, revoke_until=NOW + 60, now=NOW)
    assert (old.status, old.session_id, old.account_id) == ("GONE", "s1", "")
    unknown = await s.rotate_refresh("nope", "h4", ttl_s=100, revoke_until=NOW + 60, now=NOW)
    assert unknown.status == "UNKNOWN"
    assert await client_store.revoked_sessions(redis, NOW) == {"s1": NOW + 60}
    assert not await redis.exists(store.refresh_key("h9"))  # no token minted on reuse


async def test_concurrent_rotation_of_one_token_revokes(redis: Client) -> None:
    s = AuthStore(redis)
    await session(s, "s1", "h0")
    results = await asyncio.gather(
        *(s.rotate_refresh("h0", f"n{i}", ttl_s=100, revoke_until=NOW + 60, now=NOW)
          for i in range(5))
    )  # fmt: skip
    statuses = sorted(r.status for r in results)
    assert statuses.count("OK") == 1
    assert "REUSED" in statuses  # a second presentation of the same token is theft


async def test_revocation_is_published_and_stored(redis: Client) -> None:
    s = AuthStore(redis)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(client_store.REVOCATIONS)
    await session(s, "s1", "h1")
    assert await s.revoke_session("s1", until=NOW + 30, now=NOW)
    assert not await s.revoke_session("s1", until=NOW + 30, now=NOW)  # already gone
    message = None
    for _ in range(50):
        message = await pubsub.get_message(timeout=0.1)
        if message:
            break
    assert message is not None
    assert client_store.parse_revocation(message["data"]) == ("s1", NOW + 30)
    await pubsub.aclose()
    assert await client_store.revoked_sessions(redis, NOW + 31) == {}  # past the horizon


async def test_revoke_account_counts_live_sessions(redis: Client) -> None:
    s = AuthStore(redis)
    await session(s, "a", "ha", "acc1")
    await session(s, "b", "hb", "acc1")
    await session(s, "c", "hc", "acc2")
    assert await s.revoke_account("acc1", until=NOW + 30, now=NOW) == 2
    assert await s.revoke_account("acc1", until=NOW + 30, now=NOW) == 0
    assert set(await client_store.revoked_sessions(redis, NOW)) == {"a", "b"}
    assert (await s.rotate_refresh("hc", "hd", ttl_s=9, revoke_until=NOW, now=NOW)).status == "OK"


async def test_failures_lock_account_and_address(redis: Client) -> None:
    s = AuthStore(redis)
    limits = {"account_limit": 2, "address_limit": 3, "window_s": 60, "lockout_s": 30}
    assert await s.locked_for("u", "1.2.3.4") == 0
    assert await s.record_failure("u", "1.2.3.4", **limits) == (False, False)
    assert await s.record_failure("u", "1.2.3.4", **limits) == (True, False)
    assert 29 < await s.locked_for("u", "9.9.9.9") <= 30
    assert await s.record_failure("v", "1.2.3.4", **limits) == (False, True)
    assert await s.locked_for("w", "1.2.3.4") > 0
    assert await s.locked_for("w", "5.6.7.8") == 0


async def test_success_clears_account_failures(redis: Client) -> None:
    s = AuthStore(redis)
    limits = {"account_limit": 2, "address_limit": 100, "window_s": 60, "lockout_s": 30}
    await s.record_failure("u", "a", **limits)
    await s.clear_failures("u")
    assert await s.record_failure("u", "a", **limits) == (False, False)


async def test_registration_window(redis: Client) -> None:
    s = AuthStore(redis)
    assert await s.count_registration("1.2.3.4", limit=2, window_s=60) == 0
    assert await s.count_registration("1.2.3.4", limit=2, window_s=60) == 0
    assert 59 < await s.count_registration("1.2.3.4", limit=2, window_s=60) <= 60
    assert await s.count_registration("5.6.7.8", limit=2, window_s=60) == 0


async def test_spent_tokens_are_kept_for_the_reuse_window_only(redis: Client) -> None:
    s = AuthStore(redis)
    await session(s, "s1", "h0")
    rotation = await s.rotate_refresh(
        "h0", "h1", ttl_s=100, revoke_until=NOW, now=NOW, reuse_window_s=10
    )
    assert rotation.status == "OK"
    assert 0 < await redis.ttl(store.refresh_key("h0")) <= 10
    assert 90 < await redis.ttl(store.refresh_key("h1")) <= 100
