"""Client transports to a relay: encrypted UDP (primary) and the gRPC Play stream.

Both speak ClientMessage / ServerMessage; :class:`UdpTransport` wraps them in the
packets of docs/protocol/udp.md, protocol version 2 (handshake with the connect
token, retransmitted until Accepted; a :class:`~tessera.wire.connection.Connection`
for AEAD, reliable ordered messages, fragments and RTT from the echoed clock;
keep-alives; session resume through any relay of the world), :class:`PlayTransport`
sends them as stream elements. Received messages are queued for :meth:`recv`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from tessera.client.login import open_channel
from tessera.v1 import auth_pb2, relay_pb2, relay_pb2_grpc
from tessera.wire.connection import Connection
from tessera.wire.link import LinkStats
from tessera.wire.packet import (
    DATA,
    PONG,
    REFUSED,
    RESUME,
    PacketError,
    decode_pong,
    encode_handshake,
    encode_ping,
    open_refusal,
)

HANDSHAKE_RETRY_S = 0.25
KEEPALIVE_S = 1.0
# What the client sends on the reliable channel (docs/protocol/udp.md, section 3).
RELIABLE = frozenset({"action", "disconnect"})
# How long close() waits for the relay to acknowledge the reliable Disconnect
# (retransmitted meanwhile, as ENet's disconnect is): an ack comes in one round
# trip, but a starved relay dropping datagrams can need several retransmissions.
CLOSE_WAIT_S = 3.0
# A session with a resume credential that hears nothing from the relay for
# PROBE_AFTER_S asks it for a Pong every PROBE_EVERY_S (a live relay answers at
# once, even while the player's zone is stalled and only keep-alives flow), and
# resumes after RESUME_AFTER_S of silence. A resume tries for the session's idle
# timeout (``timeout_s``): as long as the relay keeps a silent session, so a
# relay that is starved, not gone, still finds the client resuming when it
# catches up.
PROBE_AFTER_S = 0.5
PROBE_EVERY_S = 0.125
RESUME_AFTER_S = 1.0


class ConnectError(Exception):
    """The relay did not accept the connection (timeout, or Disconnected)."""


class Transport(Protocol):
    """What the client needs from a connection to a relay."""

    stats: LinkStats

    async def connect(self, token: auth_pb2.ConnectToken, timeout_s: float) -> relay_pb2.Accepted:
        """Open the session; the Accepted message."""

    def send(self, message: relay_pb2.ClientMessage) -> None:
        """Send one message (fire and forget)."""

    async def recv(self) -> relay_pb2.ServerMessage | None:
        """The next message, or None once the connection is closed."""

    async def close(self, reason: str) -> None:
        """Say goodbye and release the socket / stream."""


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


@dataclass
class PingResult:
    rtt_ms: float
    server_time_ms: float


async def ping(address: str, *, timeout_s: float = 1.0, size: int = 64) -> PingResult:
    """Measure latency to a relay without a session (sessionless PING)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class _Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not answer.done():
                answer.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(_Proto, remote_addr=_address(address))
    try:
        sent = time.perf_counter()
        transport.sendto(encode_ping(1, time.time() * 1000.0, size))
        data = await asyncio.wait_for(answer, timeout_s)
        _id, _client_ms, server_ms = decode_pong(data)
        return PingResult((time.perf_counter() - sent) * 1000.0, server_ms)
    finally:
        transport.close()


