"""Rules of the console's admin actions (pure): which zone takes a drained zone's
players, and what a player id or kick reason may be.

The operator drains a zone into the sibling it was split from (its planner's
``sibling_pairs``); that needs the split history only the operator holds. The
part of its rule that the shared geometry exports is :meth:`Rect.union`: the
two rectangles must share a full edge, so together they form one rectangle.
The console drains into such a neighbour, the one with the fewest players
(then by name), and refuses when there is none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from tessera.console.frame import ZoneRow
from tessera.wire.geometry import Rect

PLAYER_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


class Refused(Exception):
    """An admin action that cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def drain_target(zone: str, zones: Sequence[ZoneRow], map_zones: Mapping[str, Rect]) -> str:
    """The active neighbour that takes ``zone``'s players; :class:`Refused` when
    the zone cannot be drained by the console or no neighbour qualifies."""
    by_name = {z.name: z for z in zones}
    row = by_name.get(zone)
    if row is None:
        raise Refused(404, f"zone {zone!r} has no live heartbeat")
    if row.instance:
        raise Refused(409, f"zone {zone!r} is an instance zone: the operator ends it")
    if row.state != "ACTIVE" or zone not in map_zones:
        raise Refused(409, f"zone {zone!r} is {row.state.lower()}, not an active zone of the map")
    own = map_zones[zone]
    candidates = [
        by_name[name]
        for name, rect in map_zones.items()
        if name != zone
        and name in by_name
        and by_name[name].state == "ACTIVE"
        and own.union(rect) is not None
    ]
    if not candidates:
        raise Refused(
            409,
            f"zone {zone!r} has no active neighbour sharing a full edge with it "
            "(the rule the operator merges by); nothing was drained",
        )
    return min(candidates, key=lambda z: (z.players, z.name)).name


def check_player(player: str) -> str:
    """The player id of a kick, or :class:`Refused` (400) naming what is wrong."""
    if PLAYER_ID.fullmatch(player) is None:
        raise Refused(400, "player id must be 1-128 characters of letters, digits and ._:@-")
    return player
