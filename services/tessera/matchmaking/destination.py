"""Destinations: which zone a match is sent to.

Open-world modes join the least-loaded ACTIVE open-world zone of the mode's world
that has room for the whole match under the mode's capacity, counting the players
every replica sent there since the zone's last heartbeat; instance zones are
never open-world destinations. Instance modes get a zone of their own, named
after the match; the store streams its creation to the operator (see
docs/MATCHMAKING.md, "Destinations").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tessera.v1 import zone_pb2

# Players booked shortly before a heartbeat may still be connecting when it is
# taken, so bookings are counted from this long before it: a zone's room is
# overcounted a little, never undercounted.
ARRIVAL_GRACE_MS = 5_000.0


@dataclass(frozen=True, slots=True)
class ZoneLoad:
    """What the zone registry says about one open-world zone, plus the players any
    replica booked there from ``counted_from_ms`` on (``sent``, from the store):
    the heartbeat's time less :data:`ARRIVAL_GRACE_MS`."""

    zone: str
    active: bool
    players: int
    counted_from_ms: float = 0.0
    sent: int = 0


def zone_loads(statuses: Mapping[str, zone_pb2.ZoneStatus]) -> list[ZoneLoad]:
    """The open-world zones' loads from their live heartbeats (zone -> ZoneStatus,
    as :func:`tessera.common.store.read_heartbeats` reads them); instance zones
    (``instance`` set) are skipped."""
    out = []
    for zone, status in statuses.items():
        if status.instance:
            continue
        active = status.state == zone_pb2.ZONE_STATE_ACTIVE
        # A non-finite clock counts every player sent in the store's window.
        updated = status.updated_at_ms if math.isfinite(status.updated_at_ms) else 0.0
        out.append(ZoneLoad(zone, active, status.players, max(0.0, updated - ARRIVAL_GRACE_MS)))
    return out


def pick_zone(
    loads: list[ZoneLoad], pending: Mapping[str, int], needed: int, capacity: int
) -> str | None:
    """The least-loaded active zone with room for ``needed`` more players, counting
    players sent there since its last heartbeat and those placed this tick but not
    claimed yet (``pending``); None if all are full."""
    best: tuple[int, str] | None = None
    for load in loads:
        players = load.players + load.sent + pending.get(load.zone, 0)
        if not load.active or players + needed > capacity:
            continue
        if best is None or (players, load.zone) < best:
            best = (players, load.zone)
    return None if best is None else best[1]
