"""An instance zone's match result, reported to matchmaking by the zone itself
(docs/GAME.md, "Rules"; docs/MATCHMAKING.md, "Results").

The tick only hands the :class:`~tessera.game.rules.Outcome` over
(:meth:`Reporter.submit`, once per zone); :meth:`Reporter.run` sends it with
``ReportMatchResult`` under the zone's service credentials, retrying with
backoff while matchmaking cannot take it. Matchmaking applies a result once per
match id, so a retried report, or one sent again by a restarted zone, changes
nothing (``applied=false``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from tessera.authclient.credentials import ServiceCredentials
from tessera.common.audit import AuditLog, AuditRecord
from tessera.game.rules import Outcome
from tessera.v1 import matchmaking_pb2 as mm_pb
from tessera.v1 import matchmaking_pb2_grpc as mm_grpc
from tessera.zone import metrics

log = logging.getLogger("tessera.zone.results")

# Refusals a retry cannot change: the report is dropped (counted, logged).
FINAL = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


def result_message(
    match_id: str, mode: str, outcome: Outcome, *, now_s: float
) -> mm_pb.MatchResult:
    """The ``MatchResult`` of ``outcome``, its start ``duration_s`` before ``now_s``
    (Unix seconds)."""
    return mm_pb.MatchResult(
        match_id=match_id,
        mode=mode,
        teams=[
            mm_pb.TeamResult(player_ids=s.players, rank=s.rank, roles=s.roles)
            for s in outcome.standings
            if s.players
        ],
        started_at_ms=int((now_s - outcome.duration_s) * 1000),
    )


@dataclass
class Backoff:
    """Seconds to wait before retry ``n`` (0-based): doubling from ``first_s`` up to
    ``most_s``, with up to 20 % jitter so restarted zones do not retry in step."""

    first_s: float = 0.5
    most_s: float = 30.0

    def delay(self, n: int) -> float:
        return min(self.most_s, self.first_s * 2.0**n) * random.uniform(0.8, 1.0)


class Reporter:
    """Sends one match's result: ``send(result)`` is the RPC (True when applied)."""

    def __init__(
        self,
        send: Callable[[mm_pb.MatchResult], Awaitable[bool]],
        *,
        match_id: str,
        mode: str,
        actor: str,
        audit: AuditLog | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.send = send
        self.match_id, self.mode, self.actor = match_id, mode, actor
        self.audit = audit
        self.backoff = backoff or Backoff()
        self.result: mm_pb.MatchResult | None = None
        self.done = asyncio.Event()  # reported, or refused for good
        self._ready = asyncio.Event()
        self.closing: list[Callable[[], Awaitable[None]]] = []

    @classmethod
    def connect(
        cls,
        credentials: ServiceCredentials,
        address: str,
        *,
        match_id: str,
        mode: str,
        audit: AuditLog | None = None,
        timeout_s: float = 10.0,
    ) -> Reporter:
        """A reporter calling matchmaking at ``address`` with ``credentials``' token."""
        channel = credentials.channel_to(address)
        stub = mm_grpc.MatchmakerStub(channel)

        async def send(result: mm_pb.MatchResult) -> bool:
            reply = await stub.ReportMatchResult(result, timeout=timeout_s)
            return bool(reply.applied)

        async def close() -> None:
            await channel.close(None)
            await credentials.close()

        reporter = cls(send, match_id=match_id, mode=mode, actor=credentials.client_id, audit=audit)
        reporter.closing.append(close)
        return reporter

    async def close(self) -> None:
        """Close the channels :meth:`connect` opened."""
        for close in self.closing:
            await close()

    def submit(self, outcome: Outcome) -> None:
        """The match ended: report ``outcome`` (only the first; never blocks)."""
        if self.result is None:
            self.result = result_message(self.match_id, self.mode, outcome, now_s=time.time())
            self._ready.set()

    async def run(self) -> None:
        """Wait for the outcome, then send it until matchmaking has it."""
        await self._ready.wait()
        assert self.result is not None  # submit() set it
        attempt = 0
        while True:
            try:
                applied = await self.send(self.result)
            except grpc.aio.AioRpcError as err:
                if err.code() in FINAL:
                    self._finish("rejected", f"{err.code().name}: {err.details()}")
                    return
                metrics.MATCH_RESULTS.labels("retried").inc()
                log.warning(
                    "match result not reported yet, retrying",
                    extra={"match": self.match_id, "code": err.code().name, "attempt": attempt},
                )
                await asyncio.sleep(self.backoff.delay(attempt))
                attempt += 1
                continue
            self._finish("reported" if applied else "duplicate", f"applied={applied}")
            return

    def _finish(self, outcome: str, detail: str) -> None:
        metrics.MATCH_RESULTS.labels(outcome).inc()
        level = logging.ERROR if outcome == "rejected" else logging.INFO
        log.log(level, "match result %s", outcome, extra={"match": self.match_id, "detail": detail})
        if self.audit is not None:
            self.audit.write(
                AuditRecord(
                    actor=self.actor,
                    action="ReportMatchResult",
                    target=self.match_id,
                    source="zone",
                    outcome="refused" if outcome == "rejected" else "ok",
                    detail=f"{outcome}: {detail}",
                )
            )
        self.done.set()
