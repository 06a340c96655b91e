"""Checking the ownership invariants of a running world (tests, benchmarks, the demo).

:func:`scan` asks every zone for its entities (``GetStatus(include_entities)``),
reads the routing table and runs :func:`tessera.zone.invariants.check`;
:func:`settle` repeats the scan until it is clean or a timeout passes, because
zones are read one after another while handoffs move entities (a scan can catch
one mid-flight; a real violation persists). The zones' ``GetStatus`` needs a
``service`` or ``admin`` token: ``channel`` opens channels whose calls carry one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc

from tessera.common.store import Client
from tessera.v1 import zone_pb2, zone_pb2_grpc
from tessera.zone.invariants import Report, check
from tessera.zone.store import read_routes

Opener = Callable[[str], grpc.aio.Channel]


async def scan(
    redis: Client,
    world: str,
    addresses: dict[str, str],
    expected_players: set[str] | None = None,
    *,
    channel: Opener,
) -> Report:
    """Ask every zone (name -> gRPC address) for its entities, read the routes, check."""
    owned: dict[str, list[tuple[int, str]]] = {}
    unreachable: list[str] = []
    for name, address in sorted(addresses.items()):
        async with channel(address) as opened:
            stub = zone_pb2_grpc.ZoneStub(opened)
            try:
                status = await stub.GetStatus(
                    zone_pb2.GetStatusRequest(include_entities=True), timeout=2.0
                )
            except grpc.aio.AioRpcError:
                unreachable.append(name)
                continue
        owned[name] = list(zip(status.entity_ids, status.entity_players, strict=True))
    routes = {player: r.zone for player, r in (await read_routes(redis, world)).items()}
    return check(owned, routes, expected_players, unreachable)


async def settle(
    redis: Client,
    world: str,
    addresses: dict[str, str],
    expected_players: set[str] | None = None,
    *,
    channel: Opener,
    timeout_s: float = 5.0,
) -> Report:
    """Scan until the invariants hold or ``timeout_s`` passes; the last report."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = await scan(redis, world, addresses, expected_players, channel=channel)
        if report.ok or time.monotonic() >= deadline:
            return report
        await asyncio.sleep(0.05)
