"""Client transports to a relay: encrypted UDP (primary) and the gRPC Play stream.

Both speak ClientMessage / ServerMessage; :class:`UdpTransport` wraps them in the
packets of docs/protocol/udp.md (handshake with the connect token, retransmitted
until Accepted; AEAD DATA packets with acks; keep-alives), :class:`PlayTransport`
sends them as stream elements. Received messages are queued for :meth:`recv`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from tessera.v1 import auth_pb2, relay_pb2, relay_pb2_grpc
from tessera.wire.link import LinkStats, SentTimes
from tessera.wire.packet import (
    DATA,
    PONG,
    Channel,
    PacketError,
    decode_pong,
    encode_handshake,
    encode_ping,
)

HANDSHAKE_RETRY_S = 0.25
KEEPALIVE_S = 1.0


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


class UdpTransport(asyncio.DatagramProtocol):
    """An encrypted UDP connection to one relay."""

    def __init__(self) -> None:
        self.stats = LinkStats()
        self.sent_times = SentTimes()
        self.channel: Channel | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.inbox: asyncio.Queue[relay_pb2.ServerMessage | None] = asyncio.Queue()
        self.drops = 0
        self.last_sent = 0.0
        self.last_received = time.monotonic()
        self.closed = False
        self.timeout_s = 10.0
        self._keepalive: asyncio.Task[None] | None = None

    # asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.channel is None or not data or data[0] != DATA:
            if data and data[0] == PONG:
                return
            self.drops += 1
            return
        try:
            opened = self.channel.open(data)
        except PacketError:
            self.drops += 1
            return
        now = time.monotonic()
        self.last_received = now
        self.stats.packets_in += 1
        self.stats.bytes_in += len(data)
        rtt = self.sent_times.ack(opened.ack, now)
        if rtt is not None:
            self.stats.add_rtt(rtt)
        if opened.message:
            try:
                message = relay_pb2.ServerMessage.FromString(opened.message)
            except Exception:
                self.drops += 1
                return
            self.inbox.put_nowait(message)
            if message.WhichOneof("msg") == "disconnected":
                self._mark_closed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._mark_closed()

    def _mark_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.inbox.put_nowait(None)

    # Transport

    async def connect(self, token: auth_pb2.ConnectToken, timeout_s: float) -> relay_pb2.Accepted:
        loop = asyncio.get_running_loop()
        if not token.relay_addresses:
            raise ConnectError("the connect token names no relay")
        await loop.create_datagram_endpoint(
            lambda: self, remote_addr=_address(token.relay_addresses[0])
        )
        self.channel = Channel(token.client_to_server_key, token.server_to_client_key)
        handshake = encode_handshake(token.token)
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            assert self.transport is not None
            self.transport.sendto(handshake)
            try:
                message = await asyncio.wait_for(self.inbox.get(), HANDSHAKE_RETRY_S)
            except TimeoutError:
                continue
            if message is None or message.WhichOneof("msg") == "disconnected":
                raise ConnectError(str(message.disconnected) if message else "closed")
            if message.WhichOneof("msg") == "accepted":
                self.timeout_s = float(message.accepted.timeout_s or self.timeout_s)
                self._keepalive = asyncio.create_task(self._keep_alive())
                return message.accepted
        await self.close("handshake timeout")
        raise ConnectError("the relay did not answer the handshake")

    def send(self, message: relay_pb2.ClientMessage) -> None:
        self._send(message.SerializeToString())

    def _send(self, payload: bytes) -> None:
        if self.closed or self.channel is None or self.transport is None:
            return
        sequence, packet = self.channel.seal(payload)
        self.transport.sendto(packet)
        now = time.monotonic()
        self.sent_times.sent(sequence, now)
        self.last_sent = now
        self.stats.packets_out += 1
        self.stats.bytes_out += len(packet)

    async def _keep_alive(self) -> None:
        """Keep-alives while idle; a relay silent for ``timeout_s`` is gone (it sends
        keep-alives itself, even while the player's zone is restarting)."""
        while not self.closed:
            await asyncio.sleep(KEEPALIVE_S / 2)
            now = time.monotonic()
            if now - self.last_received > self.timeout_s:
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
        if not self.closed:
            goodbye = relay_pb2.ClientMessage(disconnect=relay_pb2.Disconnect(reason=reason))
            for _ in range(3):  # unacknowledged: repeat to survive loss
                self.send(goodbye)
        self._mark_closed()
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        if self.transport is not None:
            self.transport.close()

    @property
    def loss(self) -> float:
        return 0.0 if self.channel is None else self.channel.window.loss


class PlayTransport:
    """The gRPC Play stream to a relay (for tools, tests, networks without UDP)."""

    def __init__(self, relay_grpc_address: str) -> None:
        self.address = relay_grpc_address
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
        self._channel = grpc.aio.insecure_channel(self.address)
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
