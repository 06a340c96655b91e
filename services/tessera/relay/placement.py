"""Placement: which zone a player's session joins, and every Join and Leave the
relay calls to put them there.

A session opens in the zone the player's route names, else in the least-loaded
active zone, or in the zone its connect token names: an open-world zone only
for a player live in no other zone; into an instance zone the player is
*transferred* (Leave the zone they are live in, then Join), and a transfer whose
Join fails is undone (:data:`Rollback`). The relay's own Leaves (a
transfer's, and those of the sessions it ends) are remembered, so that a new
session of the player waits for them and their route removals are told apart
from another connection's.

Placement holds no session: it returns where the player went (:class:`Placed`),
and after a failed transfer :class:`TransferUndone` carries where the player is
now, for the gateway to move a live session of theirs there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import grpc

from tessera.common.errors import detail_of
from tessera.relay.errors import Rejected
from tessera.relay.metrics import Counters
from tessera.relay.routing import OwnLeaves
from tessera.relay.store import RelayStore
from tessera.relay.upstream import UpstreamUnavailable, ZoneLink, call_bound_s
from tessera.relay.zones import pick_zone
from tessera.v1 import zone_pb2
from tessera.wire.connect_token import MatchContext

log = logging.getLogger(__name__)

# How long after its Leave returns a route removal may take to arrive (pub/sub).
REMOVAL_MARGIN_S = 2.0
# Join attempts per session: a zone may refuse one while the route moves.
JOIN_ATTEMPTS = 3
# The pause before looking a route up again after it moved under a Join.
RETRY_S = 0.05


@dataclass(frozen=True)
class Placed:
    """A Join that succeeded: the zone's link and the zone's answer."""

    link: ZoneLink
    response: zone_pb2.JoinResponse


@dataclass(frozen=True)
class Returned:
    """A failed transfer undone: the zone the player left took them back."""

    link: ZoneLink


@dataclass(frozen=True)
class Adopted:
    """A failed transfer undone elsewhere: the zone the player left refused them
    too, and the ordinary join path placed them."""

    placed: Placed


@dataclass(frozen=True)
class Stranded:
    """A failed transfer not undone: no zone took the player back (``why``)."""

    why: str


# Where a transfer whose Join failed left the player.
Rollback = Returned | Adopted | Stranded


class TransferUndone(Rejected):
    """The destination refused the player after they left their zone; ``rollback``
    says where they are now, for a live session of theirs to follow."""

    def __init__(self, reason: str, message: str, rollback: Rollback) -> None:
        super().__init__(reason, message)
        self.rollback = rollback


class Placement:
    """See the module docstring. One per gateway."""

    def __init__(
        self,
        *,
        relay_id: str,
        rpc_timeout_s: float,
        store: RelayStore,
        link: Callable[[str], ZoneLink],
        counters: Counters,
    ) -> None:
        self.relay_id = relay_id
        self.rpc_timeout_s = rpc_timeout_s
        self.store = store
        # The link to a zone, started on first use.
        self.link = link
        self.counters = counters
        # An expected removal lives as long as its Leave can take, plus delivery.
        self.own_leaves = OwnLeaves(call_bound_s(rpc_timeout_s) + REMOVAL_MARGIN_S)
        # Leaves of sessions this relay ended, still running, by player.
        self.leaving: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- joining ----------------------------------------------------------

    async def place(self, player: str, zone: str = "", match: MatchContext | None = None) -> Placed:
        """Join ``player`` where their new session opens: ``zone`` if the connect
        token names one, else their route's zone or the least-loaded active zone;
        that Join carries the token's ``match`` context (:func:`join_request`).
        Rejected if no zone takes them (:class:`TransferUndone` if a transfer's Join
        failed after its Leave)."""
        if zone:
            return await self._join_destination(player, zone, match)
        return await self._join(player, match)

    async def rejoin(
        self, link: ZoneLink, players: list[str]
    ) -> dict[str, zone_pb2.JoinResponse | None]:
        """Join ``players`` into ``link``'s zone again after the link reconnected: a
        restarted zone restores them from their checkpoints; one that never went
        away keeps them. None for a player the zone refused (probably routed
        elsewhere now)."""
        results = await asyncio.gather(
            *(link.join(self._request(p)) for p in players), return_exceptions=True
        )
        return {
            player: None if isinstance(result, BaseException) else result
            for player, result in zip(players, results, strict=True)
        }

    async def _join(self, player: str, match: MatchContext | None = None) -> Placed:
        """Join the zone the route names or, without a route, the least-loaded
        active zone; a chosen zone that turns out unreachable (its heartbeat not yet
        expired) is skipped for the next choice."""
        request = self._request(player, match)
        unreachable: set[str] = set()
        for _attempt in range(JOIN_ATTEMPTS):
            route = await self.store.route(player)
            zone = route.zone if route is not None else await self._pick_zone(unreachable)
            if zone is None:
                raise Rejected("no_zone", "no active zone in this world")
            link = self.link(zone)
            try:
                return Placed(link, await link.join(request))
            except (UpstreamUnavailable, grpc.aio.AioRpcError) as err:
                verdict = join_failure(err, routed=route is not None)
                if verdict == "skip":
                    unreachable.add(zone)
                elif verdict == "retry":
                    await asyncio.sleep(RETRY_S)
                else:
                    raise Rejected(verdict, why_failed(err)) from None
        raise Rejected("join_failed", "no zone accepted the player")

    async def _pick_zone(self, skip: set[str]) -> str | None:
        statuses = await self.store.zone_statuses()
        return pick_zone(await self.store.zone_map(), statuses, skip=skip)

    async def _join_destination(self, player: str, zone: str, match: MatchContext | None) -> Placed:
        """Join the zone a connect token names. Into an instance zone, a player owned
        by another live zone leaves it first (its checkpoint saved, its route
        released) and ``zone`` adopts the checkpoint: the player keeps their state
        and is never in two zones. An open-world zone is only where a player with
        no live zone starts; one live elsewhere joins where their route says.
        Nothing is left before ``zone`` is known to be up; a join that fails after
        the leave puts the player back (see ``_roll_back``)."""
        status = await self.store.zone_status(zone)
        if status is None or status.state != zone_pb2.ZONE_STATE_ACTIVE:
            raise Rejected("zone_unavailable", f"zone {zone} is not up")
        instance = bool(status.instance)
        if not instance and await self._live_elsewhere(player, zone) is not None:
            return await self._join(player, match)
        link = self.link(zone)
        try:
            await link.ready()
        except UpstreamUnavailable as err:
            raise Rejected("zone_unavailable", str(err)) from None
        request = self._request(player, match)
        for _attempt in range(JOIN_ATTEMPTS):
            source = None
            elsewhere = await self._live_elsewhere(player, zone)
            if elsewhere is not None:
                if not instance:
                    return await self._join(player, match)
                source = self.link(elsewhere)
                await self._leave_for_transfer(source, player)
            try:
                response = await link.join(request)
            except (UpstreamUnavailable, grpc.aio.AioRpcError) as err:
                verdict = destination_join_failure(err)
                if source is None and verdict == "retry":
                    # Routed elsewhere meanwhile (a handoff): look the route up again.
                    await asyncio.sleep(RETRY_S)
                    continue
                reason = "join_failed" if verdict == "join_failed" else "zone_unavailable"
                if source is not None:
                    rollback = await self._roll_back(source, player)
                    raise TransferUndone(reason, why_failed(err), rollback) from None
                raise Rejected(reason, why_failed(err)) from None
            if source is not None:
                self.counters.transfers += 1
                log.info("transferred", extra={"player": player, "from": source.zone, "zone": zone})
            return Placed(link, response)
        raise Rejected("zone_unavailable", f"zone {zone} did not accept the player")

    async def _live_elsewhere(self, player: str, zone: str) -> str | None:
        """The other zone the player's route names, if that zone is alive."""
        route = await self.store.route(player)
        if route is None or route.zone == zone:
            return None
        return route.zone if await self.store.zone_status(route.zone) is not None else None

    async def _leave_for_transfer(self, source: ZoneLink, player: str) -> None:
        """Leave ``source`` before joining another zone; Rejected if it fails (the
        player then stays in ``source``). The route removal it publishes is this
        relay's own: it does not end the player's live session here. If the player's
        last Join came through another relay (their old connection), the newest
        connection is this one: it claims the player with a Join, then leaves."""
        self.own_leaves.expect(player, time.monotonic())
        try:
            try:
                await source.leave(player)
            except grpc.aio.AioRpcError as err:
                if not served_by_other_relay(err):
                    raise
                await source.join(self._request(player))
                await source.leave(player)
        except (UpstreamUnavailable, grpc.aio.AioRpcError) as err:
            if leave_removed_nothing(err):
                self.own_leaves.cancel(player)
            raise Rejected(
                "zone_unavailable", f"cannot leave zone {source.zone}: {why_failed(err)}"
            ) from None

    async def _roll_back(self, source: ZoneLink, player: str) -> Rollback:
        """Undo a transfer's leave after the destination refused the player:
        ``source`` adopts the checkpoint it just saved; if it refuses too (e.g. it
        is draining), the ordinary join path (the player's route, else the
        least-loaded active zone) adopts it. If no zone takes the player, the
        checkpoint stays for their client's next connection. The match context
        was for the destination: the player goes back without it."""
        try:
            await source.join(self._request(player))
        except (UpstreamUnavailable, grpc.aio.AioRpcError) as err:
            log.warning(
                "transfer rollback refused",
                extra={"player": player, "zone": source.zone, "error": why_failed(err)},
            )
        else:
            return Returned(source)
        try:
            placed = await self._join(player)
        except Rejected as err:
            log.error("transfer rollback failed", extra={"player": player, "error": str(err)})
            return Stranded(str(err))
        log.info(
            "transfer rolled back elsewhere", extra={"player": player, "zone": placed.link.zone}
        )
        return Adopted(placed)

    def _request(self, player: str, match: MatchContext | None = None) -> zone_pb2.JoinRequest:
        return join_request(player, self.relay_id, match)

    # -- this relay's own Leaves ------------------------------------------

    async def await_leave(self, player: str) -> None:
        """Let this relay's own Leave of ``player`` (a session it just ended) finish
        before joining them again: a Join first would find the player still in the
        zone (a no-op) and the Leave would then take them from the new session."""
        pending = self.leaving.get(player)
        if pending is not None:
            await asyncio.wait({pending}, timeout=call_bound_s(self.rpc_timeout_s))

    def start_leave(self, link: ZoneLink, player: str) -> None:
        """Leave the zone of a session that ended, in the background; a new session
        of the player waits for it (see :meth:`await_leave`)."""
        self.own_leaves.expect(player, time.monotonic())
        task = asyncio.create_task(self._leave(link, player))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.leaving[player] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self.leaving.get(player) is finished:
                del self.leaving[player]

        task.add_done_callback(done)

    async def _leave(self, link: ZoneLink, player: str) -> None:
        try:
            await link.leave(player)
        except (grpc.aio.AioRpcError, UpstreamUnavailable) as err:
            # Forget the expected removal only if surely none comes; else it lapses.
            if leave_removed_nothing(err):
                self.own_leaves.cancel(player)
            if served_by_other_relay(err):
                log.info(
                    "nothing to leave: another relay serves the player",
                    extra={"player": player, "zone": link.zone},
                )
            else:
                log.warning("leave failed", extra={"player": player, "error": why_failed(err)})

    async def release_orphan(self, player: str, relay_id: str) -> bool:
        """Leave the zone of ``player``, whose session on ``relay_id`` (a relay gone
        for longer than the grace period) never came back. The Leave names that
        relay, so a zone refuses it if the player has joined since through any
        other relay (a reconnect or a resume). True if the zone let them go."""
        route = await self.store.route(player)
        if route is None:
            return False
        self.own_leaves.expect(player, time.monotonic())
        try:
            await self.link(route.zone).leave(player, relay_id)
        except (grpc.aio.AioRpcError, UpstreamUnavailable) as err:
            if leave_removed_nothing(err):
                self.own_leaves.cancel(player)
            if not served_by_other_relay(err):
                log.warning(
                    "orphan not released", extra={"player": player, "error": why_failed(err)}
                )
            return False
        return True

    def own_removal(self, player: str, now: float) -> bool:
        """Whether a route removal of ``player`` is one of this relay's own Leaves
        (consumed if so); any other means the player left through another
        connection."""
        return self.own_leaves.claim(player, now)

    def prune(self, now: float) -> None:
        """Forget expected removals that never came."""
        self.own_leaves.prune(now)

    def cancel(self) -> None:
        """Cancel the Leaves still running (the relay is stopping)."""
        for task in list(self._tasks):
            task.cancel()


