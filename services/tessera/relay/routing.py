"""Player -> zone routes: parsing the routing table and the relay's cache of it.

Zones write ``routes`` entries "<zone>|<epoch>" and publish "<player>|<zone>|<epoch>"
on ``routes_changed``; epochs only grow, so the cache keeps the entry with the
highest epoch whatever order lookups and notifications arrive in. A route is
removed ("<player>||0") only by a zone's ``Leave``, i.e. by a relay: the relay
tells its own removals (:class:`OwnLeaves`) from those of another connection.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Route:
    """The zone that owns a player, and the handoff epoch of that ownership."""

    zone: str
    epoch: int


def parse_route(value: bytes | str) -> Route:
    """Parse a routes hash value "<zone>|<epoch>"; ValueError if malformed."""
    text = value.decode() if isinstance(value, bytes) else value
    zone, sep, epoch = text.rpartition("|")
    if not sep or not zone:
        raise ValueError(f"malformed route {text!r}")
    return Route(zone, int(epoch))


def parse_route_change(message: bytes | str) -> tuple[str, Route | None, str]:
    """Parse a routes_changed notification "<player>|<zone>|<epoch>", with
    "|<traceparent>" after a traced handoff: (player, route, traceparent or ''). The
    route is None for a removal ("<player>||0", published when a player leaves)."""
    text = message.decode() if isinstance(message, bytes) else message
    player, sep, rest = text.partition("|")
    if not sep or not player:
        raise ValueError(f"malformed route change {text!r}")
    if rest.startswith("|"):
        return player, None, ""
    zone_epoch, traceparent = rest, ""
    if rest.count("|") == 2:
        zone_epoch, _, traceparent = rest.rpartition("|")
    return player, parse_route(zone_epoch), traceparent


class OwnLeaves:
    """The route removals this relay's own ``Leave`` calls cause, until their
    notification arrives: a removal that is not one of these means the player
    left its zone through another connection. An expectation that is never met
    (the zone did not hold the route) lapses after ``ttl_s``, which must outlast
    the slowest Leave plus the notification's delivery."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._expected: dict[str, list[float]] = {}

    def expect(self, player: str, now: float) -> None:
        """A Leave of ``player`` is about to be called."""
        self._expected.setdefault(player, []).append(now + self.ttl_s)

    def cancel(self, player: str) -> None:
        """A Leave surely removed nothing (never sent, or refused by the zone)."""
        self._pop(player)

    def claim(self, player: str, now: float) -> bool:
        """A removal of ``player`` was published: True (and consumed) if it is one
        of this relay's own."""
        deadlines = self._expected.get(player)
        if deadlines is not None:
            deadlines[:] = [d for d in deadlines if d >= now]
        if not deadlines:
            self._expected.pop(player, None)
            return False
        self._pop(player)
        return True

    def prune(self, now: float) -> None:
        """Drop lapsed expectations."""
        for player in list(self._expected):
            kept = [d for d in self._expected[player] if d >= now]
            if kept:
                self._expected[player] = kept
            else:
                del self._expected[player]

    def _pop(self, player: str) -> None:
        deadlines = self._expected.get(player)
        if deadlines:
            deadlines.pop(0)
        if not deadlines:
            self._expected.pop(player, None)


class RouteCache:
    """Routes of the players connected to this relay, newest epoch wins."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def get(self, player: str) -> Route | None:
        return self._routes.get(player)

    def update(self, player: str, route: Route) -> bool:
        """Store ``route`` unless an equal or newer epoch is known; True if it changed."""
        known = self._routes.get(player)
        if known is not None and (route.epoch < known.epoch or route == known):
            return False
        self._routes[player] = route
        return True

    def forget(self, player: str) -> None:
        self._routes.pop(player, None)
