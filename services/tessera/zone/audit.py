"""Checking the ownership invariants of a running world (tests, benchmarks, the demo).

:func:`scan` asks every zone for its entities (``GetStatus(include_entities)``),
reads the routing table before and after (players whose route changed in between
were handed over mid-scan and are not judged) and, between the first read and
the zones' answers, the COMMITs waiting in the zones' inboxes (their players may
be in transit, not lost), and runs
:func:`tessera.zone.invariants.check`; :func:`settle` repeats the scan until one
is clean and judged every player where it is (nobody moved mid-scan or in
transit) or a timeout passes. The zones' ``GetStatus`` needs a
``service`` or ``admin`` token: ``channel`` opens channels whose calls carry one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

import grpc

from tessera.common.store import Client
from tessera.v1 import zone_pb2, zone_pb2_grpc
from tessera.zone.invariants import Report, check, moved
from tessera.zone.store import read_commits, read_routes

Opener = Callable[[str], grpc.aio.Channel]


async def scan(
    redis: Client,
    world: str,
    addresses: dict[str, str],
    expected_players: set[str] | None = None,
    *,
    channel: Opener,
) -> Report:
    """Ask every zone (name -> gRPC address) for its entities, all at once, between
    two reads of the routes; check."""
    before = await read_routes(redis, world)
    names = sorted(addresses)
    # The inboxes after the first read of the routes and before the zones answer: a
    # COMMIT for a route that stays unchanged was queued before this read; if it is
    # not here, its zone had handled it before answering; if it is, the zone may
    # not have taken it yet when it answered (the player is in transit).
    inboxes = await asyncio.gather(*(read_commits(redis, world, n) for n in names))
    answers = await asyncio.gather(*(_entities(addresses[n], channel) for n in names))
    after = await read_routes(redis, world)
    queued = {
        (n, player, epoch) for n, c in zip(names, inboxes, strict=True) for player, epoch in c
    }
    committed = {
        player: route.zone
        for player, route in after.items()
        if (route.zone, player, route.epoch) in queued
    }
    owned = {n: a for n, a in zip(names, answers, strict=True) if a is not None}
    unreachable = [n for n, a in zip(names, answers, strict=True) if a is None]
    routes = {player: r.zone for player, r in after.items()}
    raw = {player: r.raw for player, r in before.items()}
    shifted = moved(raw, {player: r.raw for player, r in after.items()})
    return check(
        owned,
        routes,
        expected_players,
        unreachable=unreachable,
        moved=shifted,
        committed=committed,
    )


async def _entities(address: str, channel: Opener) -> list[tuple[int, str]] | None:
    """One zone's ``(entity id, player id)`` pairs; None if it did not answer in 2 s."""
    async with channel(address) as opened:
        try:
            status = await zone_pb2_grpc.ZoneStub(opened).GetStatus(
                zone_pb2.GetStatusRequest(include_entities=True), timeout=2.0
            )
        except grpc.aio.AioRpcError:
            return None
    return list(zip(status.entity_ids, status.entity_players, strict=True))


async def settle(
    redis: Client,
    world: str,
    addresses: dict[str, str],
    expected_players: set[str] | None = None,
    *,
    channel: Opener,
    timeout_s: float = 5.0,
) -> Report:
    """Scan until the invariants hold with no player moved mid-scan or in transit,
    or ``timeout_s`` passes; the last report, in which players still in transit
    then count as lost (their COMMIT was not taken in time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = await scan(redis, world, addresses, expected_players, channel=channel)
        if report.ok and not report.moved and not report.in_transit:
            return report
        if time.monotonic() >= deadline:
            return replace(report, lost=sorted(report.lost + report.in_transit))
        await asyncio.sleep(0.05)
