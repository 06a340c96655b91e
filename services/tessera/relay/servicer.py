"""The gRPC face of the relay: the Play stream (same messages as UDP) and the
admin RPCs GetStatus, ListSessions and Kick."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from tessera.authclient import access
from tessera.common.errors import abort
from tessera.relay.admission import admitting
from tessera.relay.errors import Rejected
from tessera.relay.gateway import Gateway
from tessera.relay.metrics import Counters
from tessera.relay.session import Session
from tessera.v1 import common_pb2, relay_pb2, relay_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]

# Who may call each RPC (tessera.authclient.access); docs/AUTH.md lists it. Play
# is open: its first message carries the player's connect token.
RULES = access.table(
    relay_pb2.DESCRIPTOR.services_by_name["Relay"],
    {
        "Play": access.OPEN,
        "GetStatus": access.roles("service", "admin"),
        "ListSessions": access.roles("service", "admin"),
        "Kick": access.roles("service", "admin"),
    },
)


class RelayServicer(relay_pb2_grpc.RelayServicer):
    """tessera.v1.Relay over the shared :class:`Gateway`."""

    def __init__(self, gateway: Gateway, counters: Counters, *, connect_timeout_s: float) -> None:
        self.gateway = gateway
        self.counters = counters
        self.connect_timeout_s = connect_timeout_s

    async def Play(
        self, request_iterator: AsyncIterator[relay_pb2.ClientMessage], context: Context
    ) -> AsyncIterator[relay_pb2.ServerMessage]:
        try:
            first = await asyncio.wait_for(
                anext(aiter(request_iterator), None), self.connect_timeout_s
            )
        except TimeoutError:
            self.counters.drop("connect_timeout")
            await abort(
                context,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no connect message within {self.connect_timeout_s:g} s",
                reason="CONNECT_TIMEOUT",
                field="connect",
            )
        if first is None or first.WhichOneof("msg") != "connect":
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first message must be connect",
                reason="CONNECT_FIRST",
                field="connect",
            )
        counters = self.counters
        outbox: asyncio.Queue[bytes | None] = asyncio.Queue()

        def send(payload: bytes) -> None:
            if payload:
                outbox.put_nowait(payload)

        def prepare(session: Session) -> None:
            session.on_close = lambda _reason: outbox.put_nowait(None)

        with admitting("grpc") as span:
            try:
                grant = await self.gateway.admission.admit(first.connect.connect_token, time.time())
            except Rejected as err:
                counters.handshakes[err.reason] += 1
                span.set_attribute("tessera.result", err.reason)
                await abort(
                    context,
                    grpc.StatusCode.UNAUTHENTICATED,
                    str(err),
                    reason=err.reason.upper(),
                    field="connect.connect_token",
                )
            try:
                session, accepted = await self.gateway.open_session(
                    grant, transport="grpc", send=send, prepare=prepare
                )
            except Rejected as err:
                await self.gateway.admission.release(grant)
                counters.handshakes[err.reason] += 1
                span.set_attribute("tessera.result", err.reason)
                await abort(
                    context,
                    grpc.StatusCode.UNAVAILABLE,
                    str(err),
                    reason=err.reason.upper(),
                    retry_after_s=1.0,
                )
            span.set_attribute("tessera.result", "accepted")
        counters.handshakes["accepted"] += 1
        reader = asyncio.create_task(self._read(session, request_iterator))
        try:
            yield relay_pb2.ServerMessage(accepted=accepted)
            while True:
                payload = await outbox.get()
                if payload is None:
                    # Flush what was queued before the close (e.g. Disconnected).
                    while not outbox.empty():
                        rest = outbox.get_nowait()
                        if rest is not None:
                            yield self._out(session, rest)
                    return
                yield self._out(session, payload)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if not session.closed:
                self.gateway.close(session, "STREAM_CLOSED", "the Play stream ended")

    def _out(self, session: Session, payload: bytes) -> relay_pb2.ServerMessage:
        session.stats.packets_out += 1
        session.stats.bytes_out += len(payload)
        self.counters.packets_out += 1
        self.counters.bytes_out += len(payload)
        return relay_pb2.ServerMessage.FromString(payload)

    async def _read(
        self, session: Session, requests: AsyncIterator[relay_pb2.ClientMessage]
    ) -> None:
        async for message in requests:
            now = time.monotonic()
            size = message.ByteSize()
            session.last_seen = now
            session.stats.packets_in += 1
            session.stats.bytes_in += size
            self.counters.packets_in += 1
            self.counters.bytes_in += size
            if message.WhichOneof("msg") == "connect":
                self.counters.drop("connect_on_session")
                continue
            self.gateway.handle(session, message, time.perf_counter())
            if session.closed:
                return
        if not session.closed:
            self.gateway.close(
                session, "CLIENT_DISCONNECT", "stream closed by the client", leave=True
            )

    async def GetStatus(
        self, request: relay_pb2.GetRelayStatusRequest, context: Context
    ) -> relay_pb2.RelayStatus:
        c = self.counters
        return relay_pb2.RelayStatus(
            relay_id=self.gateway.config.relay_id,
            sessions=self.gateway.sessions.counts(),
            packets_in=c.packets_in,
            packets_out=c.packets_out,
            bytes_in=c.bytes_in,
            bytes_out=c.bytes_out,
            drops=dict(c.drops),
            upstreams=[link.status() for link in self.gateway.links.values()],
            reroutes=c.reroutes,
        )

    async def ListSessions(
        self, request: relay_pb2.ListSessionsRequest, context: Context
    ) -> relay_pb2.ListSessionsResponse:
        now = time.monotonic()
        world = self.gateway.config.world
        sessions = sorted(self.gateway.sessions, key=lambda s: s.player_id)
        if request.limit:
            sessions = sessions[: request.limit]
        return relay_pb2.ListSessionsResponse(
            sessions=[
                relay_pb2.SessionInfo(
                    player_id=s.player_id,
                    transport=s.transport,
                    zone=common_pb2.ZoneRef(world=world, zone=s.zone),
                    rtt_ms=s.stats.rtt_ms,
                    jitter_ms=s.stats.jitter_ms,
                    loss=s.loss,
                    packets_in=s.stats.packets_in,
                    packets_out=s.stats.packets_out,
                    bytes_in=s.stats.bytes_in,
                    bytes_out=s.stats.bytes_out,
                    idle_s=s.idle_s(now),
                )
                for s in sessions
            ]
        )

    async def Kick(
        self, request: relay_pb2.KickRequest, context: Context
    ) -> relay_pb2.KickResponse:
        if not request.player_id:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "player_id is required",
                reason="MISSING_FIELD",
                field="player_id",
            )
        return relay_pb2.KickResponse(kicked=self.gateway.kick(request.player_id, request.reason))
