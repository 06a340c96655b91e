"""The revocation feed: message format, the revoked set, and the subscription
against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.authclient import store
from tessera.common import store as common_store
from tessera.common.store import Client
from tessera.harness.redis import LocalRedis

pytestmark = pytest.mark.redis_cluster

NOW = time.time()


def test_parse_revocation() -> None:
    assert store.parse_revocation(b"sid 12.5") == ("sid", 12.5)
    assert store.parse_revocation("sid x") is None
    assert store.parse_revocation(b"") is None
    assert store.parse_revocation(b"\xff\xfe") is None


SIDS = st.text(st.characters(blacklist_characters=" ", blacklist_categories=["Cs"]), min_size=1)


@given(SIDS, st.floats(allow_nan=False, allow_infinity=False))
def test_parse_revocation_reads_what_auth_publishes(sid: str, until: float) -> None:
    assert store.parse_revocation(f"{sid} {until!r}".encode()) == (sid, until)


def test_keys_share_auths_hash_tag() -> None:
    assert store.REVOKED == "tessera:{auth}:revoked"
    assert store.REVOCATIONS == "tessera:{auth}:revocations"


@pytest.mark.integration
async def test_revoked_sessions_keeps_only_live_horizons(redis: Client) -> None:
    await redis.zadd(store.REVOKED, {"old": NOW - 1, "live": NOW + 60, "soon": NOW + 5})
    assert await store.revoked_sessions(redis, NOW) == {"live": NOW + 60, "soon": NOW + 5}
    assert await store.revoked_sessions(redis, NOW + 61) == {}


@pytest.mark.integration
async def test_follow_revocations_loads_then_applies_messages(redis: Client) -> None:
    now = time.time()  # not the import's: the feed drops revocations already over
    await redis.zadd(store.REVOKED, {"before": now + 60})
    revoked: dict[str, float] = {}
    prunes: list[None] = []
    ready = asyncio.Event()
    feed = asyncio.create_task(
        store.follow_revocations(
            redis,
            revoke=revoked.__setitem__,
            prune=lambda: prunes.append(None),
            ready=ready,
            clock=time.time,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 5.0)
        assert revoked == {"before": now + 60}
        await redis.publish(store.REVOCATIONS, "not-a-revocation")
        await redis.publish(store.REVOCATIONS, f"after {now + 30!r}")
        deadline = time.monotonic() + 5.0
        while "after" not in revoked:
            assert time.monotonic() < deadline, "revocation not applied"
            await asyncio.sleep(0.02)
        assert revoked == {"before": now + 60, "after": now + 30}
    finally:
        feed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed


async def test_follow_revocations_stops_when_cancelled_while_it_connects(
    redis_server: LocalRedis,
) -> None:
    """A cancellation that lands while redis-py connects can be swallowed by it; the
    feed must still end (a verifier closed right after it started hung its service's
    stop)."""
    for delay in (0.0, 0.0005, 0.001, 0.002, 0.005, 0.02):
        for _ in range(3):
            client = common_store.connect(redis_server.url)
            feed = asyncio.create_task(
                store.follow_revocations(
                    client,
                    revoke=lambda _sid, _until: None,
                    prune=lambda: None,
                    ready=asyncio.Event(),
                    clock=time.time,
                )
            )
            await asyncio.sleep(delay)
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(feed, 5.0)
            assert feed.done()
            await client.aclose()
