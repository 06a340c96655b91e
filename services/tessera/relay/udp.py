"""The client-facing UDP endpoint (docs/protocol/udp.md, protocol version 2).

A RESUME (a resume credential instead of a connect token) is handled exactly
like a HANDSHAKE, and both open a session that is then issued resume credentials.
A version-1 HANDSHAKE or RESUME with a genuine token is refused with
``VERSION_UNSUPPORTED``, sealed the way a version-1 client reads it.

Per datagram: size check, session lookup by source address, rate limits, then
the session's :class:`~tessera.wire.connection.Connection` (AEAD, replay window,
acks, reliable order, reassembly) and each delivered ClientMessage to the
gateway. A connection's retransmissions and delayed acks run on a timer armed at
its deadline; a closed session's connection lingers up to LINGER_S so that its
Disconnected (and the ack of the client's Disconnect) still get through.
Datagrams from unknown addresses get a reply only if they are a PING (answered
with a smaller PONG) or a HANDSHAKE with a genuine token; everything else is
dropped silently and counted by reason.
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
from tessera.wire.connection import Connection, WindowFull
from tessera.wire.packet import (
    DATA,
    HANDSHAKE,
    MAX_PACKET,
    PING,
    RESUME,
    VERSION_1,
    PacketError,
    decode_handshake,
    decode_ping,
    encode_pong,
    seal_refusal,
    seal_v1,
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
# A closed session's connection keeps retransmitting (its Disconnected) and
# acknowledging (the client's Disconnect) this long at most.
LINGER_S = 2.0
# Reliable message 1 of every session.
ACCEPTED_SEQUENCE = 1

VERSION_REFUSAL = relay_pb2.ServerMessage(
    disconnected=relay_pb2.Disconnected(
        reason="VERSION_UNSUPPORTED",
        message="this relay speaks UDP protocol version 2 (docs/protocol/udp.md): update the "
        "client",
    )
).SerializeToString()


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
        # Connections of closed sessions still owed an ack or a retransmission,
        # with the monotonic time they are given up at.
        self.lingering: dict[Address, tuple[Connection, float]] = {}
        # Each connection's pending poll: (its deadline, the timer).
        self.timers: dict[Connection, tuple[float, asyncio.TimerHandle]] = {}

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
        elif kind == DATA and addr in self.lingering:
            self._linger_data(data, addr)
        elif session is None:
            counters.drops["unknown_address"] += 1
        else:
            counters.drops["bad_type"] += 1

    # -- session traffic --------------------------------------------------

    def _data(self, session: Session, data: bytes, size: int) -> None:
        now = time.monotonic()
        connection = session.connection
        assert session.limits is not None and connection is not None
        reason = session.limits.admit(size, now)
        if reason is not None:
            self.counters.drops[reason] += 1
            return
        try:
            received = connection.receive(data, now)
        except PacketError as err:
            self.counters.drops[err.reason] += 1
            return
        session.last_seen = now
        stats = session.stats
        stats.packets_in += 1
        stats.bytes_in += size
        if received.rtt_ms is not None:
            self.gateway.rtt_sample(session, received.rtt_ms)
        for payload, _reliable in received.messages:
            if session.closed:
                break
            try:
                message = relay_pb2.ClientMessage.FromString(payload)
            except DecodeError:
                self.counters.drops["bad_message"] += 1
                continue
            self.gateway.handle(session, message, time.perf_counter())
        self._arm(connection, session.address or ("", 0))

    def _linger_data(self, data: bytes, addr: Address) -> None:
        """A packet for a closed session's connection: only its acks matter."""
        connection = self.lingering[addr][0]
        try:
            connection.receive(data, time.monotonic())
        except PacketError as err:
            self.counters.drops[err.reason] += 1
            return
        self._arm(connection, addr)

    def _transmit(self, packets: list[bytes], addr: Address, session: Session | None) -> None:
        transport = self.transport
        if transport is None:
            return
        for packet in packets:
            transport.sendto(packet, addr)
            size = len(packet)
            self.counters.sent(size)
            if session is not None:
                session.stats.packets_out += 1
                session.stats.bytes_out += size
        if session is not None and packets:
            session.last_sent = time.monotonic()

    def _arm(self, connection: Connection, addr: Address) -> None:
        """Make sure ``connection`` is polled at its deadline (one timer each, kept
        when the deadline has not changed)."""
        deadline = connection.deadline()
        armed = self.timers.get(connection)
        if armed is not None:
            if armed[0] == deadline:
                return
            armed[1].cancel()
            del self.timers[connection]
        if deadline is None:
            if self.lingering.get(addr, (None, 0.0))[0] is connection:
                del self.lingering[addr]
            return
        delay = max(0.0, deadline - time.monotonic())
        handle = asyncio.get_running_loop().call_later(delay, self._due, connection, addr)
        self.timers[connection] = (deadline, handle)

    def _cancel(self, connection: Connection) -> None:
        armed = self.timers.pop(connection, None)
        if armed is not None:
            armed[1].cancel()

    def _due(self, connection: Connection, addr: Address) -> None:
        """A connection's timer: send its retransmissions and delayed ack."""
        self.timers.pop(connection, None)
        now = time.monotonic()
        session = self.gateway.sessions.by_address.get(addr)
        if session is None or session.connection is not connection:
            session = None
            lingering = self.lingering.get(addr)
            if lingering is None or lingering[0] is not connection:
                return
            if now > lingering[1]:
                del self.lingering[addr]
                return
        self._transmit(connection.poll(now), addr, session)
        self._arm(connection, addr)

    def senders(self, session: Session) -> tuple[Any, Any]:
        """The functions that send ServerMessage bytes to ``session``: unreliably
        (fragmented when larger than a datagram) and on the reliable channel.
        Nothing goes out before the session's Accepted."""
        counters = self.counters

        def send(payload: bytes) -> None:
            connection = session.connection
            if connection is None or session.address is None or not session.accepted:
                return
            try:
                packets = connection.send(payload, time.monotonic())
            except ValueError:
                counters.drops["message_too_large"] += 1  # over MAX_FRAGMENTS datagrams
                return
            if len(packets) > 1:
                counters.fragmented += 1
            self._transmit(packets, session.address, session)

        def post(payload: bytes) -> None:
            connection = session.connection
            if connection is None or session.address is None or not session.accepted:
                return
            now = time.monotonic()
            try:
                packets = connection.send_reliable(payload, now)
                counters.reliable_messages += 1
            except WindowFull:
                # Told once, unreliably; the session ends on the next turn.
                packets = connection.send(payload, now)
                asyncio.get_running_loop().call_soon(self._overflow, session)
            self._transmit(packets, session.address, session)
            self._arm(connection, session.address)

        return send, post

    def _overflow(self, session: Session) -> None:
        if session.closed:
            return
        self.counters.reliable_overflows += 1
        self.gateway.close(
            session,
            "RELIABLE_OVERFLOW",
            "the client acknowledged none of the last reliable messages",
            leave=True,
        )

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
        pong = encode_pong(ping_id, client_ms, time.time() * 1000.0)
        self._transmit([pong], addr, None)

    def _handshake(self, data: bytes, addr: Address, session: Session | None, kind: int) -> None:
        """A HANDSHAKE (connect token) or RESUME (resume credential): same framing,
        same limits, same answers."""
        counters = self.counters
        try:
            version, token = decode_handshake(data, "resume" if kind == RESUME else "handshake")
        except PacketError as err:
            counters.drops[err.reason] += 1
            return
        if session is not None:
            # A retransmission while Accepted is unacknowledged: send it again now.
            connection = session.connection
            if session.accepted and connection is not None and self.pending.get(addr) == token:
                self._transmit(
                    connection.resend(ACCEPTED_SEQUENCE, time.monotonic()), addr, session
                )
                self._arm(connection, addr)
                return
            if kind == HANDSHAKE:
                counters.drops["handshake_on_session"] += 1
                return
            # A resume from a session's own address replaces that session.
        if self.gateway.draining:
            counters.drops["draining"] += 1
            return
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
        if version == VERSION_1:
            self._refuse_version(token, addr, kind == RESUME)
            return
        self.pending[addr] = token
        task = asyncio.create_task(self._admit(token, addr, kind == RESUME))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refuse_version(self, token: bytes, addr: Address, resuming: bool) -> None:
        """Answer a version-1 handshake whose token opens with VERSION_UNSUPPORTED,
        as the first DATA packet of a version-1 connection (the token is not spent)."""
        results = self.counters.resumes if resuming else self.counters.handshakes
        try:
            grant = self.gateway.admission.open_unspent(token, time.time(), resuming=resuming)
        except Rejected as err:
            results[err.reason] += 1
            self.counters.drops["resume_rejected" if resuming else "handshake_rejected"] += 1
            self._note_rejection(err.reason, addr)
            return
        results["version_unsupported"] += 1
        self._transmit([seal_v1(grant.server_to_client_key, VERSION_REFUSAL)], addr, None)

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
            connection = Connection(
                grant.server_to_client_key, grant.client_to_server_key, self.counters.tally
            )
            self.wire(session, connection, token)

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
        session.post(session.accepted)
        self.gateway.issue_resume(session)
        return "accepted"

    def _refuse(self, grant: Grant, addr: Address, reason: str, detail: str) -> None:
        """Tell a client with a genuine token why no session opened: a REFUSED
        datagram (sealed, so only the token's holder can read it; far smaller than
        its handshake; under a random nonce, never one of the session's own)."""
        goodbye = relay_pb2.ServerMessage(
            disconnected=relay_pb2.Disconnected(reason=reason.upper(), message=detail[:200])
        )
        refusal = seal_refusal(grant.server_to_client_key, goodbye.SerializeToString())
        self._transmit([refusal], addr, None)

    def wire(self, session: Session, connection: Connection, token: bytes) -> None:
        """Give a new session at ``session.address`` its connection, limits, senders
        and close hook (``token``: what opened it, pending until then)."""
        assert session.address is not None
        addr = session.address
        session.connection = connection
        session.limits = ConnectionLimits(
            packets_per_s=self.limits.packets_per_s,
            bytes_per_s=self.limits.bytes_per_s,
            burst_s=self.limits.burst_s,
            now=time.monotonic(),
        )
        session.send, session.post = self.senders(session)
        session.on_close = lambda _reason: self._closed(session, addr, token)
        self._unlinger(addr)

    def _unlinger(self, addr: Address) -> None:
        lingering = self.lingering.pop(addr, None)
        if lingering is not None:
            self._cancel(lingering[0])

    def _forget(self, addr: Address, token: bytes) -> None:
        if self.pending.get(addr) == token:
            del self.pending[addr]

    def _closed(self, session: Session, addr: Address, token: bytes) -> None:
        """A session ended: its connection lingers while it owes something."""
        self._forget(addr, token)
        connection = session.connection
        if connection is None:
            return
        self._cancel(connection)
        if connection.deadline() is not None:
            self._unlinger(addr)
            self.lingering[addr] = (connection, time.monotonic() + LINGER_S)
            self._arm(connection, addr)


def _discard(_payload: bytes) -> None:
    """Placeholder sender until the session's channel exists."""
