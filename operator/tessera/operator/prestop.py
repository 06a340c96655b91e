"""The zone container's preStop hook: ``python -m tessera.operator.prestop``.

If the zone is draining, wait until it reports Drained (or ``--timeout``
passes), so Kubernetes does not SIGTERM it with entities still to hand away.
A zone that is not draining (a pod evicted or rolled) returns at once: on
SIGTERM it checkpoints its players and its replacement restores them. So does
a zone that never heartbeated (nothing to hand away); one whose heartbeat
lapsed (an overloaded zone missing beats may be draining, players inside) is
waited for until a heartbeat tells, or the timeout.

The hook reads the zone's own heartbeat from Redis with the container's
settings (TESSERA_REDIS_URL, TESSERA_WORLD, TESSERA_ZONE) rather than calling
the zone's ``GetStatus``: the zone pod holds no credentials its own gRPC accepts.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from redis.exceptions import RedisError

from tessera.common import store
from tessera.common.config import Env, load_or_exit
from tessera.common.store import Client
from tessera.v1 import zone_pb2
from tessera.wire.names import NAME_RE

WAIT_STATES = (zone_pb2.ZONE_STATE_DRAINING,)


def should_wait(state: int) -> bool:
    """Whether the hook keeps the zone alive in this state."""
    return state in WAIT_STATES


async def wait_for_drain(
    redis: Client, world: str, zone: str, timeout_s: float, poll_s: float = 0.5
) -> str:
    """Poll the zone's heartbeat until it no longer drains; returns why it stopped."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = await store.read_heartbeat(redis, world, zone)
            # No heartbeat: the zone never started, or its heartbeat lapsed.
            lapsed = status is None and await store.zone_registered(redis, world, zone)
        except RedisError as err:
            return f"redis unreachable: {type(err).__name__}"
        if status is None and not lapsed:
            return "no heartbeat"
        if status is not None and not should_wait(status.state):
            return zone_pb2.ZoneState.Name(status.state)
        await asyncio.sleep(poll_s)
    return "timeout"


async def _run(timeout_s: float) -> str:
    env = Env()
    redis_url, world, zone = load_or_exit(
        lambda: (
            env.redis_url("REDIS_URL", "redis://127.0.0.1:6379/0"),
            env.string("WORLD", "default", pattern=NAME_RE.pattern),
            env.string("ZONE", "zone-0", pattern=NAME_RE.pattern),
        )
    )
    redis = store.connect(redis_url)
    try:
        return await wait_for_drain(redis, world, zone, timeout_s)
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="wait for a draining zone to finish")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    print(asyncio.run(_run(args.timeout)), flush=True)


if __name__ == "__main__":
    main()
