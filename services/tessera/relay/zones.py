"""The relay's choice of a zone for a player without a route, and of the zones it
keeps a link open to before any player is routed there, from the zone registry
(the ``ZoneMap`` and the ``ZoneStatus`` heartbeats :mod:`tessera.relay.store` reads).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from tessera.v1 import zone_pb2


def pick_zone(
    zone_map: zone_pb2.ZoneMap | None,
    statuses: Mapping[str, zone_pb2.ZoneStatus],
    *,
    skip: Collection[str] = (),
) -> str | None:
    """The zone a player without a route joins: the least loaded active zone.

    Zones in the map that are not ACTIVE (draining, standby) are skipped; without
    a map, any active zone with a heartbeat will do. Instance zones (heartbeat
    with ``instance`` set) are private to their match: never picked, map or not.
    Zones in ``skip`` (found unreachable) count as named by neither the map nor a
    heartbeat. Ties break by name.
    """
    active = zone_pb2.ZONE_STATE_ACTIVE
    alive = {n: s for n, s in statuses.items() if n not in skip}
    entries = [e for e in zone_map.zones if e.zone not in skip] if zone_map is not None else []
    names: list[str]
    if entries:
        names = [e.zone for e in entries if e.state in (active, 0)]
        names = [n for n in names if n not in alive or alive[n].state == active]
    else:
        names = [n for n, s in alive.items() if s.state == active]
    names = [n for n in names if n not in alive or not alive[n].instance]
    if not names:
        return None
    return min(names, key=lambda n: (alive[n].players if n in alive else 0, n))


# Zone states a relay links to ahead of its players: a zone that is or may soon be
# handed players (a standby is a replacement's target).
_WARM_STATES = (
    zone_pb2.ZONE_STATE_STARTING,
    zone_pb2.ZONE_STATE_STANDBY,
    zone_pb2.ZONE_STATE_ACTIVE,
)


def warm_zones(
    zone_map: zone_pb2.ZoneMap | None, statuses: Mapping[str, zone_pb2.ZoneStatus]
) -> list[str]:
    """The zones a relay links to before any of its players is routed there (a warm
    link), so that players handed to one find the link open: every zone of the map,
    and every zone with a heartbeat (a standby, not yet in the map, is what a
    replacement hands its players to), that has an address and is starting, standby
    or active. Not an instance zone (only its match's players go there, through a
    Join), nor one draining or drained by its heartbeat or by the map. Sorted."""
    entries = {e.zone: e for e in zone_map.zones} if zone_map is not None else {}
    out = []
    for name in sorted(set(entries) | set(statuses)):
        status, entry = statuses.get(name), entries.get(name)
        if status is not None and (status.instance or status.state not in _WARM_STATES):
            continue
        if entry is not None and entry.state not in (0, *_WARM_STATES):
            continue
        if (status is not None and status.address) or (entry is not None and entry.address):
            out.append(name)
    return out