JoinVerdict = Literal["skip", "retry", "zone_unavailable", "join_failed"]


def join_request(player: str, relay_id: str, match: MatchContext | None) -> zone_pb2.JoinRequest:
    """The zone's Join for ``player``: with a match context, its match id, role and
    team (the match's team index + 1, since team 0 means none in the zone)."""
    request = zone_pb2.JoinRequest(player_id=player, relay_id=relay_id)
    if match is not None:
        request.match_id, request.role, request.team = match.match_id, match.role, match.team + 1
    return request


def join_failure(err: Exception, *, routed: bool) -> JoinVerdict:
    """What a failed Join on the zone the player's route names (``routed``) or on
    a chosen zone means: "skip" (a chosen zone is unreachable: choose another),
    "retry" (refused with FAILED_PRECONDITION: the route moved, or the zone is
    draining; look the route up again), or the Rejected reason: the route's zone
    is unreachable ("zone_unavailable") or refused ("join_failed")."""
    if not isinstance(err, grpc.aio.AioRpcError):
        return "zone_unavailable" if routed else "skip"
    code = err.code()
    if code == grpc.StatusCode.UNAVAILABLE and not routed:
        return "skip"
    if code != grpc.StatusCode.FAILED_PRECONDITION:
        return "join_failed"
    return "retry"


