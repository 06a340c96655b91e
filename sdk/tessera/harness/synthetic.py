"""Adding synthetic players to a running world (docs/ZONE.md, "Synthetic players"):
each one a ``Join`` with ``synthetic`` set, at a random point of a zone (zones
chosen by area), sent to that zone. The zones must run with ``TESSERA_SYNTHETIC=true``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any

import grpc

from tessera.harness.tokens import LOCAL
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc
from tessera.wire.geometry import Rect

RETRIED = (
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)
# A zone that stopped taking joins (re-bounded, draining) between the caller's look
# at the map and the Join: the player is not added.
SKIPPED = (grpc.StatusCode.FAILED_PRECONDITION,)


async def spawn(
    zones: Mapping[str, tuple[str, Rect]],
    players: list[str],
    *,
    seed: int = 0,
    concurrency: int = 16,
    attempts: int = 5,
) -> list[str]:
    """Join ``players`` as synthetic players at random points of the zones' area
    (``zones``: name -> (gRPC address, rectangle)); returns those who joined. A
    Join that timed out and is then refused as ``ALREADY_EXISTS`` had joined; one
    refused by a zone no longer taking joins is skipped; any other refusal raises
    its ``grpc.aio.AioRpcError``. A zone still unreachable after ``attempts`` is
    taken as gone (merged or replaced since the caller's look): its players are
    skipped too."""
    rng = random.Random(seed)
    area = {name: rect for name, (_address, rect) in zones.items()}
    channels = {name: LOCAL.channel(address) for name, (address, _r) in zones.items()}
    stubs: dict[str, Any] = {n: zone_pb2_grpc.ZoneStub(c) for n, c in channels.items()}
    names = sorted(area)
    gate = asyncio.Semaphore(concurrency)

    joined: list[str] = []

    async def join(player: str, name: str) -> None:
        r = area[name]
        x, z = rng.uniform(r.min_x, r.max_x), rng.uniform(r.min_z, r.max_z)
        request = zone_pb2.JoinRequest(
            player_id=player, spawn=common_pb2.Vec3(x=x, z=z), synthetic=True
        )
        async with gate:
            for attempt in range(attempts):
                try:
                    await stubs[name].Join(request, timeout=30.0)
                    joined.append(player)
                    return
                except grpc.aio.AioRpcError as err:
                    if attempt and err.code() == grpc.StatusCode.ALREADY_EXISTS:
                        joined.append(player)
                        return
                    if err.code() in SKIPPED:
                        return
                    if err.code() == grpc.StatusCode.UNAVAILABLE and attempt == attempts - 1:
                        return  # the zone went away (merged, replaced) since the look
                    if err.code() not in RETRIED or attempt == attempts - 1:
                        raise
                    await asyncio.sleep(0.1 * (attempt + 1))

    # Spread over the zones by area, so no zone starts with everyone.
    total = sum(r.area for r in area.values()) or 1.0
    weights = [area[n].area / total for n in names]
    chosen = rng.choices(names, weights=weights, k=len(players))
    try:
        await asyncio.gather(*(join(p, n) for p, n in zip(players, chosen, strict=True)))
    finally:
        await asyncio.gather(*(c.close(None) for c in channels.values()))
    return joined
