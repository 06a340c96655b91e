"""The auth client's only Redis access: the revocation keys and the feed that reads them.

Auth writes both keys (``tessera.auth.store`` imports their names from here):

- ``tessera:{auth}:revoked`` ZSET: revoked session id -> Unix time until which
  its access tokens could still verify (older entries are pruned by auth).
- ``tessera:{auth}:revocations`` pub/sub: ``<sid> <until>`` published on every
  revocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from tessera.common.store import Client, follow_slot

log = logging.getLogger(__name__)

# Auth's keys all share the {auth} hash tag (one Redis Cluster slot).
PREFIX = "tessera:{auth}:"
REVOKED = PREFIX + "revoked"
REVOCATIONS = PREFIX + "revocations"
# The revoked set is read again this often, in case the subscription missed a message.
REVOCATION_RELOAD_S = 30.0


def parse_revocation(message: bytes | str) -> tuple[str, float] | None:
    """``b"<sid> <until>"`` -> (sid, until); None for anything else."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    sid, _, until = text.partition(" ")
    try:
        return (sid, float(until)) if sid else None
    except ValueError:
        return None


async def revoked_sessions(redis: Client, now: float) -> dict[str, float]:
    """Session id -> until, for every revocation that still matters at ``now``."""
    rows: Any = await redis.zrangebyscore(REVOKED, now, "+inf", withscores=True)
    return {_text(sid): float(until) for sid, until in rows}


async def follow_revocations(
    redis: Client,
    *,
    revoke: Callable[[str, float], None],
    prune: Callable[[], None],
    ready: asyncio.Event,
    clock: Callable[[], float],
) -> None:
    """Subscribe, then load the revoked set (no gap), then apply messages; forever.

    ``ready`` is set once the first load is applied. On any Redis error: back
    off, resubscribe and reload, so revocations published while disconnected
    are not missed.
    """
    backoff = 0.1
    task = asyncio.current_task()
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await follow_slot(redis, REVOCATIONS)
            await pubsub.subscribe(REVOCATIONS)
            for sid, until in (await revoked_sessions(redis, clock())).items():
                revoke(sid, until)
            ready.set()
            backoff = 0.1
            reload_at = time.monotonic() + REVOCATION_RELOAD_S
            while True:
                if task is not None and task.cancelling():
                    # redis-py can swallow a cancellation that lands while it
                    # connects; honour it here rather than run on forever.
                    raise asyncio.CancelledError
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    parsed = parse_revocation(message["data"])
                    if parsed is not None:
                        revoke(*parsed)
                if time.monotonic() >= reload_at:
                    # Belt and braces: a reconnect inside the client could drop messages.
                    for sid, until in (await revoked_sessions(redis, clock())).items():
                        revoke(sid, until)
                    prune()
                    reload_at = time.monotonic() + REVOCATION_RELOAD_S
        except (RedisError, OSError) as err:
            log.warning("revocation feed interrupted", extra={"error": str(err)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
