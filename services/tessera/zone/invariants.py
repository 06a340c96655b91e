"""The world's ownership invariants, checked over every zone and the routing table.

Exactly one zone owns each entity; each player is owned by the zone its route
names; no expected player is missing. :func:`check` is pure; :func:`scan`
collects the zones' entity lists (``GetStatus(include_entities)``) and the
routes, and :func:`settle` repeats the scan until it is clean or a timeout
passes, because zones are read one after another while handoffs move entities
(a scan can catch one mid-flight; a real violation persists).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
from redis.asyncio import Redis

from tessera.v1 import zone_pb2, zone_pb2_grpc
from tessera.zone.store import Route, read_routes


@dataclass
class Report:
    """What a scan found."""

    zones: int = 0
    entities: int = 0
    players: int = 0
    duplicates: list[int] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    misrouted: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.lost or self.misrouted or self.unreachable)


def check(
    zones: dict[str, zone_pb2.ZoneStatus],
    routes: dict[str, Route],
    expected_players: set[str] | None = None,
) -> Report:
    """The invariants over statuses listing their entities and the routing table."""
    report = Report(zones=len(zones))
    owners: Counter[int] = Counter()
    where: dict[str, list[str]] = {}
    for name, status in zones.items():
        owners.update(status.entity_ids)
        for player in status.entity_players:
            if player:
                where.setdefault(player, []).append(name)
    report.entities = len(owners)
    report.players = len(where)
    report.duplicates = sorted(eid for eid, n in owners.items() if n > 1)
    for player, names in sorted(where.items()):
        route = routes.get(player)
        if len(names) == 1 and (route is None or route.zone != names[0]):
            report.misrouted.append(player)
    expected = expected_players if expected_players is not None else set(routes)
    report.lost = sorted(p for p in expected if p not in where)
    return report


async def scan(
    redis: Redis, world: str, addresses: dict[str, str], expected_players: set[str] | None = None
) -> Report:
    """Ask every zone (name -> gRPC address) for its entities, read the routes, check."""
    statuses: dict[str, zone_pb2.ZoneStatus] = {}
    unreachable: list[str] = []
    for name, address in sorted(addresses.items()):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = zone_pb2_grpc.ZoneStub(channel)
            try:
                statuses[name] = await stub.GetStatus(
                    zone_pb2.GetStatusRequest(include_entities=True), timeout=2.0
                )
            except grpc.aio.AioRpcError:
                unreachable.append(name)
    report = check(statuses, await read_routes(redis, world), expected_players)
    report.unreachable = unreachable
    return report


async def settle(
    redis: Redis,
    world: str,
    addresses: dict[str, str],
    expected_players: set[str] | None = None,
    *,
    timeout_s: float = 5.0,
) -> Report:
    """Scan until the invariants hold or ``timeout_s`` passes; the last report."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = await scan(redis, world, addresses, expected_players)
        if report.ok or time.monotonic() >= deadline:
            return report
        await asyncio.sleep(0.05)
