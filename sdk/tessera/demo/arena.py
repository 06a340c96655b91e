"""Arena matches in the demo: two guest players walk the open world, queue for the
``arena`` mode, reconnect with the matchmaker's connect tokens (the relay moves
them into the match's instance zone, state kept) and fight. The instance zone
runs the arena module (:mod:`tessera.examples.arena`): it starts the match, counts
the kills, ends it by its rules and reports the result to matchmaking itself.
This script only watches: the zone's match events reach the players, the result
is in the zone's audit record (actor: the zone's service client) and in both
players' rated match history, and the instance hands them back to the open world,
connected all along. :meth:`Arena.play` runs one match and records what it saw."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from tessera.client.bot import Arms, attack, towards
from tessera.client.client import GameClient, Intent
from tessera.client.login import connect_token, guest_login
from tessera.client.transport import ConnectError, UdpTransport
from tessera.common import database, store, tls
from tessera.common.audit import AuditLog
from tessera.demo.stack import WORLD, Stack
from tessera.demo.world import ARENA_MODE, ARENA_WIN_KILLS
from tessera.v1 import auth_pb2, matchmaking_pb2, matchmaking_pb2_grpc, zone_pb2

log = logging.getLogger(__name__)

REGION = "default"
# The zone's match events (tessera.game.rules: STARTED, SCORE, ENDED).
STARTED, SCORE, ENDED = "match_started", "score", "match_ended"
# How the arena players fight: chase the opponent, strike within reach, shoot
# within range (the zone's default weapons), a press every other input.
ARMS = Arms(melee_m=2.0, ranged_m=40.0)
CLOSE_M = 1.5
# Time for the zone to start the match and for its result to be seen, beyond the
# match's own time limit.
MARGIN_S = 45.0
# What a match takes besides its time limit, measured on the shared machine
# (login, queue, instance start, the way back: 14-15 s): a run starts no match
# that would not end before the run does.
OVERHEAD_S = 15.0


class ArenaError(Exception):
    """A step of an arena match did not happen in time."""


@dataclass(frozen=True)
class MatchRecord:
    """What one arena match went through."""

    match_id: str
    instance: str
    players: tuple[str, ...]
    same_entities: bool  # the instance adopted each player's entity
    disconnects: int  # match sessions that ended before the players left
    seconds: float
    scores: tuple[float, ...]  # each team's final score, as the zone told the players
    ended_by: str  # "score" (a team reached the win kills) or "time"
    reporter: str  # who reported the result (the zone's audit record: its service client)
    outcomes: tuple[str, ...]  # each player's rated outcome in matchmaking (win/loss/draw)
    rating_changes: tuple[float, ...]  # each player's mu after minus before
    rated: bool  # every player's rating (mu or sigma) changed by the result


@dataclass
class Arena:
    """Runs arena matches against a running stack."""

    auth: str
    matchmaking: str
    redis_url: str
    database_url: str
    world: str
    time_limit_s: float
    win_kills: float = ARENA_WIN_KILLS
    # What the arena's calls to auth and matchmaking trust (None: plaintext).
    client_tls: tls.ClientTls | None = None
    records: list[MatchRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def for_stack(cls, stack: Stack) -> Arena:
        """An arena against the demo's running stack."""
        return cls(
            auth=stack.auth_address,
            matchmaking=stack.procs["matchmaking"].grpc_address,
            redis_url=stack.redis.url,
            database_url=stack.database_url,
            world=WORLD,
            time_limit_s=stack.settings.arena_time_limit_s,
            client_tls=stack.client_tls(),
        )

    def figures(self) -> dict[str, Any]:
        """The matches so far, for the demo's summary."""
        last = self.records[-1] if self.records else None
        return {
            "matches": len(self.records),
            "failed": len(self.errors),
            "disconnects": sum(r.disconnects for r in self.records),
            "entities_changed": sum(1 for r in self.records if not r.same_entities),
            "reported_by_zone": sum(1 for r in self.records if r.reporter == "zone"),
            "rated": sum(1 for r in self.records if r.rated),
            "ended_by_score": sum(1 for r in self.records if r.ended_by == "score"),
            "ended_by_time": sum(1 for r in self.records if r.ended_by == "time"),
            "last_score": "-".join(f"{s:g}" for s in last.scores) if last else "",
            "seconds_mean": round(
                sum(r.seconds for r in self.records) / max(1, len(self.records)), 2
            ),
            "errors": self.errors[-5:],
        }

    def fits(self, now: float, until: float | None) -> bool:
        """Whether a match started at ``now`` ends by ``until`` (None: no end),
        taking its whole time limit (monotonic seconds)."""
        return until is None or now + self.time_limit_s + OVERHEAD_S <= until

    async def run(
        self, stop: asyncio.Event, pause_s: float = 5.0, until: float | None = None
    ) -> None:
        """Play matches one after another until ``stop`` is set, starting none
        that would not end by ``until`` (monotonic seconds)."""
        number = 0
        while not stop.is_set():
            if not self.fits(time.monotonic(), until):
                await stop.wait()
                return
            try:
                self.records.append(await self.play(f"{number:04d}"))
            except (ArenaError, ConnectError, grpc.aio.AioRpcError) as err:
                self.errors.append(str(err))
                log.warning("arena match failed", extra={"error": str(err)})
            number += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause_s)

    async def play(self, tag: str) -> MatchRecord:
        """One match, from the open world to the instance and back."""
        started = time.monotonic()
        redis = store.connect(self.redis_url)

        async def zone_of(player: str) -> str:
            return await store.read_route_zone(redis, self.world, player)

        async def all_in(players: list[str], prefix: str) -> bool:
            return all([(await zone_of(p)).startswith(prefix) for p in players])

        opened: list[GameClient] = []
        try:
            credentials = self.client_tls.credentials() if self.client_tls else None
            sessions = [
                await guest_login(
                    self.auth, f"arena-{tag}-{side}-demo-player", credentials=credentials
                )
                for side in "ab"
            ]
            players = [s.account_id for s in sessions]
            for s in sessions:
                token = await connect_token(self.auth, s.access_token, credentials=credentials)
                opened.append(await _connect(token))
                opened[-1].start(_stroll)
            await _until(lambda: all_in(players, f"{self.world}-"), 10, "open-world routes")
            assignments = await self._match(sessions)
            match, instance = assignments[0].match_id, assignments[0].destination.zone
            moved = [await _connect(a.players[0].connect_token) for a in assignments]
            opened += moved
            for me, other in ((moved[0], moved[1]), (moved[1], moved[0])):
                me.start(_fighter(other))
            await _until(lambda: all_in(players, instance), 15, f"routes to {instance}")
            before = [c.accepted.entity_id for c in opened[:2] if c.accepted]
            after = [c.accepted.entity_id for c in moved if c.accepted]
            same = len(before) == len(after) == 2 and before == after
            await _until(
                lambda: _now(all(_told(c, ENDED) for c in moved)),
                self.time_limit_s + MARGIN_S,
                f"the zone's {ENDED}",
            )
            scores = _scores(moved, [a.players[0].team for a in assignments])
            await _until(lambda: all_in(players, f"{self.world}-"), 30, "the way back")
            counts = [c.snapshots for c in moved]
            await _until(
                lambda: _now(all(c.snapshots > n + 3 for c, n in zip(moved, counts, strict=True))),
                10,
                "snapshots from the open world",
            )
            reporter = await self._reporter(match)
            history = [await self._played(s, match) for s in sessions]
            return MatchRecord(
                match_id=match,
                instance=instance,
                players=tuple(players),
                same_entities=same,
                disconnects=sum(1 for c in moved if not c.connected),
                seconds=round(time.monotonic() - started, 2),
                scores=scores,
                ended_by="score" if max(scores, default=0) >= self.win_kills else "time",
                reporter=reporter,
                outcomes=tuple(h.outcome for h in history),
                rating_changes=tuple(round(h.mu_after - h.mu_before, 3) for h in history),
                rated=all(
                    (h.mu_after, h.sigma_after) != (h.mu_before, h.sigma_before) for h in history
                ),
            )
        finally:
            for client in opened:
                await client.close("arena over")
            await redis.aclose()

    async def _match(self, sessions: list[auth_pb2.Session]) -> list[Any]:
        """Queue both players; their assignments, once made."""
        async with tls.channel(self.matchmaking, tls=self.client_tls) as channel:
            mm: Any = matchmaking_pb2_grpc.MatchmakerStub(channel)
            tickets = [
                await mm.CreateTicket(
                    matchmaking_pb2.CreateTicketRequest(
                        mode=ARENA_MODE,
                        players=[matchmaking_pb2.TicketPlayer(player_id=s.account_id)],
                        regions=[matchmaking_pb2.RegionLatency(region=REGION, latency_ms=10)],
                    ),
                    metadata=_bearer(s.access_token),
                    timeout=10,
                )
                for s in sessions
            ]
            out = []
            for s, ticket in zip(sessions, tickets, strict=True):
                async for seen in mm.WatchAssignment(
                    matchmaking_pb2.WatchAssignmentRequest(ticket_id=ticket.id),
                    metadata=_bearer(s.access_token),
                    timeout=30,
                ):
                    if seen.state == matchmaking_pb2.TICKET_STATE_ASSIGNED:
                        out.append(seen.assignment)
                        break
                else:
                    raise ArenaError(f"ticket {ticket.id} ended unassigned")
            return out

    async def _reporter(self, match: str) -> str:
        """Who reported the match's result: the actor of the zone's audit record of
        its ReportMatchResult (written when matchmaking answered)."""
        pool = await database.connect(self.database_url, max_size=1)
        try:
            audit = AuditLog(pool)
            deadline = time.monotonic() + 30
            while True:
                for record in await audit.recent(10, target=match):
                    if record.action == "ReportMatchResult" and record.outcome == "ok":
                        return record.actor
                if time.monotonic() > deadline:
                    raise ArenaError(f"no audit record of match {match}'s result")
                await asyncio.sleep(0.5)
        finally:
            await pool.close()

    async def _played(
        self, session: auth_pb2.Session, match: str
    ) -> matchmaking_pb2.MatchParticipation:
        """The player's rated part in ``match``, from matchmaking's match history."""
        async with tls.channel(self.matchmaking, tls=self.client_tls) as channel:
            mm: Any = matchmaking_pb2_grpc.MatchmakerStub(channel)
            page = await mm.ListMatchHistory(
                matchmaking_pb2.ListMatchHistoryRequest(),
                metadata=_bearer(session.access_token),
                timeout=10,
            )
        entry: matchmaking_pb2.MatchParticipation
        for entry in page.matches:
            if entry.match_id == match and entry.rated:
                return entry
        raise ArenaError(f"match {match} is not rated in {session.account_id}'s history")


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _game_events(client: GameClient, name: str) -> list[zone_pb2.PlayerEvent]:
    return [
        m.event
        for m in client.events
        if m.event.kind == zone_pb2.PlayerEvent.GAME and m.event.detail == name
    ]


