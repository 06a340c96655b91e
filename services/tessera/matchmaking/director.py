"""The matching loop: read pools, run match functions, pick destinations, claim.

Every replica runs one. A tick, per mode: read the searching tickets (only new
ones in full), refill open backfills, run the mode's match function, give each
proposal a destination and its players connect tokens, then commit all of the
mode's proposals in one claim script. A proposal that loses a race to another
replica is simply dropped; its tickets that are still searching are proposed
again next tick. Expired tickets are reaped about once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Protocol

from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanContext

from tessera.common import tracing
from tessera.common.store import instance_zone
from tessera.matchmaking import metrics
from tessera.matchmaking.destination import ZoneLoad, pick_zone
from tessera.matchmaking.matching import (
    Candidate,
    OpenBackfill,
    Proposal,
    fill_backfills,
    resolve,
    share,
    valid_proposals,
)
from tessera.matchmaking.modes import INSTANCE, Mode
from tessera.matchmaking.store import Booking, Claim, Instance, Snapshot, Store
from tessera.v1 import auth_pb2
from tessera.v1 import matchmaking_pb2 as pb

log = logging.getLogger(__name__)

# After a failed tick (e.g. Redis unreachable) the loop waits this long before the next.
_RETRY_S = 0.5


class TokenIssuer(Protocol):
    """Gets relay connect tokens for players (the auth service, on their behalf), each
    bound to the player's session when it is known, to the match's destination and
    to the player's match context (match id, team, role):
    one result per request, in order, a token or why there is none."""

    async def issue_many(
        self, requests: Sequence[auth_pb2.ConnectTokenRequest]
    ) -> Sequence[auth_pb2.ConnectToken | Exception]: ...


def wall_ms() -> float:
    return time.time() * 1000.0


@dataclass
class TickResult:
    """What one tick did, summed over modes."""

    searching: int = 0
    proposals: int = 0
    matches: int = 0
    assigned: int = 0
    conflicts: int = 0
    refused: int = 0
    no_destination: int = 0
    expired: int = 0


@dataclass
class Director:
    """One replica's matching loop."""

    store: Store
    modes: Mapping[str, Mode]
    issuer: TokenIssuer | None = None
    interval_s: float = 0.02
    expire_every_s: float = 1.0
    clock: Callable[[], float] = wall_ms
    # Tickets one tick considers per mode; bounds a tick's work when a backlog builds up.
    pool_limit: int = 20_000
    # Connect tokens asked of auth per tick and mode (oldest proposals first), in
    # concurrent IssueConnectTokens calls of up to 512 (auth's limit); the rest wait
    # a tick, so a backlog cannot flood auth into timeouts.
    tokens_per_tick: int = 4096
    replica_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Tickets are split between live replicas by hash, re-dealt every rotate_ms.
    rotate_ms: float = 200.0
    replica_ttl_s: float = 3.0
    _share: tuple[int, int] = field(default=(0, 1), init=False)
    _last_share_ms: float = field(default=0.0, init=False)
    _snapshots: dict[str, Snapshot] = field(default_factory=dict, init=False)
    _last_expire_ms: float = field(default=0.0, init=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set; a failing tick is logged and retried."""
        try:
            while not stop.is_set():
                started = time.perf_counter()
                pause = self.interval_s
                try:
                    await self.tick()
                except Exception:
                    log.exception("matching tick failed")
                    pause = max(pause, _RETRY_S)
                elapsed = time.perf_counter() - started
                metrics.TICK.observe(elapsed)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, pause - elapsed))
        finally:
            with contextlib.suppress(Exception):
                await self.store.leave(self.replica_id)

    async def tick(self) -> TickResult:
        result = TickResult()
        now = self.clock()
        if now - self._last_expire_ms >= self.expire_every_s * 1000.0:
            self._last_expire_ms = now
            for mode in self.modes.values():
                expired = await self.store.expire(mode.name, now)
                if expired:
                    metrics.EXPIRED.labels(mode.name).inc(expired)
                    metrics.TICKETS.labels(mode.name, "expired").inc(expired)
                result.expired += expired
        if now - self._last_share_ms >= self.replica_ttl_s * 1000.0 / 6:
            self._last_share_ms = now
            members = await self.store.replicas(self.replica_id, now, self.replica_ttl_s * 1000.0)
            self._share = (members.index(self.replica_id), len(members))
        loads: dict[str, list[ZoneLoad]] = {}
        for mode in self.modes.values():
            await self._tick_mode(mode, loads, result)
        return result

    async def _tick_mode(
        self, mode: Mode, loads: dict[str, list[ZoneLoad]], result: TickResult
    ) -> None:
        now = self.clock()
        snapshot = self._snapshots.setdefault(mode.name, Snapshot(mode.name))
        searching = await self.store.searching(snapshot, now, self.pool_limit)
        metrics.SEARCHING.labels(mode.name).set(len(searching))
        result.searching += len(searching)
        tickets = share(searching, now, *self._share, self.rotate_ms)
        if not tickets:
            return
        backfills = {b.id: b for b in await self.store.open_backfills(mode.name)}
        proposals = fill_backfills(
            [
                OpenBackfill(b.id, b.mode, b.region, dict(b.open_slots), b.created_at_ms)
                for b in backfills.values()
            ],
            tickets,
            now,
            mode,
        )
        taken = {i for p in proposals for i in p.ticket_ids}
        rest = [t for t in tickets if t.id not in taken]
        try:
            proposals += resolve(mode.match_function)(rest, now, mode)
        except Exception:
            log.exception("match function failed", extra={"mode": mode.name})
        proposals, refused = valid_proposals(proposals, tickets, mode)
        if refused:
            log.warning("refused invalid proposals", extra={"mode": mode.name, "count": refused})
        result.refused += refused
        result.proposals += len(proposals)
        if mode.destination != INSTANCE and mode.world not in loads:
            loads[mode.world] = await self.store.zone_loads(mode.world)
        parents = {t.id: t.traceparent for t in tickets if t.traceparent}
        began = time.time_ns()
        with _preparing(mode, proposals, parents) as batch:
            prepared = await self._prepare(
                mode,
                proposals=proposals,
                sessions={t.players[0]: t.owner_session for t in tickets if t.owner_session},
                backfills=backfills,
                loads=loads,
                now=now,
                result=result,
            )
        outcomes = await self.store.claim(mode.name, [c for _, c in prepared], now)
        _trace_claims(
            mode,
            prepared,
            outcomes=outcomes,
            parents=parents,
            began_ns=began,
            batch=batch.get_span_context(),
        )
        booked: dict[str, int] = {}
        for (_, c), conflict in zip(prepared, outcomes, strict=True):
            if conflict is None and c.booking is not None:
                booked[c.booking.zone] = booked.get(c.booking.zone, 0) + c.booking.players
        if booked and mode.world in loads:
            # Later modes of this tick in the same world see these players too.
            loads[mode.world] = [
                replace(load, sent=load.sent + booked.get(load.zone, 0))
                for load in loads[mode.world]
            ]
        by_id = {t.id: t for t in tickets}
        for (proposal, _), conflict in zip(prepared, outcomes, strict=True):
            if conflict is not None and conflict.startswith("zone:"):
                # Other replicas filled the zone since its heartbeat was read.
                result.no_destination += 1
                metrics.NO_DESTINATION.labels(mode.name).inc()
                continue
            if conflict is not None:
                result.conflicts += 1
                metrics.CLAIMS_CONFLICTED.labels(mode.name).inc()
                snapshot.tickets.pop(conflict, None)
                continue
            self._committed(mode, proposal=proposal, by_id=by_id, now=now, result=result)

    def _committed(
        self,
        mode: Mode,
        *,
        proposal: Proposal,
        by_id: Mapping[str, Candidate],
        now: float,
        result: TickResult,
    ) -> None:
        result.matches += 1
        result.assigned += len(proposal.ticket_ids)
        kind = "backfill" if proposal.backfill_id else "new"
        metrics.MATCHES.labels(mode.name, kind).inc()
        metrics.TICKETS.labels(mode.name, "assigned").inc(len(proposal.ticket_ids))
        metrics.RATING_GAP.labels(mode.name).observe(proposal.rating_gap)
        histogram = metrics.TIME_TO_MATCH.labels(mode.name)
        for ticket_id in proposal.ticket_ids:
            histogram.observe(max(0.0, now - by_id[ticket_id].created_at_ms) / 1000.0)

    async def _prepare(
        self,
        mode: Mode,
        *,
        proposals: Sequence[Proposal],
        sessions: Mapping[str, str],
        backfills: Mapping[str, pb.Backfill],
        loads: Mapping[str, list[ZoneLoad]],
        now: float,
        result: TickResult,
    ) -> list[tuple[Proposal, Claim]]:
        placed: list[tuple[Proposal, str, pb.Destination]] = []
        # Players placed this tick, not claimed yet (claims of other ticks and
        # replicas are in the loads).
        pending: dict[str, int] = {}
        by_zone = {load.zone: load for load in loads.get(mode.world, [])}
        for proposal in proposals:
            match_id = uuid.uuid4().hex
            if proposal.backfill_id:
                destination = pb.Destination()
                destination.CopyFrom(backfills[proposal.backfill_id].destination)
                match_id = backfills[proposal.backfill_id].match_id
            elif mode.destination == INSTANCE:
                destination = pb.Destination(
                    kind=pb.DESTINATION_KIND_INSTANCE,
                    world=mode.world,
                    zone=instance_zone(match_id),
                    region=proposal.region,
                )
            else:
                needed = len(proposal.seats)
                zone = pick_zone(loads[mode.world], pending, needed, mode.zone_capacity)
                if zone is None:
                    result.no_destination += 1
                    metrics.NO_DESTINATION.labels(mode.name).inc()
                    continue
                pending[zone] = pending.get(zone, 0) + needed
                destination = pb.Destination(
                    kind=pb.DESTINATION_KIND_OPEN_WORLD,
                    world=mode.world,
                    zone=zone,
                    region=proposal.region,
                )
            placed.append((proposal, match_id, destination))
        if self.issuer is not None:
            placed = _first_seats(placed, self.tokens_per_tick)
        tokens = await self._tokens(placed, sessions)
        return [
            (
                proposal,
                self._claim(
                    proposal,
                    match_id,
                    destination,
                    tokens,
                    now,
                    booking=_booking(proposal, destination, by_zone.get(destination.zone), mode),
                ),
            )
            for proposal, match_id, destination in placed
            if all(s.player_id in tokens for s in proposal.seats) or self.issuer is None
        ]

    async def _tokens(
        self,
        placed: Sequence[tuple[Proposal, str, pb.Destination]],
        sessions: Mapping[str, str],
    ) -> dict[str, auth_pb2.ConnectToken]:
        if self.issuer is None or not placed:
            return {}
        requests = [
            auth_pb2.ConnectTokenRequest(
                player_id=s.player_id,
                region=p.region,
                session_id=sessions.get(s.player_id, ""),
                world=d.world,
                zone=d.zone,
                match_id=match_id,
                team=s.team,
                role=s.role,
            )
            for p, match_id, d in placed
            for s in p.seats
        ]
        issued = await self.issuer.issue_many(requests)
        out = {}
        refused: list[tuple[str, Exception]] = []
        for request, token in zip(requests, issued, strict=True):
            if isinstance(token, Exception):
                refused.append((request.player_id, token))
                continue
            out[request.player_id] = token
        if refused:
            metrics.TOKEN_FAILURES.inc(len(refused))
            log.warning(
                "connect tokens refused",
                extra={
                    "count": len(refused),
                    "players": [player for player, _ in refused[:10]],
                    "error": str(refused[0][1]),
                },
            )
        return out

    @staticmethod
    def _claim(
        proposal: Proposal,
        match_id: str,
        destination: pb.Destination,
        tokens: Mapping[str, auth_pb2.ConnectToken],
        now: float,
        *,
        booking: Booking | None,
    ) -> Claim:
        tickets = []
        for ticket_id in proposal.ticket_ids:
            assignment = pb.Assignment(
                match_id=match_id,
                destination=destination,
                rating_gap=proposal.rating_gap,
                assigned_at_ms=now,
            )
            for seat in proposal.seats:
                if seat.ticket_id == ticket_id:
                    player = assignment.players.add(
                        player_id=seat.player_id, team=seat.team, role=seat.role
                    )
                    if seat.player_id in tokens:
                        player.connect_token.CopyFrom(tokens[seat.player_id])
            tickets.append((ticket_id, assignment.SerializeToString()))
        slots: dict[int, int] = {}
        if proposal.backfill_id:
            for seat in proposal.seats:
                slots[seat.team] = slots.get(seat.team, 0) + 1
        instance = None
        if destination.kind == pb.DESTINATION_KIND_INSTANCE and not proposal.backfill_id:
            everyone = pb.Assignment(
                match_id=match_id,
                destination=destination,
                rating_gap=proposal.rating_gap,
                assigned_at_ms=now,
            )
            for seat in proposal.seats:
                everyone.players.add(player_id=seat.player_id, team=seat.team, role=seat.role)
            instance = Instance(destination.world, destination.zone, everyone.SerializeToString())
        return Claim(
            match_id=match_id,
            tickets=tickets,
            backfill_id=proposal.backfill_id,
            slots=slots,
            instance=instance,
            booking=booking,
        )


def _preparing(
    mode: Mode, proposals: Sequence[Proposal], parents: Mapping[str, str]
) -> AbstractContextManager[Span]:
    """The span ``matchmaking.prepare`` of a tick's proposals that hold a traced
    ticket (destinations and connect tokens; auth's span is its child), a new trace
    that each ticket's ``matchmaking.assign`` links to."""
    if not any(t in parents for p in proposals for t in p.ticket_ids):
        return nullcontext(INVALID_SPAN)
    return tracing.tracer.start_as_current_span(
        "matchmaking.prepare",
        context=Context(),
        attributes={"tessera.mode": mode.name, "tessera.proposals": len(proposals)},
    )


def _trace_claims(
    mode: Mode,
    prepared: Sequence[tuple[Proposal, Claim]],
    *,
    outcomes: Sequence[str | None],
    parents: Mapping[str, str],
    began_ns: int,
    batch: SpanContext,
) -> None:
    """One span ``matchmaking.assign`` per traced ticket of a claimed proposal, in
    the ticket's trace: from the tick's start to its claim, with the result."""
    links = [Link(batch)] if batch.is_valid else []
    for (proposal, claim), conflict in zip(prepared, outcomes, strict=True):
        outcome = "assigned" if conflict is None else "conflict"
        if conflict is not None and conflict.startswith("zone:"):
            outcome = "zone_full"
        booked = claim.booking or claim.instance
        zone = booked.zone if booked else ""
        for ticket_id in proposal.ticket_ids:
            if ticket_id not in parents:
                continue
            span = tracing.tracer.start_span(
                "matchmaking.assign",
                context=tracing.extract({"traceparent": parents[ticket_id]}),
                links=links,
                start_time=began_ns,
                attributes={
                    "tessera.mode": mode.name,
                    "tessera.ticket_id": ticket_id,
                    "tessera.match_id": claim.match_id,
                    "tessera.result": outcome,
                    "tessera.zone": zone,
                },
            )
            span.end()


def _booking(
    proposal: Proposal, destination: pb.Destination, load: ZoneLoad | None, mode: Mode
) -> Booking | None:
    """What a match sends to an open-world zone: a new match only if the zone still
    has room when claimed; a backfill joins its running match whatever the load."""
    if destination.kind != pb.DESTINATION_KIND_OPEN_WORLD:
        return None
    players = len(proposal.seats)
    if proposal.backfill_id or load is None:
        return Booking(destination.world, destination.zone, players)
    return Booking(
        destination.world,
        destination.zone,
        players,
        capacity=mode.zone_capacity,
        heartbeat_players=load.players,
        heartbeat_ms=load.counted_from_ms,
    )


def _first_seats(
    placed: list[tuple[Proposal, str, pb.Destination]], limit: int
) -> list[tuple[Proposal, str, pb.Destination]]:
    """The leading proposals whose seats add up to at most ``limit`` (at least one)."""
    out: list[tuple[Proposal, str, pb.Destination]] = []
    seats = 0
    for entry in placed:
        seats += len(entry[0].seats)
        if out and seats > limit:
            break
        out.append(entry)
    return out
