"""The client-facing UDP endpoint (docs/protocol/udp.md).

A RESUME (a resume credential instead of a connect token) is handled exactly
like a HANDSHAKE, and both open a session that is then issued resume credentials.

Per datagram: size check, session lookup by source address, rate limits, AEAD
open with the replay window, ack bookkeeping, then one ClientMessage to the
gateway. Datagrams from unknown addresses get a reply only if they are a PING
(answered with a smaller PONG) or a valid HANDSHAKE; everything else is dropped
silently and counted by reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from tessera.relay.admission import Grant, admitting
from tessera.relay.errors import Rejected
from tessera.relay.gateway import Gateway
from tessera.relay.limiter import ConnectionLimits, SourceLimits, TokenBucket
from tessera.relay.metrics import Counters
from tessera.relay.session import Session
from tessera.v1 import relay_pb2
from tessera.wire.packet import (
    DATA,
    HANDSHAKE,
    MAX_PACKET,
    PING,
    RESUME,
    Channel,
    PacketError,
    decode_handshake,
    decode_ping,
    encode_pong,
)

log = logging.getLogger(__name__)

Address = tuple[str, int]


@dataclass(frozen=True)
class UdpLimits:
    packets_per_s: float = 200.0
    bytes_per_s: float = 64_000.0
    burst_s: float = 2.0
    handshakes_per_s: float = 2_000.0
    # Per source host (burst: 2 s worth), checked before the relay-wide budget.
    pings_per_source_s: float = 20.0
    handshakes_per_source_s: float = 20.0


# Rejected handshakes are logged as one summary line at most this often.
REJECTION_LOG_S = 10.0


class UdpEndpoint(asyncio.DatagramProtocol):
    """asyncio protocol for the relay's UDP socket."""

    def __init__(self, gateway: Gateway, counters: Counters, limits: UdpLimits) -> None:
        self.gateway = gateway
        self.counters = counters
        self.limits = limits
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[Address, bytes] = {}
        self.handshakes = TokenBucket(
            limits.handshakes_per_s, limits.handshakes_per_s, time.monotonic()
        )
        self.source_pings = SourceLimits(limits.pings_per_source_s, 2 * limits.pings_per_source_s)
        self.source_handshakes = SourceLimits(
            limits.handshakes_per_source_s, 2 * limits.handshakes_per_source_s
        )
        self.rejected: Counter[str] = Counter()
        self.rejected_sources: set[str] = set()
        self.rejections_logged_at = -REJECTION_LOG_S
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        self.counters.drop("socket_error")

    def datagram_received(self, data: bytes, addr: Any) -> None:
        counters = self.counters
        size = len(data)
        counters.packets_in += 1
        counters.bytes_in += size
        if size > MAX_PACKET:
            counters.drops["too_large"] += 1
            return
        if size == 0:
            counters.drops["empty"] += 1
            return
        kind = data[0]
        session = self.gateway.sessions.by_address.get(addr)
        if session is not None and kind == DATA:
            self._data(session, data, size)
        elif kind == PING:
            self._ping(data, addr)
        elif kind in (HANDSHAKE, RESUME):
            self._handshake(data, addr, session, kind)
        elif session is None:
            counters.drops["unknown_address"] += 1
        else:
            counters.drops["bad_type"] += 1

    # -- session traffic --------------------------------------------------

    def _data(self, session: Session, data: bytes, size: int) -> None:
        now = time.monotonic()
        assert session.limits is not None and session.channel is not None
        reason = session.limits.admit(size, now)
        if reason is not None:
            self.counters.drops[reason] += 1
            return
        try:
            opened = session.channel.open(data)
        except PacketError as err:
            self.counters.drops[err.reason] += 1
            return
        session.last_seen = now
        stats = session.stats
        stats.packets_in += 1
        stats.bytes_in += size
        rtt = session.sent_times.ack(opened.ack, now)
        if rtt is not None:
            self.gateway.rtt_sample(session, rtt)
        if not opened.message:
            return  # keep-alive
        try:
            message = relay_pb2.ClientMessage.FromString(opened.message)
        except DecodeError:
            self.counters.drops["bad_message"] += 1
            return
        self.gateway.handle(session, message, time.perf_counter())

    def sender(self, session: Session) -> Any:
        """The function that seals and sends ServerMessage bytes to ``session``."""
        counters = self.counters
        stats = session.stats
        sent_times = session.sent_times

        def send(payload: bytes) -> None:
            transport = self.transport
            channel = session.channel
            if transport is None or channel is None or session.address is None:
                return
            sequence, packet = channel.seal(payload)
            transport.sendto(packet, session.address)
            now = time.monotonic()
            session.last_sent = now
            sent_times.sent(sequence, now)
            size = len(packet)
            stats.packets_out += 1
            stats.bytes_out += size
            counters.packets_out += 1
            counters.bytes_out += size

        return send

    # -- sessionless ------------------------------------------------------

    def _ping(self, data: bytes, addr: Address) -> None:
        try:
            ping_id, client_ms = decode_ping(data)
        except PacketError as err:
            self.counters.drops[err.reason] += 1
            return
        if not self.source_pings.take(addr[0], time.monotonic()):
            self.counters.drops["ping_rate"] += 1
            return
        if self.transport is not None:
            pong = encode_pong(ping_id, client_ms, time.time() * 1000.0)
            self.transport.sendto(pong, addr)
            self.counters.packets_out += 1
            self.counters.bytes_out += len(pong)

    def _handshake(self, data: bytes, addr: Address, session: Session | None, kind: int) -> None:
        """A HANDSHAKE (connect token) or RESUME (resume credential): same framing,
        same limits, same answers."""
        counters = self.counters
        try:
            token = decode_handshake(data, "resume" if kind == RESUME else "handshake")
        except PacketError as err:
            counters.drops[err.reason] += 1
            return
        if session is not None:
            # A retransmission after our Accepted got lost: answer it again.
            if session.accepted and self.pending.get(addr) == token:
                session.send(session.accepted)
                return
            if kind == HANDSHAKE:
                counters.drops["handshake_on_session"] += 1
                return
            # A resume from a session's own address replaces that session.
        if addr in self.pending:
            counters.drops["handshake_pending"] += 1
            return
        now = time.monotonic()
        # The source's own budget first, so one source cannot spend everyone's.
        if not self.source_handshakes.take(addr[0], now):
            counters.drops["handshake_source_rate"] += 1
            return
        if not self.handshakes.take(1.0, now):
            counters.drops["handshake_rate"] += 1
            return
        self.pending[addr] = token
        task = asyncio.create_task(self._admit(token, addr, kind == RESUME))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admit(self, token: bytes, addr: Address, resuming: bool) -> None:
        results = self.counters.resumes if resuming else self.counters.handshakes
        with admitting("udp", resuming=resuming) as span:
            try:
                if resuming:
                    grant: Grant = await self.gateway.admission.admit_resume(token, time.time())
                else:
                    grant = await self.gateway.admission.admit(token, time.time())
            except Rejected as err:
                self._forget(addr, token)
                results[err.reason] += 1
                self.counters.drops["resume_rejected" if resuming else "handshake_rejected"] += 1
                self._note_rejection(err.reason, addr)
                span.set_attribute("tessera.result", err.reason)
                return
            span.set_attribute("tessera.result", await self._open(grant, addr, token, results))

    def _note_rejection(self, reason: str, addr: Address) -> None:
        """Count a rejected handshake for the summary log line: one line per
        REJECTION_LOG_S with the counts by reason since the last one (a flood of bad
        handshakes must not become a flood of log lines)."""
        self.rejected[reason] += 1
        if len(self.rejected_sources) < 1000:
            self.rejected_sources.add(addr[0])
        now = time.monotonic()
        if now - self.rejections_logged_at < REJECTION_LOG_S:
            return
        log.warning(
            "handshakes rejected",
            extra={
                "by_reason": dict(self.rejected),
                "sources": len(self.rejected_sources),
                "example_source": addr[0],
            },
        )
        self.rejected.clear()
        self.rejected_sources.clear()
        self.rejections_logged_at = now

    async def _open(self, grant: Grant, addr: Address, token: bytes, results: Counter[str]) -> str:
        """Open the session of an admitted grant; the result counted (``accepted``
        or why not)."""

        def prepare(session: Session) -> None:
            session.channel = Channel(grant.server_to_client_key, grant.client_to_server_key)
            session.limits = ConnectionLimits(
                packets_per_s=self.limits.packets_per_s,
                bytes_per_s=self.limits.bytes_per_s,
                burst_s=self.limits.burst_s,
                now=time.monotonic(),
            )
            session.send = self.sender(session)
            session.on_close = lambda _reason: self._forget(addr, token)

        try:
            session, accepted = await self.gateway.open_session(
                grant, transport="udp", send=_discard, address=addr, prepare=prepare
            )
        except Exception as err:
            # Released before the address stops being pending: a retransmission
            # meanwhile is dropped as pending, not refused as a replay.
            await self.gateway.admission.release(grant)
            self.pending.pop(addr, None)
            reason = err.reason if isinstance(err, Rejected) else "error"
            results[reason] += 1
            self._refuse(grant, addr, reason, str(err))
            log.warning(
                "session refused",
                extra={"player": grant.player_id, "reason": reason, "detail": str(err)},
            )
            return reason
        session.accepted = relay_pb2.ServerMessage(accepted=accepted).SerializeToString()
        results["accepted"] += 1
        session.send(session.accepted)
        self.gateway.issue_resume(session)
        return "accepted"

    def _refuse(self, grant: Grant, addr: Address, reason: str, detail: str) -> None:
        """Tell a client with a genuine token why no session opened (sealed, so only
        the token's holder can read it; far smaller than its handshake)."""
        if self.transport is None:
            return
        channel = Channel(grant.server_to_client_key, grant.client_to_server_key)
        goodbye = relay_pb2.ServerMessage(
            disconnected=relay_pb2.Disconnected(reason=reason.upper(), message=detail[:200])
        )
        packet = channel.seal(goodbye.SerializeToString())[1]
        self.transport.sendto(packet, addr)
        self.counters.packets_out += 1
        self.counters.bytes_out += len(packet)

    def _forget(self, addr: Address, token: bytes) -> None:
        if self.pending.get(addr) == token:
            del self.pending[addr]


def _discard(_payload: bytes) -> None:
    """Placeholder sender until the session's channel exists."""
