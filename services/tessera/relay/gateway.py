"""The relay's data plane: admits connect tokens, opens and ends sessions, forwards
client messages to their zone, fans snapshots out to clients, follows route
changes and keeps the session table and the zone links healthy.

Which zone a session joins, and every Join and Leave that puts it there, is
:mod:`tessera.relay.placement`; the gateway acts on what it returns. Transports
(UDP, gRPC Play) only frame bytes; everything a session means lives here, so both
behave the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.trace import get_current_span
from redis.exceptions import RedisError

from tessera.authclient.credentials import TokenSource
from tessera.common import tls, tracing
from tessera.relay import resume
from tessera.relay.admission import Admission, Grant, TokenOpener
from tessera.relay.errors import Rejected
from tessera.relay.metrics import DOWN_LATENCY, LINK_BATCH, RTT, SAMPLE_EVERY, Counters
from tessera.relay.placement import Placement, Returned, Rollback, Stranded, TransferUndone
from tessera.relay.presence import Presence
from tessera.relay.routing import Route, RouteCache
from tessera.relay.session import Session, SessionTable
from tessera.relay.store import RelayStore
from tessera.relay.upstream import INPUT_LEAD, ZoneLink
from tessera.relay.zones import warm_zones
from tessera.v1 import relay_pb2, zone_pb2

log = logging.getLogger(__name__)

KEEPALIVE_S = 1.0
# A draining relay counts a client silent this long as moved (clients send a
# keep-alive at least every second).
DRAIN_QUIET_S = 1.5
# Arguments per game action at most (a module's actions take a few numbers).
MAX_ACTION_ARGS = 16
# How soon the sweep tries again to issue a resume credential after a failure.
RESUME_RETRY_S = 1.0
# A client sends at least a keep-alive every second. One this relay has not heard
# for UNHEARD_S while still sending to it most likely reaches another process now
# (a relay worker joining the port's SO_REUSEPORT group takes over some 4-tuples),
# or loses its packets one way only: told to MOVE, it resumes from a new socket.
UNHEARD_S = 3.0
# A sweep this late (the loop was starved or stopped) restarts the UNHEARD_S clock.
SWEEP_LATE_S = 1.0
UNHEARD_MOVE = relay_pb2.ServerMessage(
    notice=relay_pb2.Notice(code="MOVE", message="this relay does not hear you")
).SerializeToString()


@dataclass(frozen=True)
class GatewayConfig:
    relay_id: str
    world: str
    batch_s: float = 0.0005
    # Of a zone's tick period: how long before its next tick held inputs go (1: never held).
    input_lead: float = INPUT_LEAD
    upstream_timeout_s: float = 10.0
    default_timeout_s: float = 10.0
    # Each zone call's bound: the wait for its link, then the RPC.
    rpc_timeout_s: float = 3.0
    # A link whose zone sends its players nothing for this long is broken (frozen zone).
    zone_silence_s: float = 1.0
    # How long the players of a relay that stopped heartbeating keep their entities.
    orphan_grace_s: float = 30.0
    # Seals resume credentials; every relay of the world must have the same one
    # (derived from the connect key: resume.derive_key).
    resume_key: bytes = field(default_factory=lambda: os.urandom(32))
    # This relay's public UDP address, offered to the clients of a stopping relay.
    public_address: str = ""


class Gateway:
    """See the module docstring. One per relay process."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        store: RelayStore,
        opener: TokenOpener,
        counters: Counters,
        channel: Callable[[str], grpc.aio.Channel] = tls.zone_channel,
        tokens: TokenSource | None = None,
    ) -> None:
        self.config = config
        self.channel = channel
        self.tokens = tokens
        self.store = store
        self.admission = Admission(
            world=config.world,
            resume_key=config.resume_key,
            opener=opener,
            store=store,
            rotated=self._rotated_here,
        )
        self.counters = counters
        self.sessions = SessionTable()
        self.links: dict[str, ZoneLink] = {}
        self.routes = RouteCache()
        self.placement = Placement(
            relay_id=config.relay_id,
            rpc_timeout_s=config.rpc_timeout_s,
            store=store,
            link=self.link,
            counters=counters,
        )
        self.presence = Presence(
            relay_id=config.relay_id,
            public_address=config.public_address,
            grace_s=config.orphan_grace_s,
            store=store,
            placement=self.placement,
            sessions=self.sessions,
            counters=counters,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        # Set when a stop begins: the UDP endpoint then opens no new session.
        self.draining = False
        # Monotonic times of the last sweep, and since when sweeps have come on time
        # (a relay starved or stopped for a while has not read what its clients sent).
        self._swept = 0.0
        self._awake_since = 0.0

    # -- revocation -------------------------------------------------------

    def revoke(self, session_id: str, until: float) -> None:
        """Auth revoked ``session_id``: refuse its tokens until ``until`` and end the
        sessions opened with them (``REVOKED``; the player leaves their zone)."""
        self.admission.revoke(session_id, until)
        for session in self.sessions:
            if session.session_id == session_id:
                self._end(session, "REVOKED", "the player's login session was revoked")

    # -- opening sessions -------------------------------------------------

    async def open_session(
        self,
        grant: Grant,
        *,
        transport: str,
        send: Callable[[bytes], None],
        address: tuple[str, int] | None = None,
        prepare: Callable[[Session], None] | None = None,
    ) -> tuple[Session, relay_pb2.Accepted]:
        """Join the player into the zone placement chooses (the token's zone, if it
        names one), with the token's match context, and register the session;
        Rejected on failure. A resume of a session this relay still holds takes
        it over instead (:meth:`_take_over`): no zone call."""
        player = grant.player_id
        held = self._resumed_here(grant)
        if held is not None:
            return self._take_over(held, grant, send=send, address=address, prepare=prepare)
        await self.placement.await_leave(player)
        try:
            placed = await self.placement.place(player, grant.zone, grant.match)
        except TransferUndone as undone:
            self._follow_rollback(player, undone.rollback)
            raise
        link, response = placed.link, placed.response
        now = time.monotonic()
        timeout = float(grant.timeout_s) or self.config.default_timeout_s
        session = Session(
            player_id=player,
            transport=transport,
            token_id=grant.token_id,
            timeout_s=timeout,
            created=now,
            last_seen=now,
            send=send,
            post=send,
            address=address,
            entity_id=response.entity_id,
            zone=link.zone,
            epoch=response.epoch,
            session_id=grant.session_id,
        )
        if prepare is not None:
            prepare(session)
        old = self.sessions.add(session)
        self.presence.changes[player] = link.zone
        if old is not None:
            self._end(old, "REPLACED", "a newer session of this player connected", leave=False)
            if old.zone != link.zone and old.zone in self.links:
                self.links[old.zone].detach(player)
        self.routes.update(player, Route(link.zone, response.epoch))
        link.attach(player)
        if grant.session_id in self.admission.revoked:
            # Revoked while the Join was under way.
            self._end(session, "REVOKED", "the player's login session was revoked")
            raise Rejected("revoked", "the connect token's session has been revoked")
        accepted = relay_pb2.Accepted(
            player_id=player,
            entity_id=response.entity_id,
            world=self.config.world,
            quantization=response.quantization,
            tick_hz=response.tick_hz,
            timeout_s=round(timeout),
            game=response.game,
        )
        session.game = response.game.SerializeToString()
        log.info(
            "session opened", extra={"player": player, "transport": transport, "zone": link.zone}
        )
        get_current_span().set_attributes(
            {
                "tessera.player_id": player,
                "tessera.zone": link.zone,
                "tessera.epoch": response.epoch,
            }
        )
        return session, accepted

    def _resumed_here(self, grant: Grant) -> Session | None:
        """The live session a resume credential was issued to, if this relay holds
        it: admission just spent the credential (or the one that replaced it in
        this session, :meth:`_rotated_here`), so nothing has moved the player since
        (a rotation racing the resume may have replaced it meanwhile)."""
        if not isinstance(grant, resume.ResumeGrant):
            return None
        session = self.sessions.by_player.get(grant.player_id)
        if session is None or session.closed or not session.accepted:
            return None
        return session if grant.token_id in (session.resume_id, session.resume_previous) else None

    def _rotated_here(self, grant: resume.ResumeGrant) -> bytes | None:
        """The id of the credential that replaced ``grant`` in a session this relay
        holds (the client went silent before the new one reached it), if any."""
        session = self.sessions.by_player.get(grant.player_id)
        if session is None or session.closed or not session.resume_previous:
            return None
        return session.resume_id if session.resume_previous == grant.token_id else None

    def _take_over(
        self,
        old: Session,
        grant: Grant,
        *,
        send: Callable[[bytes], None],
        address: tuple[str, int] | None,
        prepare: Callable[[Session], None] | None,
    ) -> tuple[Session, relay_pb2.Accepted]:
        """A resume that reached the relay still holding the session (the client
        heard nothing for a second from a relay that was starved, not gone, or its
        address changed): the new connection takes the session over where it is
        (zone, entity, epoch, attachment), with no Join, so a slow or stalled
        zone cannot refuse it. The old connection ends (``REPLACED``, no Leave)."""
        now = time.monotonic()
        session = Session(
            player_id=old.player_id,
            transport=old.transport,
            token_id=grant.token_id,
            timeout_s=old.timeout_s,
            created=now,
            last_seen=now,
            send=send,
            post=send,
            address=address,
            entity_id=old.entity_id,
            zone=old.zone,
            epoch=old.epoch,
            interp_delay_ms=old.interp_delay_ms,
            recent_inputs=old.recent_inputs,
            session_id=old.session_id,
            game=old.game,
        )
        if prepare is not None:
            prepare(session)
        self.sessions.add(session)
        self._end(old, "REPLACED", "the session resumed on a new connection", leave=False)
        self.counters.takeovers += 1
        accepted = relay_pb2.ServerMessage.FromString(old.accepted).accepted
        accepted.entity_id = old.entity_id
        accepted.game.ParseFromString(old.game)  # the zone it is in now
        log.info("session taken over", extra={"player": old.player_id, "zone": old.zone})
        return session, accepted

    def _follow_rollback(self, player: str, rollback: Rollback) -> None:
        """Move a live session of ``player`` to where a failed transfer left them:
        attached again in the zone they left, re-routed to the zone that adopted
        them, or, if no zone took them, ended with ``ZONE_UNAVAILABLE`` so the
        client reconnects at once (the checkpoint restores the player)."""
        if isinstance(rollback, Returned):
            # The zone dropped the player's attachment on the leave.
            if player in rollback.link.attached:
                rollback.link.attach(player)
            return
        session = self.sessions.by_player.get(player)
        if session is None:
            return
        if isinstance(rollback, Stranded):
            self._end(
                session,
                "ZONE_UNAVAILABLE",
                f"no zone took the player back: {rollback.why}",
                leave=False,
            )
            return
        link, response = rollback.placed.link, rollback.placed.response
        self.reroute(player, Route(link.zone, response.epoch))
        if session.zone == link.zone:
            # The zone dropped the player's attachment on the leave (attaching
            # twice, if the re-route just did, is harmless).
            link.attach(player)
            session.entity_id = response.entity_id

    # -- resume credentials -------------------------------------------------

    def issue_resume(self, session: Session) -> None:
        """Issue ``session`` a new resume credential in the background: recorded as
        the player's only usable one, then sent (and kept for resending)."""
        if session.rotating or session.closed:
            return
        session.rotating = True
        grant = resume.new_grant(
            player_id=session.player_id,
            session_id=session.session_id,
            world=self.config.world,
            relay_id=self.config.relay_id,
            timeout_s=session.timeout_s,
            now=time.time(),
        )
        self._spawn(self._issue_resume(session, grant))

    async def _issue_resume(self, session: Session, grant: resume.ResumeGrant) -> None:
        """The first credential of a session replaces whatever the player had; a
        rotation replaces only the session's own, so a session whose player has
        resumed elsewhere (or logged in again) finds out here and ends (REPLACED,
        no Leave: the player is live elsewhere)."""
        player, ttl = grant.player_id, resume.LIFETIME_S
        try:
            if session.resume_id:
                held = await self.store.rotate_resume(
                    player, session.resume_id, grant.token_id, ttl
                )
            else:
                await self.store.set_resume(player, grant.token_id, ttl)
                held = True
        except (RedisError, OSError) as err:
            session.resume_failed = time.monotonic()
            log.warning("resume credential not issued", extra={"error": str(err)})
            return
        finally:
            session.rotating = False
        if session.closed:
            return
        if not held:
            self._end(session, "REPLACED", "the session resumed elsewhere", leave=False)
            return
        session.resume_previous, session.resume_id = session.resume_id, grant.token_id
        message = relay_pb2.ServerMessage(
            resume=relay_pb2.ResumeCredential(
                credential=resume.seal(grant, self.config.resume_key),
                client_to_server_key=grant.client_to_server_key,
                server_to_client_key=grant.server_to_client_key,
                expires_in_s=round(resume.LIFETIME_S),
            )
        )
        session.resume = message.SerializeToString()
        session.resume_issued = time.monotonic()
        session.post(session.resume)

    def link(self, zone: str) -> ZoneLink:
        """The link to ``zone``, started on first use (or by :meth:`warm`)."""
        link = self.links.get(zone)
        if link is None:
            link = ZoneLink(
                zone,
                relay_id=self.config.relay_id,
                resolve=self.store.zone_address,
                handler=self,
                batch_s=self.config.batch_s,
                lead=self.config.input_lead,
                rpc_timeout_s=self.config.rpc_timeout_s,
                silence_s=self.config.zone_silence_s,
                channel=self.channel,
                tokens=self.tokens,
            )
            self.links[zone] = link
            link.start()
        return link

    async def warm_links(self, interval_s: float) -> None:
        """Forever, every ``interval_s``: :meth:`warm`."""
        while True:
            try:
                await self.warm()
            except (RedisError, OSError) as err:
                log.warning("zones for warm links not read", extra={"error": str(err)})
            await asyncio.sleep(interval_s)

    async def warm(self) -> list[str]:
        """Start a link to each zone of :func:`warm_zones` this relay has none to,
        before any player is routed there: players handed to a new zone (a
        replacement, a split) then find the stream open and the zone attaches them
        to it on adoption, instead of waiting for a channel, a stream and one Attach
        each. Not while the relay stops. Returns the zones it linked to."""
        if self.draining:
            return []
        zone_map = await self.store.zone_map()
        statuses = await self.store.zone_statuses()
        fresh = [zone for zone in warm_zones(zone_map, statuses) if zone not in self.links]
        for zone in fresh:
            self.link(zone)
            self.counters.warm_links += 1
        return fresh

    # -- client -> zone ---------------------------------------------------

    def handle(self, session: Session, message: relay_pb2.ClientMessage, received: float) -> None:
        """Act on one message of an open session."""
        kind = message.WhichOneof("msg")
        if kind == "inputs":
            self._inputs(session, message.inputs, received)
        elif kind == "ack":
            link = self.links.get(session.zone)
            if link is not None:
                ack = zone_pb2.SnapshotAck(
                    player_id=session.player_id,
                    stream=message.ack.stream,
                    sequence=message.ack.sequence,
                )
                link.send_ack(ack, received)
        elif kind == "ping":
            pong = relay_pb2.ServerMessage(
                pong=relay_pb2.Pong(
                    id=message.ping.id,
                    client_time_ms=message.ping.client_time_ms,
                    server_time_ms=time.time() * 1000.0,
                )
            )
            session.send(pong.SerializeToString())
        elif kind == "action":
            self._action(session, message.action)
        elif kind == "disconnect":
            self._end(session, "CLIENT_DISCONNECT", message.disconnect.reason, notify=False)
        else:
            self.counters.drop("bad_message")

    def _inputs(self, session: Session, inputs: relay_pb2.ClientInputs, received: float) -> None:
        if len(inputs.inputs) > 8:
            self.counters.drop("too_many_inputs")
            return
        link = self.links.get(session.zone)
        if link is None:
            return
        if inputs.interp_delay_ms > 0:
            session.interp_delay_ms = inputs.interp_delay_ms
        player = session.player_id
        rtt = session.stats.rtt_ms
        delay = session.interp_delay_ms
        link.send_inputs(
            [
                zone_pb2.PlayerInput(
                    player_id=player,
                    sequence=i.sequence,
                    move_x=i.move_x,
                    move_z=i.move_z,
                    yaw=i.yaw,
                    pitch=i.pitch,
                    actions=i.actions,
                    client_time_ms=i.client_time_ms,
                    rtt_ms=rtt,
                    interp_delay_ms=delay,
                )
                for i in inputs.inputs
            ],
            received,
        )
        session.recent_inputs = list(inputs.inputs)

    def _action(self, session: Session, action: relay_pb2.GameAction) -> None:
        """Forward a game action to the player's zone, in order with its inputs, as
        the session's player; the zone checks it against the module's declaration."""
        if len(action.args) > MAX_ACTION_ARGS:
            self.counters.drop("action_too_large")
            return
        link = self.links.get(session.zone)
        if link is not None:
            link.send_action(
                zone_pb2.PlayerAction(
                    player_id=session.player_id, action_id=action.id, args=action.args
                )
            )

    def rtt_sample(self, session: Session, rtt_ms: float) -> None:
        session.stats.add_rtt(rtt_ms)
        RTT.observe(rtt_ms / 1000.0)

    # -- zone -> client (LinkHandler) -------------------------------------

    def on_snapshots(self, link: ZoneLink, batch: zone_pb2.SnapshotBatch, received: float) -> None:
        LINK_BATCH.observe(len(batch.snapshots))
        by_player = self.sessions.by_player
        zone = link.zone
        # One message for the batch, its per-snapshot fields set in place: two new
        # messages per snapshot (the payload copied into each) cost 5 µs, this 3.
        message = relay_pb2.ServerMessage()
        out = message.snapshot
        out.tick = batch.tick
        out.server_time_ms = batch.server_time_ms
        for i, snap in enumerate(batch.snapshots):
            session = by_player.get(snap.player_id)
            if session is None or session.zone != zone:
                self.counters.drop("snapshot_unrouted")
                continue
            out.stream = snap.stream
            out.sequence = snap.sequence
            out.baseline = snap.baseline
            out.payload = snap.payload
            session.send(message.SerializeToString())
            if i % SAMPLE_EVERY == 0:
                DOWN_LATENCY.observe(time.perf_counter() - received)

    def on_event(self, link: ZoneLink, event: zone_pb2.PlayerEvent) -> None:
        session = self.sessions.by_player.get(event.player_id)
        if session is not None and session.zone == link.zone:
            session.post(relay_pb2.ServerMessage(event=event).SerializeToString())

    def on_handover(self, link: ZoneLink, handover: zone_pb2.Handover) -> None:
        route = Route(handover.to.zone, handover.epoch)
        self._follow(handover.player_id, route, handover.trace_context, "handover")

    def _follow(
        self, player: str, route: Route, trace_context: Mapping[str, str], via: str
    ) -> None:
        """Re-route after a handoff. A traced one gets a span ``relay.reroute`` in its
        trace for each of its two notices (the Handover on the link and
        ``routes:changed``): ``tessera.moved`` is true on the one that moved the
        session."""
        with tracing.continuing(
            "relay.reroute",
            trace_context,
            {
                "tessera.player_id": player,
                "tessera.zone": route.zone,
                "tessera.epoch": route.epoch,
                "tessera.via": via,
            },
        ) as span:
            span.set_attribute("tessera.moved", self.reroute(player, route))

    async def on_link_up(self, link: ZoneLink, reconnect: bool) -> None:
        """The link's sessions learn its zone's game schema if theirs differs (a
        re-route onto a link not yet welcomed). After a reconnect, placement joins
        the link's players again; one the zone refused leaves the link and follows
        its route."""
        for player in sorted(link.attached):
            session = self.sessions.by_player.get(player)
            if session is not None and session.zone == link.zone:
                self._announce_game(session, link)
        if not reconnect or not link.attached:
            return
        await self._end_resumed_elsewhere(link)
        rejoined = await self.placement.rejoin(link, sorted(link.attached))
        for player, response in rejoined.items():
            if response is None:
                # Probably routed elsewhere now; the route check moves the player.
                link.attached.discard(player)
                self._spawn(self._recheck_route(player))
            else:
                session = self.sessions.by_player.get(player)
                if session is not None:
                    session.entity_id = response.entity_id
        self._notify(link, "ZONE_RESUMED", f"zone {link.zone} answers again")

    async def _end_resumed_elsewhere(self, link: ZoneLink) -> None:
        """End (REPLACED, no Leave) the link's sessions whose player holds a newer
        resume credential than theirs: it resumed on another relay, and joining and
        attaching it here again would take it back from that relay. A link goes
        quiet once all its players have gone, so such stale sessions are what a
        reconnect after a silence finds here (they would otherwise last until their
        next rotation)."""
        sessions = [
            (s, s.resume_id)
            for p in sorted(link.attached)
            if (s := self.sessions.by_player.get(p)) is not None and s.resume_id
        ]
        try:
            held = await self.store.resume_ids([s.player_id for s, _id in sessions])
        except (RedisError, OSError) as err:
            log.warning("resume credentials not checked", extra={"error": str(err)})
            return
        for (session, own), newest in zip(sessions, held, strict=True):
            # A rotation under way (or done meanwhile) put a newer one of its own there.
            rotated = session.rotating or session.resume_id != own
            if newest is not None and newest != own and not rotated:
                self._end(session, "REPLACED", "the session resumed elsewhere", leave=False)

    def on_shed(self, link: ZoneLink, inputs: int) -> None:
        self.counters.drops["upstream_backlog"] += inputs

    def on_link_resumed(self, link: ZoneLink) -> None:
        """A stalled zone spoke again on the same stream: nothing to re-join; the
        link's sessions whose player resumed on another relay meanwhile end, and
        the others are told."""
        self._spawn(self._link_resumed(link))

    async def _link_resumed(self, link: ZoneLink) -> None:
        await self._end_resumed_elsewhere(link)
        self._notify(link, "ZONE_RESUMED", f"zone {link.zone} answers again")

    def on_link_down(self, link: ZoneLink) -> None:
        """The sessions stay open (see :meth:`_stalled_link`); their clients are
        told. A link that fell silent may have lost players that resumed on another
        relay (the zone sends their snapshots there now): those sessions end."""
        why = link.down_reason
        log.warning(
            "zone link down", extra={"zone": link.zone, "players": len(link.attached), "why": why}
        )
        if why == "silent":
            self.counters.zone_silences += 1
            self._spawn(self._end_resumed_elsewhere(link))
        self._notify(link, "ZONE_STALLED", f"zone {link.zone} is not answering ({why})")

    def _notify(self, link: ZoneLink, code: str, message: str) -> None:
        notice = relay_pb2.ServerMessage(
            notice=relay_pb2.Notice(code=code, message=message)
        ).SerializeToString()
        for player in sorted(link.attached):
            session = self.sessions.by_player.get(player)
            if session is not None and session.zone == link.zone:
                session.post(notice)

    # -- following routes ------------------------------------------------

    def on_route_change(self, player: str, route: Route | None, traceparent: str = "") -> None:
        """A routes_changed notification (most players are not ours). A removal that
        this relay did not cause means another connection (e.g. a transfer made by
        another relay) took the player out of its zone: the session here is stale
        and ends with ``REPLACED``. No Leave: the player already left."""
        if route is not None:
            if player in self.sessions.by_player:
                carrier = {"traceparent": traceparent} if traceparent else {}
                self._follow(player, route, carrier, "routes_changed")
            return
        if self.placement.own_removal(player, time.monotonic()):
            return
        session = self.sessions.by_player.get(player)
        if session is not None:
            self._end(session, "REPLACED", "the player moved to another connection", leave=False)

    def reroute(self, player: str, route: Route) -> bool:
        """Move ``player`` to the zone its route names, seamlessly: detach from the
        old link, attach to the new one and replay the last inputs there; False if
        there was nothing to move."""
        session = self.sessions.by_player.get(player)
        if session is None or not self.routes.update(player, route):
            return False
        if route.epoch < session.epoch or route.zone == session.zone:
            session.epoch = max(session.epoch, route.epoch)
            return False
        old = self.links.get(session.zone)
        if old is not None:
            old.detach(player)
        session.zone = route.zone
        session.epoch = route.epoch
        new = self.link(route.zone)
        new.attach(player)
        self._announce_game(session, new)
        if session.recent_inputs:
            self._inputs(
                session,
                relay_pb2.ClientInputs(
                    inputs=session.recent_inputs, interp_delay_ms=session.interp_delay_ms
                ),
                time.perf_counter(),
            )
        self.counters.reroutes += 1
        log.info("rerouted", extra={"player": player, "zone": route.zone, "epoch": route.epoch})
        return True

    def _announce_game(self, session: Session, link: ZoneLink) -> None:
        """Tell the client the game schema of the zone its session is now in, when
        it differs from the one it decodes by (an instance zone's module against
        the open world's); nothing until the link's welcome names it."""
        if link.welcome is None or not link.welcome.HasField("game"):
            return
        game = link.welcome.game.SerializeToString()
        if game != session.game:
            session.game = game
            session.post(relay_pb2.ServerMessage(game=link.welcome.game).SerializeToString())
            self.counters.game_schemas += 1

    async def _recheck_route(self, player: str) -> None:
        route = await self.store.route(player)
        if route is not None:
            self.reroute(player, route)

    # -- ending sessions --------------------------------------------------

    def close(self, session: Session, reason: str, message: str, *, leave: bool = True) -> None:
        """End a session from the relay's side, telling the client why."""
        self._end(session, reason, message, leave=leave)

    def _end(
        self,
        session: Session,
        reason: str,
        message: str,
        *,
        leave: bool = True,
        notify: bool = True,
    ) -> None:
        if session.closed:
            return
        if notify:
            goodbye = relay_pb2.ServerMessage(
                disconnected=relay_pb2.Disconnected(reason=reason, message=message)
            ).SerializeToString()
            session.post(goodbye)
        session.closed = True
        session.on_close(reason)
        self.counters.session_ends[reason] += 1
        session.release()
        current = self.sessions.remove(session)
        if current:
            self.presence.changes[session.player_id] = ""
            self.routes.forget(session.player_id)
            link = self.links.get(session.zone)
            if link is not None:
                link.detach(session.player_id)
                if leave:
                    self.placement.start_leave(link, session.player_id)
        log.info("session closed", extra={"player": session.player_id, "reason": reason})

    def kick(self, player: str, reason: str) -> bool:
        session = self.sessions.by_player.get(player)
        if session is None:
            return False
        self._end(session, "KICKED", reason or "kicked by an operator")
        return True

    # -- housekeeping -----------------------------------------------------

    async def maintain(self, interval_s: float = 0.25) -> None:
        """Forever: keep-alives, idle timeouts, upstream stall handling."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sweep(time.monotonic())
            except Exception:
                log.exception("housekeeping failed")

    async def sweep(self, now: float) -> None:
        """One housekeeping pass at ``now`` (monotonic time)."""
        if now - self._swept > SWEEP_LATE_S:
            self._awake_since = now
        self._swept = now
        hearing = now - self._awake_since > UNHEARD_S
        for session in self.sessions.idle(now):
            self._end(session, "IDLE_TIMEOUT", f"no packet for {session.timeout_s:.0f} s")
        for session in self.sessions:
            if session.transport != "udp":
                continue
            # A credential to rotate, or a first one whose issue failed (e.g. Redis
            # refused a connection while a crowd resumed here at once).
            due = not session.resume or now - session.resume_issued > resume.ROTATE_S
            if session.accepted and due and now - session.resume_failed > RESUME_RETRY_S:
                self.issue_resume(session)
            if now - session.last_sent > KEEPALIVE_S:
                session.send(b"")
            unheard = hearing and now - session.last_seen > UNHEARD_S
            if unheard and session.resume and not session.told_unheard:
                session.told_unheard = True
                self.counters.unheard_moves += 1
                session.post(UNHEARD_MOVE)
        self.placement.prune(now)
        for link in list(self.links.values()):
            if not link.connected and link.down_since is not None:
                await self._stalled_link(link, now - link.down_since)

    async def _stalled_link(self, link: ZoneLink, stalled: float) -> None:
        """A link down for ``stalled`` seconds: after 0.5 s its players follow the
        routing table (their zone may have handed them on); after the upstream
        timeout those left end with ``ZONE_UNAVAILABLE`` and the link closes."""
        players = sorted(link.attached)
        if players and stalled > 0.5:
            for player, route in (await self.store.routes(players)).items():
                self.reroute(player, route)
        if stalled > self.config.upstream_timeout_s:
            for player in sorted(link.attached):
                stalled_session = self.sessions.by_player.get(player)
                if stalled_session is not None:
                    self._end(
                        stalled_session,
                        "ZONE_UNAVAILABLE",
                        f"zone {link.zone} unreachable for {stalled:.0f} s",
                        leave=False,
                    )
            link.attached.clear()
        if not link.attached and stalled > self.config.upstream_timeout_s:
            del self.links[link.zone]
            await link.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def end_play_sessions(self) -> None:
        """At the start of a stop: end the gRPC Play sessions (they cannot resume),
        so the server's grace is not spent waiting for their streams."""
        for session in self.sessions:
            if session.transport == "grpc":
                self._end(session, "RELAY_SHUTDOWN", "the relay is stopping", leave=False)

    async def drain(self, timeout_s: float) -> None:
        """Before stopping: tell every UDP client holding a resume credential to
        move (``Notice(MOVE)`` on the reliable channel, with a live other relay's
        address if one is known), and wait until each has gone quiet here (resumed
        elsewhere) or ``timeout_s`` has passed. From now on no handshake or resume
        opens a session here: a client that tried this relay would be told to
        move again, or cut off, when it exits. The movers are released from their
        zone links (:meth:`ZoneLink.release`): a link that reconnects during the
        drain must not join and attach them here again, taking them back from the
        relay they resumed on."""
        self.draining = True
        movers = [s for s in self.sessions if s.transport == "udp" and s.resume]
        if not movers:
            return
        address = ""
        with contextlib.suppress(RedisError, OSError):
            address = await self._other_relay(time.time())
        notice = relay_pb2.ServerMessage(
            notice=relay_pb2.Notice(code="MOVE", message="this relay is stopping", address=address)
        ).SerializeToString()
        started = time.monotonic()
        log.info("draining", extra={"sessions": len(movers), "move_to": address})
        for session in movers:
            session.post(notice)
            link = self.links.get(session.zone)
            if link is not None:
                link.release(session.player_id)
        while True:
            now = time.monotonic()
            talking = [s for s in movers if not s.closed and now - s.last_seen < DRAIN_QUIET_S]
            if not talking or now - started > timeout_s:
                break
            await asyncio.sleep(0.05)
        log.info("drained", extra={"still_talking": len(talking)})

    async def _other_relay(self, now: float) -> str:
        """The public address of another live relay of the world ("" if none). A relay
        at this relay's own address is not one: its worker processes stop with it,
        and behind one load-balanced address the client comes back there anyway."""
        seen = await self.store.relays_seen()
        own = self.config.relay_id
        for relay_id, address in sorted((await self.store.relay_addresses()).items()):
            fresh = now - seen.get(relay_id, 0.0) < 3.0
            if relay_id != own and address != self.config.public_address and fresh:
                return address
        return ""

    async def close_all(self) -> None:
        stopped = [session.player_id for session in self.sessions]
        for session in self.sessions:
            self._end(session, "RELAY_SHUTDOWN", "the relay is stopping", leave=False)
        await self.presence.keep_for_others(stopped, time.time())
        for link in list(self.links.values()):
            await link.close()
        self.links.clear()
        for task in list(self._tasks):
            task.cancel()
        self.placement.cancel()
