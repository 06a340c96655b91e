"""Rules of the console's admin actions (pure): which zone takes a drained zone's
players, what a player id or kick reason may be, what a ban form may hold and
what an audit read may ask for.

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
from dataclasses import dataclass
from typing import Any

from tessera.console.frame import ZoneRow
from tessera.wire.geometry import Rect

PLAYER_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
MAX_BAN_REASON = 500
# Auth's limit: a longer ban is a permanent one (duration 0).
MAX_BAN_DURATION_S = 100 * 365 * 86_400
MAX_AUDIT_LIMIT = 1000
MAX_AUDIT_FILTER = 200


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


@dataclass(frozen=True)
class BanOrder:
    """A checked ban form: whom, why, and until when (Unix seconds, 0 = permanent)."""

    account_id: str
    reason: str
    until: int


def check_ban(account_id: str, body: Mapping[str, Any], now: float) -> BanOrder:
    """The ban a form asks for (``reason``, ``duration_s``: 0 or absent = permanent),
    or :class:`Refused` (400) naming what is wrong."""
    if PLAYER_ID.fullmatch(account_id) is None:
        raise Refused(400, "account id must be 1-128 characters of letters, digits and ._:@-")
    reason = body.get("reason")
    if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= MAX_BAN_REASON:
        raise Refused(400, f"reason must be text of 1-{MAX_BAN_REASON} characters")
    duration = body.get("duration_s", 0)
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int)
        or not 0 <= duration <= MAX_BAN_DURATION_S
    ):
        raise Refused(400, "duration_s must be whole seconds, 0 (permanent) to 100 years")
    return BanOrder(account_id, reason.strip(), int(now) + duration if duration else 0)


@dataclass(frozen=True)
class AuditQuery:
    limit: int
    actor: str | None
    target: str | None


def check_audit_query(query: Mapping[str, str]) -> AuditQuery:
    """The audit read a query string asks for (``limit`` 1-1000, default 100;
    ``actor`` and ``target`` up to 200 characters), or :class:`Refused` (400)."""
    unknown = sorted(set(query) - {"limit", "actor", "target"})
    if unknown:
        raise Refused(400, f"unknown query parameters: {', '.join(unknown)}")
    raw = query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_AUDIT_LIMIT:
        raise Refused(400, f"limit must be a whole number from 1 to {MAX_AUDIT_LIMIT}")
    filters = {key: query.get(key) or None for key in ("actor", "target")}
    for key, value in filters.items():
        if value is not None and len(value) > MAX_AUDIT_FILTER:
            raise Refused(400, f"{key} must be at most {MAX_AUDIT_FILTER} characters")
    return AuditQuery(int(raw), filters["actor"], filters["target"])
