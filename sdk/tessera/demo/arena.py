"""Arena matches in the demo: two guest players walk the open world, queue for the
``arena`` mode, reconnect with the matchmaker's connect tokens (the relay moves
them into the match's instance zone, state kept), play, and when the result is
reported the instance closes and hands them back to the open world, connected
all along. :meth:`Arena.play` runs one match and records what it saw."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from tessera.client.client import GameClient, Intent
from tessera.client.login import connect_token, guest_login
from tessera.client.transport import ConnectError, UdpTransport
from tessera.common import store, tls
from tessera.demo.stack import MM_CLIENT, WORLD, Stack
from tessera.v1 import auth_pb2, auth_pb2_grpc, matchmaking_pb2, matchmaking_pb2_grpc

log = logging.getLogger(__name__)

MODE = "arena"
REGION = "default"


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


@dataclass
class Arena:
    """Runs arena matches against a running stack."""

    auth: str
    matchmaking: str
    redis_url: str
    world: str
    client_id: str
    client_secret: str
    play_s: float = 3.0
    # What the arena's calls to auth and matchmaking trust (None: plaintext).
    client_tls: tls.ClientTls | None = None
    records: list[MatchRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def for_stack(cls, stack: Stack, *, play_s: float = 3.0) -> Arena:
        """An arena against the demo's running stack."""
        return cls(
            auth=stack.auth_address,
            matchmaking=stack.procs["matchmaking"].grpc_address,
            redis_url=stack.redis.url,
            world=WORLD,
            client_id=MM_CLIENT,
            client_secret=stack.mm_secret,
            play_s=play_s,
            client_tls=stack.client_tls(),
        )

    def figures(self) -> dict[str, Any]:
        """The matches so far, for the demo's summary."""
        return {
            "matches": len(self.records),
            "failed": len(self.errors),
            "disconnects": sum(r.disconnects for r in self.records),
            "entities_changed": sum(1 for r in self.records if not r.same_entities),
            "seconds_mean": round(
                sum(r.seconds for r in self.records) / max(1, len(self.records)), 2
            ),
            "errors": self.errors[-5:],
        }

    async def run(self, stop: asyncio.Event, pause_s: float = 5.0) -> None:
        """Play matches one after another until ``stop`` is set."""
        number = 0
        while not stop.is_set():
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
            await _until(lambda: all_in(players, f"{self.world}-"), 10, "open-world routes")
            assignments = await self._match(sessions)
            match, instance = assignments[0].match_id, assignments[0].destination.zone
            moved = [await _connect(a.players[0].connect_token) for a in assignments]
            opened += moved
            await _until(lambda: all_in(players, instance), 15, f"routes to {instance}")
            before = [c.accepted.entity_id for c in opened[:2] if c.accepted]
            after = [c.accepted.entity_id for c in moved if c.accepted]
            same = len(before) == len(after) == 2 and before == after
            await asyncio.sleep(self.play_s)
            await self._report(match, players)
            await _until(lambda: all_in(players, f"{self.world}-"), 30, "the way back")
            counts = [c.snapshots for c in moved]
            await _until(
                lambda: _now(all(c.snapshots > n + 3 for c, n in zip(moved, counts, strict=True))),
                10,
                "snapshots from the open world",
            )
            return MatchRecord(
                match_id=match,
                instance=instance,
                players=tuple(players),
                same_entities=same,
                disconnects=sum(1 for c in moved if not c.connected),
                seconds=round(time.monotonic() - started, 2),
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
                        mode=MODE,
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

    async def _report(self, match: str, players: list[str]) -> None:
        """The game server's part: the result, as the matchmaking service client."""
        async with tls.channel(self.auth, tls=self.client_tls) as channel:
            auth: Any = auth_pb2_grpc.AuthStub(channel)
            service = await auth.ServiceLogin(
                auth_pb2.ServiceLoginRequest(
                    client_id=self.client_id, client_secret=self.client_secret
                ),
                timeout=10,
            )
        async with tls.channel(self.matchmaking, tls=self.client_tls) as channel:
            mm: Any = matchmaking_pb2_grpc.MatchmakerStub(channel)
            await mm.ReportMatchResult(
                matchmaking_pb2.MatchResult(
                    match_id=match,
                    mode=MODE,
                    teams=[
                        matchmaking_pb2.TeamResult(player_ids=[p], rank=rank)
                        for rank, p in enumerate(players)
                    ],
                ),
                metadata=_bearer(service.access_token),
                timeout=10,
            )


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _connect(token: auth_pb2.ConnectToken) -> GameClient:
    """A client walking slowly east; retried while its destination zone starts (a
    refusal such as NO_ZONE gives the token back). One handshake waits as long as
    the deadline allows: a relay that took the token may answer late, and the token
    cannot be used again from a new socket."""
    deadline = time.monotonic() + 30.0
    while True:
        client = GameClient(UdpTransport(), input_hz=10.0)
        try:
            await client.connect(token, timeout_s=max(1.0, deadline - time.monotonic()))
        except ConnectError:
            await client.close("retry")
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        client.start(lambda _: Intent(move_x=0.2))
        return client


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise ArenaError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _now(value: bool) -> bool:
    return value