def destination_join_failure(err: Exception) -> Literal["retry", "zone_unavailable", "join_failed"]:
    """What a failed Join on a connect token's zone means: "retry" (the route
    moved, or the zone is between states), "zone_unavailable" (unreachable), or
    "join_failed" (refused)."""
    if not isinstance(err, grpc.aio.AioRpcError):
        return "zone_unavailable"
    code = err.code()
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED):
        return "retry"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return "zone_unavailable"
    return "join_failed"


def leave_removed_nothing(err: Exception) -> bool:
    """Whether a failed Leave surely removed nothing: never sent (the link was
    down), or answered NOT_FOUND / FAILED_PRECONDITION (e.g. SERVED_BY_OTHER_RELAY).
    A timeout or a lost connection may come after the zone released the route."""
    if not isinstance(err, grpc.aio.AioRpcError):
        return True
    return err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


def served_by_other_relay(err: Exception) -> bool:
    """Whether a Leave was refused because another relay serves the player."""
    return (
        isinstance(err, grpc.aio.AioRpcError)
        and err.code() == grpc.StatusCode.FAILED_PRECONDITION
        and detail_of(err).reason == "SERVED_BY_OTHER_RELAY"
    )


def why_failed(err: Exception) -> str:
    """A short reason for a failed zone call."""
    if isinstance(err, grpc.aio.AioRpcError):
        return err.details() or err.code().name
    return str(err)