class _Socket(asyncio.DatagramProtocol):
    """One UDP socket of a :class:`UdpTransport`, connected to one relay address
    (a resume opens one per relay it tries)."""

    def __init__(self, owner: UdpTransport, address: str) -> None:
        self.owner = owner
        self.address = address
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._datagram(data, self)

    def sendto(self, packet: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(packet)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class UdpTransport:
    """An encrypted UDP connection to a relay of the world, which follows the
    session to another relay (or to this one from a new address) with the resume
    credential the relay issues: when the relay says MOVE or stops, or falls
    silent for ``resume_after_s`` (docs/protocol/udp.md, "Resume").

    ``drop_inbound``, if given, discards each received datagram for which it
    returns True before anything reads it (network-condition tests and tools)."""

    def __init__(
        self,
        *,
        resume_after_s: float = RESUME_AFTER_S,
        drop_inbound: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.stats = LinkStats()
        self.connection: Connection | None = None
        # The key a REFUSED datagram is sealed with (the current connection's).
        self.refusal_key = b""
        self.socket: _Socket | None = None
        self.addresses: list[str] = []
        self.inbox: asyncio.Queue[relay_pb2.ServerMessage | None] = asyncio.Queue()
        self.drops = 0
        self.drop_inbound = drop_inbound
        self.accepted = False
        self.last_sent = 0.0
        self.last_probe = 0.0
        self.last_received = time.monotonic()
        self.closed = False
        self.timeout_s = 10.0
        self.resume_after_s = resume_after_s
        self.credential: relay_pb2.ResumeCredential | None = None
        self.resuming = False
        # Resumes so far, and each one's gap: last packet of the old connection ->
        # Accepted on the new one (seconds).
        self.resumes = 0
        self.resume_gaps: list[float] = []
        self._resumed: asyncio.Future[_Socket] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._keepalive: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # Set when a packet leaves nothing of ours unacknowledged (close() waits).
        self._acked = asyncio.Event()

    @property
    def address(self) -> str:
        """The relay this transport talks to now."""
        return "" if self.socket is None else self.socket.address

    async def _open_socket(self, address: str) -> _Socket:
        loop = asyncio.get_running_loop()
        sock = _Socket(self, address)
        await loop.create_datagram_endpoint(lambda: sock, remote_addr=_address(address))
        return sock

    def _start(self, send_key: bytes, recv_key: bytes) -> None:
        """A new connection (a connect or a resume): fresh keys, sequences and channel."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.connection = Connection(send_key, recv_key)
        self.refusal_key = recv_key
        self.accepted = False

    def _datagram(self, data: bytes, sock: _Socket) -> None:
        if sock is not self.socket and not self.resuming:
            return  # a late answer on a socket given up
        if self.drop_inbound is not None and self.drop_inbound(data):
            return
        connection = self.connection
        if connection is None or not data or data[0] not in (DATA, REFUSED):
            if not data or data[0] != PONG:
                self.drops += 1
            return
        now = time.monotonic()
        try:
            if data[0] == REFUSED:
                payloads = [open_refusal(self.refusal_key, data)]
            else:
                received = connection.receive(data, now)
                payloads = [payload for payload, _reliable in received.messages]
                if received.rtt_ms is not None:
                    self.stats.add_rtt(received.rtt_ms)
        except PacketError:
            self.drops += 1  # e.g. the old relay's late packets after a resume
            return
        self.last_received = now
        self.stats.packets_in += 1
        self.stats.bytes_in += len(data)
        if not connection.unacked:
            self._acked.set()
        for payload in payloads:
            if payload:
                self._message(payload, sock)
        if self.closed and connection.deadline() is not None:
            self._send(b"", force=True)  # acknowledge the relay's Disconnected now
        self._arm()

    def _message(self, payload: bytes, sock: _Socket) -> None:
        try:
            message = relay_pb2.ServerMessage.FromString(payload)
        except Exception:
            self.drops += 1
            return
        kind = message.WhichOneof("msg")
        if kind == "resume":
            self.credential = message.resume
            return
        if self.resuming and self._resumed is not None:
            if kind == "accepted" and not self._resumed.done():
                self.accepted = True
                self._resumed.set_result(sock)
            if kind in ("accepted", "disconnected"):
                return  # a refusal here: the resume tries the next relay
        if kind == "accepted":
            self.accepted = True
        elif not self.accepted and kind != "disconnected":
            self.drops += 1  # the relay sends nothing before Accepted
            return
        if kind == "notice" and message.notice.code == "MOVE":
            self._spawn(self._resume(message.notice.address))
        stopping = kind == "disconnected" and message.disconnected.reason == "RELAY_SHUTDOWN"
        if stopping and self.credential is not None:
            self._spawn(self._resume())
            return
        self.inbox.put_nowait(message)
        if kind == "disconnected":
            self._mark_closed()

    def _arm(self) -> None:
        """Poll the connection at its deadline (retransmissions, a delayed ack); the
        timer stays when the deadline has not moved."""
        connection = self.connection
        deadline = None if connection is None or self.closed else connection.deadline()
        if self._timer is not None:
            if deadline == self._timer_at:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._due)
            self._timer_at = deadline

    def _due(self) -> None:
        self._timer = None
        if self.connection is None or self.resuming or self.closed:
            return
        self._transmit(self.connection.poll(time.monotonic()), force=True)
        self._arm()

    def _mark_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.inbox.put_nowait(None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Transport

    async def connect(self, token: auth_pb2.ConnectToken, timeout_s: float) -> relay_pb2.Accepted:
        loop = asyncio.get_running_loop()
        if not token.relay_addresses:
            raise ConnectError("the connect token names no relay")
        self.addresses = list(token.relay_addresses)
        self.socket = await self._open_socket(self.addresses[0])
        self._start(token.client_to_server_key, token.server_to_client_key)
        handshake = encode_handshake(token.token)
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            self.socket.sendto(handshake)
            try:
                message = await asyncio.wait_for(self.inbox.get(), HANDSHAKE_RETRY_S)
            except TimeoutError:
                continue
            if message is None or message.WhichOneof("msg") == "disconnected":
                raise ConnectError(str(message.disconnected) if message else "closed")
            if message.WhichOneof("msg") == "accepted":
                self.timeout_s = float(message.accepted.timeout_s or self.timeout_s)
                self.last_received = time.monotonic()
                self._keepalive = asyncio.create_task(self._keep_alive())
                return message.accepted
        await self.close("handshake timeout")
        raise ConnectError("the relay did not answer the handshake")

    async def _resume(self, prefer: str = "") -> None:
        """Carry the session on through another relay of the world (or this one
        from a new socket): RESUME with the current credential, two tries per
        relay every HANDSHAKE_RETRY_S (``prefer`` first, then the token's other
        relays, then the current one), until one answers Accepted or the
        session's idle timeout passes (then the session is over:
        ``RESUME_FAILED``)."""
        credential = self.credential
        if credential is None or self.resuming or self.closed:
            return
        self.resuming = True
        loop = asyncio.get_running_loop()
        silent_since = self.last_received
        self.credential = None
        self._start(credential.client_to_server_key, credential.server_to_client_key)
        self._resumed = loop.create_future()
        packet = encode_handshake(credential.credential, RESUME)
        current = self.address
        order = list(dict.fromkeys(a for a in (prefer, *self.addresses, current) if a))
        if len(order) > 1:
            order.remove(current)
            order.append(current)
        sockets: dict[str, _Socket] = {}
        try:
            deadline = loop.time() + self.timeout_s
            attempt = 0
            while loop.time() < deadline and not self._resumed.done() and not self.closed:
                address = order[(attempt // 2) % len(order)]
                attempt += 1
                sock = sockets.get(address)
                if sock is None:
                    sock = sockets[address] = await self._open_socket(address)
                sock.sendto(packet)
                await asyncio.wait([self._resumed], timeout=HANDSHAKE_RETRY_S)
            if not self._resumed.done():
                self.inbox.put_nowait(
                    relay_pb2.ServerMessage(
                        disconnected=relay_pb2.Disconnected(
                            reason="RESUME_FAILED", message="no relay took the session back"
                        )
                    )
                )
                self._mark_closed()
                return
            old, self.socket = self.socket, self._resumed.result()
            if old is not None and old is not self.socket:
                old.close()
            self.resumes += 1
            self.resume_gaps.append(time.monotonic() - silent_since)
        finally:
            self.resuming = False
            for sock in sockets.values():
                if sock is not self.socket:
                    sock.close()

    def rebind(self) -> None:
        """Move to a new local socket (port) without telling the relay, as a NAT
        rebinding does; the relay stops hearing from this session's address, and the
        transport resumes when the relay falls silent (for tests and tools)."""
        old = self.socket
        assert old is not None
        self._spawn(self._rebind(old))

    async def _rebind(self, old: _Socket) -> None:
        self.socket = await self._open_socket(old.address)
        old.close()

    def send(self, message: relay_pb2.ClientMessage) -> None:
        """Send a message: game actions and Disconnect on the reliable channel, the
        rest unreliably."""
        connection = self.connection
        if message.WhichOneof("msg") not in RELIABLE or connection is None or not self._open:
            self._send(message.SerializeToString())
            return
        self._transmit(connection.send_reliable(message.SerializeToString(), time.monotonic()))
        self._arm()

    @property
    def _open(self) -> bool:
        return not (self.closed or self.resuming or self.socket is None)

    def _send(self, payload: bytes, *, force: bool = False) -> None:
        if self.connection is not None and (force or self._open):
            self._transmit(self.connection.send(payload, time.monotonic()), force=force)

    def _transmit(self, packets: list[bytes], *, force: bool = False) -> None:
        if self.socket is None or not (force or self._open):
            return
        for packet in packets:
            self.socket.sendto(packet)
            self.stats.packets_out += 1
            self.stats.bytes_out += len(packet)
        if packets:
            self.last_sent = time.monotonic()

    async def _keep_alive(self) -> None:
        """Keep-alives while idle, and probes while the relay is silent: a relay
        that answers none of them for ``resume_after_s`` is gone or no longer hears
        this address, so resume. Without a credential, or silent for
        ``timeout_s``, the session is over."""
        while not self.closed:
            await asyncio.sleep(PROBE_EVERY_S)
            if self.resuming:
                continue
            now = time.monotonic()
            silent = now - self.last_received
            if self.credential is not None:
                if silent > self.resume_after_s:
                    self._spawn(self._resume())
                    continue
                if silent > PROBE_AFTER_S and now - self.last_probe >= PROBE_EVERY_S:
                    self.last_probe = now
                    ping = relay_pb2.Ping(id=0, client_time_ms=time.time() * 1000.0)
                    self._send(relay_pb2.ClientMessage(ping=ping).SerializeToString())
                    continue
            if silent > self.timeout_s:
                self.inbox.put_nowait(
                    relay_pb2.ServerMessage(
                        disconnected=relay_pb2.Disconnected(
                            reason="TIMEOUT", message="no packet from the relay"
                        )
                    )
                )
                self._mark_closed()
                return
            if now - self.last_sent >= KEEPALIVE_S:
                self._send(b"")

    async def recv(self) -> relay_pb2.ServerMessage | None:
        if self.closed and self.inbox.empty():
            return None
        return await self.inbox.get()

    async def close(self, reason: str) -> None:
        """Say goodbye on the reliable channel and wait (CLOSE_WAIT_S at most) for
        its ack, so the relay ends the session now rather than by idle timeout."""
        if not self.closed and self.accepted and self.connection is not None:
            self._acked.clear()
            self.send(relay_pb2.ClientMessage(disconnect=relay_pb2.Disconnect(reason=reason)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), CLOSE_WAIT_S)
        self._mark_closed()
        if self._timer is not None:
            self._timer.cancel()
        for task in [self._keepalive, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.socket is not None:
            self.socket.close()

    @property
    def loss(self) -> float:
        return 0.0 if self.connection is None else self.connection.channel.window.loss


class PlayTransport:
    """The gRPC Play stream to a relay (for tools, tests, networks without UDP)."""

    def __init__(
        self, relay_grpc_address: str, *, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.address = relay_grpc_address
        self.credentials = credentials
        self.stats = LinkStats()
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._outbox: asyncio.Queue[relay_pb2.ClientMessage | None] = asyncio.Queue()
        self.closed = False

    async def _requests(self) -> Any:
        while True:
            message = await self._outbox.get()
            if message is None:
                return
            self.stats.packets_out += 1
            yield message

    async def connect(self, token: auth_pb2.ConnectToken, timeout_s: float) -> relay_pb2.Accepted:
        self._channel = open_channel(self.address, self.credentials)
        stub: Any = relay_pb2_grpc.RelayStub(self._channel)
        self._outbox.put_nowait(
            relay_pb2.ClientMessage(connect=relay_pb2.Connect(connect_token=token.token))
        )
        self._call = stub.Play(self._requests())
        try:
            first = await asyncio.wait_for(self._call.read(), timeout_s)
        except grpc.aio.AioRpcError as err:
            raise ConnectError(f"{err.code().name}: {err.details()}") from None
        if first is grpc.aio.EOF or first.WhichOneof("msg") != "accepted":  # type: ignore[attr-defined]
            raise ConnectError("the relay did not accept the session")
        accepted: relay_pb2.Accepted = first.accepted
        return accepted

    def send(self, message: relay_pb2.ClientMessage) -> None:
        if not self.closed:
            self._outbox.put_nowait(message)

    async def recv(self) -> relay_pb2.ServerMessage | None:
        if self._call is None or self.closed:
            return None
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError:
            self.closed = True
            return None
        if message is grpc.aio.EOF:  # type: ignore[attr-defined]
            self.closed = True
            return None
        self.stats.packets_in += 1
        result: relay_pb2.ServerMessage = message
        return result

    async def close(self, reason: str) -> None:
        if not self.closed:
            self.send(relay_pb2.ClientMessage(disconnect=relay_pb2.Disconnect(reason=reason)))
            self._outbox.put_nowait(None)
            self.closed = True
        if self._channel is not None:
            await asyncio.sleep(0.05)
            await self._channel.close(None)