def _told(client: GameClient, name: str) -> bool:
    return bool(_game_events(client, name))


def _scores(clients: list[GameClient], teams: list[int]) -> tuple[float, ...]:
    """The last score of each of ``teams`` (matchmaking's team indexes) the zone
    told the players (0 for a team that never scored; the zone numbers teams from 1)."""
    told: dict[int, float] = {}
    for client in clients:
        for event in _game_events(client, SCORE):
            told[event.other_entity_id] = event.amount
    return tuple(told.get(team + 1, 0.0) for team in teams)


def _stroll(_: GameClient) -> Intent:
    """An open-world player waiting for its match: walks slowly east."""
    return Intent(move_x=0.2)


def _fighter(opponent: GameClient) -> Callable[[GameClient], Intent]:
    """Chase ``opponent`` and attack it (seen in this client's snapshots, else
    where the opponent's own client is: both play in this process); after the
    match, stroll."""

    def control(client: GameClient) -> Intent:
        own = client.world.own_position() if client.world else None
        if own is None or _told(client, ENDED) or opponent.accepted is None:
            return _stroll(client)
        target = client.others().get(opponent.accepted.entity_id)
        if target is None and opponent.world is not None:
            target = opponent.world.own_position()
        if target is None:
            return _stroll(client)
        far = math.hypot(float(target[0] - own[0]), float(target[2] - own[2])) > CLOSE_M
        strike = attack(own, towards(own, target) if far else Intent(), target, ARMS)
        # A press, then a release: each press is one attack.
        return replace(strike, actions=0) if client.sequence % 2 else strike

    return control


async def _connect(token: auth_pb2.ConnectToken) -> GameClient:
    """A connected client, not yet sending inputs (10 a second once started,
    steering by the server's position: no prediction to pay for); retried while
    its destination zone starts (a refusal such as NO_ZONE gives the token back).
    One handshake waits as long as the deadline allows: a relay that took the
    token may answer late, and the token cannot be used again from a new socket."""
    deadline = time.monotonic() + 30.0
    while True:
        client = GameClient(UdpTransport(), input_hz=10.0, predict=False)
        try:
            await client.connect(token, timeout_s=max(1.0, deadline - time.monotonic()))
        except ConnectError:
            await client.close("retry")
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        return client


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise ArenaError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _now(value: bool) -> bool:
    return value
