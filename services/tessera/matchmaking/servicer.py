"""The ``tessera.v1.Matchmaker`` gRPC servicer: checks callers and input, then the store.

Callers are authenticated by the auth interceptor in front of it; this module
decides what an authenticated caller may do: a player handles tickets that name
them (creating only tickets they lead), services and admins everything, and only
services and admins report results, ask for backfills and stream ticket creation
(``CreateTickets``, a game back end creating tickets for the players it serves).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import grpc
from redis.exceptions import RedisError

from tessera.authclient import access
from tessera.common import tracing
from tessera.common.errors import abort, bounded
from tessera.matchmaking import metrics
from tessera.matchmaking.director import wall_ms
from tessera.matchmaking.modes import Mode
from tessera.matchmaking.records import NEWEST, Participation
from tessera.matchmaking.store import SEARCHING, PlayerBusy, Store
from tessera.matchmaking.ticket import (
    MAX_ID_LEN,
    PLAYER_ID_RULE,
    InvalidTicket,
    player_id_ok,
    validate,
)
from tessera.v1 import common_pb2
from tessera.v1 import matchmaking_pb2 as pb
from tessera.v1 import matchmaking_pb2_grpc as pb_grpc
from tessera.wire.names import NAME_RE

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
TRUSTED = ("service", "admin")
# A reported role's length; match-history page sizes.
MAX_ROLE_LEN = 64
MAX_HISTORY_PAGE = 100
DEFAULT_HISTORY_PAGE = 20
# How far a reporter's clock may run ahead of this one's (started_at_ms).
MAX_CLOCK_SKEW_MS = 300_000
# Who may call each RPC (tessera.authclient.access); docs/AUTH.md lists it. A
# ticket's own reads (get, heartbeat, cancel, watch) also check that it names the
# caller unless the caller is trusted.
RULES = access.table(
    pb.DESCRIPTOR.services_by_name["Matchmaker"],
    {
        "CreateTicket": access.roles("player"),
        "CreateTickets": access.roles(*TRUSTED),
        "GetTicket": access.ROLES,
        "HeartbeatTicket": access.ROLES,
        "CancelTicket": access.ROLES,
        "WatchAssignment": access.ROLES,
        "ReportMatchResult": access.roles(*TRUSTED),
        "CreateBackfill": access.roles(*TRUSTED),
        "GetBackfill": access.roles(*TRUSTED),
        "ListMatchHistory": access.ROLES,
    },
)
# A watcher re-reads its ticket at least this often, in case an event was missed.
WATCH_POLL_S = 2.0
# CreateTickets: requests written to Redis per round trip at most, and requests read
# but not yet answered per stream (past it the stream is not read: flow control).
STREAM_BATCH = 256
STREAM_PENDING = 1024


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a ticket was not created: the status CreateTicket fails with, which a
    CreateTickets stream sends as that request's result instead."""

    code: grpc.StatusCode
    message: str
    reason: str
    field: str

    @classmethod
    def invalid(cls, err: InvalidTicket) -> Refusal:
        code = (
            grpc.StatusCode.PERMISSION_DENIED
            if err.permission
            else grpc.StatusCode.INVALID_ARGUMENT
        )
        return cls(code, str(err), err.reason, err.field)

    @classmethod
    def busy(cls, err: PlayerBusy) -> Refusal:
        return cls(
            grpc.StatusCode.ALREADY_EXISTS,
            f"{err}; cancel it or wait until it is assigned or expires",
            "TICKET_EXISTS",
            "players",
        )

    async def abort(self, context: Context) -> NoReturn:
        await abort(context, self.code, self.message, reason=self.reason, field=self.field)

    def result(self) -> pb.CreateTicketResult:
        return pb.CreateTicketResult(
            code=self.code.value[0],
            message=bounded(self.message),
            error=common_pb2.ErrorDetail(reason=self.reason, field=self.field),
        )


class Caller(Protocol):
    """The verified identity of an RPC's caller (tessera.wire.access_token.Claims)."""

    @property
    def sub(self) -> str: ...

    @property
    def sid(self) -> str: ...

    @property
    def roles(self) -> tuple[str, ...]: ...


