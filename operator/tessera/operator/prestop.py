"""The zone container's preStop hook: ``python -m tessera.operator.prestop``.

If the zone is draining, wait until it reports Drained (or ``--timeout``
passes), so Kubernetes does not SIGTERM it with entities still to hand away.
A zone that is not draining (a pod evicted or rolled) returns at once: on
SIGTERM it checkpoints its players and its replacement restores them.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc

from tessera.common import tls
from tessera.v1 import zone_pb2, zone_pb2_grpc

WAIT_STATES = (zone_pb2.ZONE_STATE_DRAINING,)


def should_wait(state: int) -> bool:
    """Whether the hook keeps the zone alive in this state."""
    return state in WAIT_STATES


async def wait_for_drain(address: str, timeout_s: float, poll_s: float = 0.5) -> str:
    """Poll GetStatus until the zone no longer drains; returns why it stopped."""
    deadline = time.monotonic() + timeout_s
    async with tls.channel(address, zone=True) as channel:
        stub: zone_pb2_grpc.ZoneAsyncStub = zone_pb2_grpc.ZoneStub(channel)
        while time.monotonic() < deadline:
            try:
                status = await stub.GetStatus(zone_pb2.GetStatusRequest(), timeout=2.0)
            except grpc.aio.AioRpcError as err:
                return f"zone unreachable: {err.code().name}"
            if not should_wait(status.state):
                return zone_pb2.ZoneState.Name(status.state)
            await asyncio.sleep(poll_s)
    return "timeout"


def main() -> None:
    parser = argparse.ArgumentParser(description="wait for a draining zone to finish")
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    print(asyncio.run(wait_for_drain(args.address, args.timeout)), flush=True)


if __name__ == "__main__":
    main()
