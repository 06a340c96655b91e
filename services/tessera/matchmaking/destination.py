"""Destinations: which zone a match is sent to.

Open-world modes join the least-loaded ACTIVE zone of the mode's world that has
room for the whole match under the mode's capacity. Instance modes get a zone
of their own, named after the match; the store records an instance request for
the operator (see docs/MATCHMAKING.md, "Destinations").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tessera.v1 import zone_pb2


@dataclass(frozen=True, slots=True)
class ZoneLoad:
    """What the zone registry says about one zone."""

    zone: str
    active: bool
    players: int
    updated_at_ms: float = 0.0


def zone_loads(statuses: Mapping[str, bytes | None]) -> list[ZoneLoad]:
    """Parse zone heartbeats (serialized ZoneStatus); missing or corrupt ones are skipped."""
    out = []
    for zone, raw in statuses.items():
        if raw is None:
            continue
        try:
            status = zone_pb2.ZoneStatus.FromString(raw)
        except Exception:  # a corrupt heartbeat is treated as absent
            continue
        active = status.state == zone_pb2.ZONE_STATE_ACTIVE
        out.append(ZoneLoad(zone, active, status.players, status.updated_at_ms))
    return out


def pick_zone(
    loads: list[ZoneLoad], pending: Mapping[str, int], needed: int, capacity: int
) -> str | None:
    """The least-loaded active zone with room for ``needed`` more players, counting
    players already sent there since its last heartbeat (``pending``); None if full."""
    best: tuple[int, str] | None = None
    for load in loads:
        if not load.active:
            continue
        players = load.players + pending.get(load.zone, 0)
        if players + needed > capacity:
            continue
        if best is None or (players, load.zone) < best:
            best = (players, load.zone)
    return None if best is None else best[1]


def instance_zone(match_id: str) -> str:
    """The name of the dedicated instance zone of a match (a DNS label)."""
    return "inst-" + match_id[:24].lower()


def pending_players(
    sent: Sequence[tuple[str, float, int]], loads: Sequence[ZoneLoad]
) -> dict[str, int]:
    """Players sent to each zone after its last heartbeat, from ``(zone, sent_at_ms, n)``."""
    seen = {load.zone: load.updated_at_ms for load in loads}
    out: dict[str, int] = {}
    for zone, at_ms, n in sent:
        if at_ms >= seen.get(zone, 0.0):
            out[zone] = out.get(zone, 0) + n
    return out