class Watchers:
    """Wakes the WatchAssignment streams of this replica when any replica publishes
    a change of their ticket (one Redis subscription per process).

    At most ``limit`` streams watch at once (more are refused with retry info), and
    their Redis reads share ``reads`` connections, so any number of watchers leaves
    the rest of the Redis pool to the other calls."""

    def __init__(self, limit: int = 1000, reads: int = 8) -> None:
        self.limit = limit
        self.count = 0
        self.reads = asyncio.Semaphore(reads)
        self._waiting: dict[str, set[asyncio.Event]] = {}

    def full(self) -> bool:
        return self.count >= self.limit

    def add(self, ticket_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiting.setdefault(ticket_id, set()).add(event)
        self.count += 1
        return event

    def remove(self, ticket_id: str, event: asyncio.Event) -> None:
        events = self._waiting.get(ticket_id)
        if events is not None and event in events:
            self.count -= 1
            events.discard(event)
            if not events:
                del self._waiting[ticket_id]

    def notify(self, ticket_ids: list[str]) -> None:
        for ticket_id in ticket_ids:
            for event in self._waiting.get(ticket_id, ()):
                event.set()

    async def follow(self, store: Store, retry_s: float = 1.0) -> None:
        """Feed from the store's event channel until cancelled, resubscribing after a
        Redis failure (meanwhile watchers fall back to polling)."""
        while True:
            try:
                async for _state, ids in store.events():
                    self.notify(ids)
            except RedisError:
                log.warning("ticket event subscription lost; resubscribing", exc_info=True)
            await asyncio.sleep(retry_s)


class MatchmakerServicer(pb_grpc.MatchmakerServicer):
    """Tickets, results and backfills over gRPC."""

    def __init__(
        self,
        store: Store,
        modes: Mapping[str, Mode],
        caller: Callable[[], Caller],
        watchers: Watchers,
        *,
        regions: frozenset[str] = frozenset(),
        clock: Callable[[], float] = wall_ms,
    ) -> None:
        self.store = store
        self.modes = modes
        self.regions = regions
        self.caller = caller
        self.watchers = watchers
        self.clock = clock

    async def CreateTicket(self, request: pb.CreateTicketRequest, context: Context) -> pb.Ticket:
        """Queue a ticket; the span ``matchmaking.ticket`` starts its trace (in the
        caller's, if its metadata carries one), which the matching loop continues."""
        caller = self.caller()
        now = self.clock()
        with tracing.serving(
            "matchmaking.ticket",
            context.invocation_metadata(),
            {"tessera.mode": request.mode, "tessera.player_id": caller.sub},
        ) as span:
            ticket = self._admit(request, caller.sub, now)
            if isinstance(ticket, Refusal):
                await ticket.abort(context)
            carrier: dict[str, str] = {}
            tracing.inject(carrier)
            try:
                created = await self.store.create(
                    ticket, now, caller.sid, carrier.get("traceparent", "")
                )
            except PlayerBusy as err:
                await Refusal.busy(err).abort(context)
            span.set_attribute("tessera.ticket_id", created.id)
        metrics.TICKETS.labels(created.mode, "created").inc()
        return created

    async def CreateTickets(
        self, request_iterator: AsyncIterable[pb.CreateTicketRequest], context: Context
    ) -> AsyncIterator[pb.CreateTicketResult]:
        """One result per request, in order. Requests are checked as they are read;
        those that arrive while a write is in flight go to Redis together in the next
        pipelined ``create_many`` (the unary script, so each ticket stays atomic)."""
        pending: asyncio.Queue[pb.Ticket | Refusal | None] = asyncio.Queue()
        room = asyncio.Semaphore(STREAM_PENDING)
        reader = asyncio.create_task(self._read(request_iterator, pending, room))
        try:
            while True:
                batch = [await pending.get()]
                while len(batch) < STREAM_BATCH and not pending.empty():
                    batch.append(pending.get_nowait())
                ended = batch[-1] is None
                items = [item for item in batch if item is not None]
                for result in await self._write(items):
                    yield result
                    room.release()
                if ended:
                    break
            await reader  # a failed read fails the call
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader  # never leave its outcome unretrieved

    async def _read(
        self,
        requests: AsyncIterable[pb.CreateTicketRequest],
        pending: asyncio.Queue[pb.Ticket | Refusal | None],
        room: asyncio.Semaphore,
    ) -> None:
        """Check each request of a CreateTickets stream as it arrives, while at most
        STREAM_PENDING are unanswered; None marks the end (also of a failed read)."""
        try:
            iterator = aiter(requests)
            while True:
                await room.acquire()
                try:
                    request = await anext(iterator)
                except StopAsyncIteration:
                    return
                pending.put_nowait(self._admit(request, None, self.clock()))
        finally:
            pending.put_nowait(None)

    async def _write(self, items: list[pb.Ticket | Refusal]) -> list[pb.CreateTicketResult]:
        """Store the batch's admitted tickets in one round trip; results in order."""
        tickets = [item for item in items if isinstance(item, pb.Ticket)]
        stored = iter(await self.store.create_many(tickets, self.clock()) if tickets else ())
        if tickets:
            metrics.CREATE_BATCH.observe(len(tickets))
        results = []
        modes: collections.Counter[str] = collections.Counter()
        for item in items:
            outcome = item if isinstance(item, Refusal) else next(stored)
            if isinstance(outcome, Refusal):
                results.append(outcome.result())
            elif isinstance(outcome, PlayerBusy):
                results.append(Refusal.busy(outcome).result())
            else:
                modes[outcome.mode] += 1
                results.append(pb.CreateTicketResult(ticket=outcome))
        for mode, n in modes.items():
            metrics.TICKETS.labels(mode, "created").inc(n)
        return results

    def _admit(
        self, request: pb.CreateTicketRequest, owner: str | None, now: float
    ) -> pb.Ticket | Refusal:
        """The new ticket for a valid request led by ``owner`` (None: any players, for
        a trusted back end), or why it is refused."""
        try:
            mode = validate(request, self.modes, owner, self.regions)
        except InvalidTicket as err:
            return Refusal.invalid(err)
        return pb.Ticket(
            id=uuid.uuid4().hex,
            mode=mode.name,
            players=request.players,
            regions=request.regions,
            string_attributes=request.string_attributes,
            number_attributes=request.number_attributes,
            created_at_ms=now,
        )

    async def GetTicket(self, request: pb.GetTicketRequest, context: Context) -> pb.Ticket:
        return await self._own_ticket(request.ticket_id, context)

    async def HeartbeatTicket(
        self, request: pb.HeartbeatTicketRequest, context: Context
    ) -> pb.Ticket:
        ticket = await self._own_ticket(request.ticket_id, context)
        if ticket.state != SEARCHING:
            return ticket
        return await self._still(await self.store.heartbeat(ticket, self.clock()), context)

    async def CancelTicket(
        self, request: pb.CancelTicketRequest, context: Context
    ) -> pb.CancelTicketResponse:
        ticket = await self._own_ticket(request.ticket_id, context)
        if ticket.state != SEARCHING:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"ticket {ticket.id!r} is {pb.TicketState.Name(ticket.state)}, not searching",
                reason="TICKET_NOT_SEARCHING",
                field="ticket_id",
            )
        cancelled = await self._still(await self.store.cancel(ticket, self.clock()), context)
        if cancelled.state == pb.TICKET_STATE_CANCELLED:
            metrics.TICKETS.labels(ticket.mode, "cancelled").inc()
        return pb.CancelTicketResponse(ticket=cancelled)

    async def WatchAssignment(
        self, request: pb.WatchAssignmentRequest, context: Context
    ) -> AsyncIterator[pb.Ticket]:
        watchers = self.watchers
        if watchers.full():
            await abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this replica already serves {watchers.limit} assignment watches; retry",
                reason="TOO_MANY_WATCHES",
                retry_after_s=WATCH_POLL_S,
            )
        event = watchers.add(request.ticket_id)
        try:
            async with watchers.reads:
                ticket = await self._own_ticket(request.ticket_id, context)
            yield ticket
            last = ticket.state
            while last == SEARCHING:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), WATCH_POLL_S)
                event.clear()
                async with watchers.reads:
                    stored = await self.store.get(ticket.id, self.clock())
                ticket = await self._still(stored, context)
                if ticket.state != last:
                    last = ticket.state
                    yield ticket
        finally:
            watchers.remove(request.ticket_id, event)

    async def ReportMatchResult(
        self, request: pb.MatchResult, context: Context
    ) -> pb.ReportMatchResultResponse:
        if not request.match_id or len(request.match_id) > MAX_ID_LEN:
            await _invalid(context, "match_id must be 1-128 characters", "BAD_MATCH_ID", "match_id")
        if request.mode not in self.modes:
            await _invalid(context, f"unknown mode {request.mode!r}", "UNKNOWN_MODE", "mode")
        # One-team modes (a dungeon party) report an outcome without ratings, which
        # still ends their instance; every other mode needs two teams to rate.
        least = 1 if self.modes[request.mode].teams == 1 else 2
        if len(request.teams) < least:
            await _invalid(
                context,
                f"a {request.mode} result needs {least} or more teams",
                "TOO_FEW_TEAMS",
                "teams",
            )
        seen: set[str] = set()
        for i, team in enumerate(request.teams):
            if not team.player_ids:
                await _invalid(context, f"team {i} has no players", "EMPTY_TEAM", f"teams[{i}]")
            if team.roles and (
                len(team.roles) != len(team.player_ids)
                or any(len(r) > MAX_ROLE_LEN for r in team.roles)
            ):
                await _invalid(
                    context,
                    f"team {i} needs no roles or one per player, each at most {MAX_ROLE_LEN}"
                    " characters",
                    "BAD_ROLES",
                    f"teams[{i}].roles",
                )
            for player in team.player_ids:
                if not player or player in seen:
                    await _invalid(
                        context,
                        f"player {player!r} is empty or on two teams",
                        "DUPLICATE_PLAYER",
                        f"teams[{i}].player_ids",
                    )
                seen.add(player)
        now_ms = self.clock()
        if not 0 <= request.started_at_ms <= now_ms + MAX_CLOCK_SKEW_MS:
            await _invalid(
                context,
                "started_at_ms must be 0 (not reported) or a Unix time in ms, not in the future",
                "BAD_START",
                "started_at_ms",
            )
        outsiders = await self.store.outsiders(request.match_id, sorted(seen))
        if outsiders:
            await _invalid(
                context,
                f"players {outsiders[:5]} were not assigned to match {request.match_id!r}",
                "PLAYER_NOT_IN_MATCH",
                "teams",
            )
        applied = await self.store.apply_result(
            request.match_id,
            request.mode,
            [list(t.player_ids) for t in request.teams],
            [t.rank for t in request.teams],
            now_ms=now_ms,
            roles=[list(t.roles) for t in request.teams],
            started_ms=request.started_at_ms,
        )
        return pb.ReportMatchResultResponse(applied=applied)

    async def ListMatchHistory(
        self, request: pb.ListMatchHistoryRequest, context: Context
    ) -> pb.ListMatchHistoryResponse:
        caller = self.caller()
        player = request.player_id or caller.sub
        if player != caller.sub and not set(caller.roles) & set(TRUSTED):
            await abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                "only services and admins may read another player's history",
                reason="FORBIDDEN",
                field="player_id",
            )
        if not player_id_ok(player):
            await _invalid(context, PLAYER_ID_RULE, "BAD_PLAYER_ID", "player_id")
        if request.page_size > MAX_HISTORY_PAGE:
            await _invalid(
                context,
                f"page_size must be at most {MAX_HISTORY_PAGE}",
                "BAD_PAGE_SIZE",
                "page_size",
            )
        token = request.page_token
        if token and (not token.isdigit() or len(token) > 19):
            await _invalid(
                context, "page_token is not from ListMatchHistory", "BAD_PAGE", "page_token"
            )
        size = request.page_size or DEFAULT_HISTORY_PAGE
        found = await self.store.history(
            player, before_id=int(token) if token else NEWEST, limit=size
        )
        reply = pb.ListMatchHistoryResponse(matches=[_participation(p) for p in found])
        if len(found) == size:
            reply.next_page_token = str(found[-1].entry_id)
        return reply

    async def CreateBackfill(
        self, request: pb.CreateBackfillRequest, context: Context
    ) -> pb.Backfill:
        mode = self.modes.get(request.mode)
        if mode is None:
            await _invalid(context, f"unknown mode {request.mode!r}", "UNKNOWN_MODE", "mode")
        if not request.match_id or len(request.match_id) > MAX_ID_LEN:
            await _invalid(context, "match_id must be 1-128 characters", "BAD_MATCH_ID", "match_id")
        if not request.region:
            await _invalid(context, "region is required", "NO_REGION", "region")
        if not request.open_slots or sum(request.open_slots.values()) == 0:
            await _invalid(context, "no open slots", "NO_OPEN_SLOTS", "open_slots")
        for team, n in request.open_slots.items():
            if team >= mode.teams or n > mode.team_size:
                await _invalid(
                    context,
                    f"team {team} with {n} open slots does not fit mode {mode.name!r} "
                    f"({mode.teams} teams of {mode.team_size})",
                    "BAD_SLOTS",
                    f"open_slots[{team}]",
                )
        if not request.destination.zone:
            await _invalid(context, "destination.zone is required", "NO_DESTINATION", "destination")
        destination = pb.Destination()
        destination.CopyFrom(request.destination)
        # The backfill's tokens name this world and zone: both must be DNS labels.
        destination.world = destination.world or mode.world
        for field in ("world", "zone"):
            if NAME_RE.fullmatch(getattr(destination, field)) is None:
                await _invalid(
                    context,
                    f"destination.{field} {getattr(destination, field)!r} must be a DNS label",
                    "BAD_DESTINATION",
                    f"destination.{field}",
                )
        backfill = pb.Backfill(
            id=uuid.uuid4().hex,
            match_id=request.match_id,
            mode=mode.name,
            region=request.region,
            open_slots=request.open_slots,
            destination=destination,
            created_at_ms=self.clock(),
        )
        await self.store.create_backfill(backfill)
        return backfill

    async def GetBackfill(self, request: pb.GetBackfillRequest, context: Context) -> pb.Backfill:
        backfill = await self.store.get_backfill(request.backfill_id)
        if backfill is None:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no backfill {request.backfill_id!r}",
                reason="BACKFILL_NOT_FOUND",
                field="backfill_id",
            )
        return backfill

    async def _own_ticket(self, ticket_id: str, context: Context) -> pb.Ticket:
        """The ticket, if it exists and names the caller (or the caller is trusted)."""
        caller = self.caller()
        ticket = await self.store.get(ticket_id, self.clock()) if ticket_id else None
        ticket = await self._still(ticket, context, ticket_id)
        if caller.sub not in {p.player_id for p in ticket.players} and not set(caller.roles) & set(
            TRUSTED
        ):
            await abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"ticket {ticket_id!r} does not name the caller ({caller.sub!r})",
                reason="NOT_TICKET_PLAYER",
                field="ticket_id",
            )
        return ticket

    @staticmethod
    async def _still(ticket: pb.Ticket | None, context: Context, ticket_id: str = "") -> pb.Ticket:
        if ticket is None:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no ticket {ticket_id!r} (unknown, or ended longer ago than the retention)",
                reason="TICKET_NOT_FOUND",
                field="ticket_id",
            )
        return ticket


def _participation(p: Participation) -> pb.MatchParticipation:
    message = pb.MatchParticipation(
        match_id=p.match_id,
        mode=p.mode,
        team=p.team,
        role=p.role,
        rank=p.rank,
        outcome=p.outcome,
        started_at_ms=p.started_ms,
        ended_at_ms=p.ended_ms,
    )
    if p.before is not None and p.after is not None:
        message.rated = True
        message.mu_before, message.sigma_before = p.before
        message.mu_after, message.sigma_after = p.after
    return message


async def _invalid(context: Context, message: str, reason: str, field: str) -> NoReturn:
    await abort(context, grpc.StatusCode.INVALID_ARGUMENT, message, reason=reason, field=field)
