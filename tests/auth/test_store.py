"""The auth store's scripts against a real Redis: rotation, revocation, limits."""

from __future__ import annotations

import asyncio
import time

import pytest

from tessera.auth import store
from tessera.auth.limits import Backoff
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


LOCK = Backoff(threshold=3, base_s=30.0, cap_s=900.0)


async def test_attempts_are_counted_until_the_threshold_then_refused(redis: Client) -> None:
    s = AuthStore(redis)
    counted = [await s.attempt("account", "u", LOCK, window_s=900) for _ in range(3)]
    assert [(a.locked_s, a.failures) for a in counted] == [(0, 1), (0, 2), (0, 3)]
    refused = await s.attempt("account", "u", LOCK, window_s=900)
    assert 29 < refused.locked_s <= 30 and refused.failures == 3  # not counted
    assert (await s.attempt("account", "v", LOCK, window_s=900)).failures == 1
    assert (await s.attempt("service", "u", LOCK, window_s=900)).failures == 1


async def test_a_lock_doubles_per_attempt_after_it_ends(redis: Client) -> None:
    s = AuthStore(redis)
    quick = Backoff(threshold=1, base_s=0.2, cap_s=0.4)
    assert (await s.attempt("account", "u", quick, window_s=60)).failures == 1
    assert 0 < (await s.attempt("account", "u", quick, window_s=60)).locked_s <= 0.2
    await asyncio.sleep(0.25)
    assert (await s.attempt("account", "u", quick, window_s=60)).failures == 2
    assert 0.2 < (await s.attempt("account", "u", quick, window_s=60)).locked_s <= 0.4
    await asyncio.sleep(0.45)
    assert (await s.attempt("account", "u", quick, window_s=60)).failures == 3
    assert 0.2 < (await s.attempt("account", "u", quick, window_s=60)).locked_s <= 0.4  # cap


async def test_concurrent_attempts_cannot_pass_the_threshold(redis: Client) -> None:
    s = AuthStore(redis)
    results = await asyncio.gather(
        *(s.attempt("account", "u", LOCK, window_s=60) for _ in range(30))
    )
    assert sorted(a.failures for a in results if a.locked_s == 0) == [1, 2, 3]


async def test_a_released_attempt_is_not_counted(redis: Client) -> None:
    s = AuthStore(redis)
    await s.attempt("account", "u", LOCK, window_s=60)
    await s.attempt("account", "u", LOCK, window_s=60)
    await s.release_attempt("account", "u")
    assert (await s.attempt("account", "u", LOCK, window_s=60)).failures == 2
    await s.clear_failures("account", "u")
    await s.release_attempt("account", "u")  # nothing to take back: no key is made
    assert await redis.exists(store.failures_key("account", "u")) == 0


async def test_address_failures_are_counted_apart_and_not_cleared(redis: Client) -> None:
    s = AuthStore(redis)
    assert await s.address_failed("1.2.3.4", window_s=60) == 1
    assert await s.address_failed("1.2.3.4", window_s=60) == 2
    attempt = await s.attempt("account", "u", LOCK, window_s=60, address="1.2.3.4")
    assert attempt.address_failures == 2
    await s.clear_failures("account", "u")
    after = await s.attempt("account", "u", LOCK, window_s=60, address="1.2.3.4")
    assert (after.failures, after.address_failures) == (1, 2)
    assert (
        await s.attempt("account", "u", LOCK, window_s=60, address="5.6.7.8")
    ).address_failures == 0


async def test_counts_expire_a_window_after_the_last(redis: Client) -> None:
    s = AuthStore(redis)
    await s.attempt("account", "u", LOCK, window_s=0.3)
    await s.address_failed("a", window_s=0.3)
    await asyncio.sleep(0.2)
    await s.attempt("account", "u", LOCK, window_s=0.3)
    await s.address_failed("a", window_s=0.3)
    await asyncio.sleep(0.2)  # 0.4 s after the first, 0.2 s after the last
    assert (
        await redis.exists(store.failures_key("account", "u"), store.failures_key("address", "a"))
        == 2
    )
    await asyncio.sleep(0.3)
    attempt = await s.attempt("account", "u", LOCK, window_s=0.3, address="a")
    assert (attempt.failures, attempt.address_failures) == (1, 0)


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
