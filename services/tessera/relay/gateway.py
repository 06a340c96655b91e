"""The relay's core: admits connect tokens, opens sessions by joining the player's
zone (or the zone the token names, moving the player into an instance zone),
forwards client messages upstream, fans snapshots out, re-routes players whose
route changed, and closes sessions (goodbye, idle, kick, zone gone, the player
taken over by another connection).

Transports (UDP, gRPC Play) only frame bytes; everything a session means lives
here, so both behave the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from tessera.common.errors import detail_of
from tessera.relay.errors import Rejected
from tessera.relay.metrics import DOWN_LATENCY, RTT, SAMPLE_EVERY, Counters
from tessera.relay.routing import OwnLeaves, Route, RouteCache, pick_zone
from tessera.relay.session import Session, SessionTable
from tessera.relay.store import RelayStore
from tessera.relay.upstream import UpstreamUnavailable, ZoneLink, call_bound_s
from tessera.v1 import relay_pb2, zone_pb2

log = logging.getLogger(__name__)

KEEPALIVE_S = 1.0
# How long after its Leave returns a route removal may take to arrive (pub/sub).
REMOVAL_MARGIN_S = 2.0


class Grant(Protocol):
    """What the relay uses from an opened connect token (auth's ConnectGrant)."""

    @property
    def token_id(self) -> bytes: ...
    @property
    def player_id(self) -> str: ...
    @property
    def client_to_server_key(self) -> bytes: ...
    @property
    def server_to_client_key(self) -> bytes: ...
    @property
    def expires_at(self) -> float: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def world(self) -> str: ...
    @property
    def zone(self) -> str: ...


# Opens a connect token at time ``now``; raises Rejected with the reason.
TokenOpener = Callable[[bytes, float], Grant]


@dataclass(frozen=True)
class GatewayConfig:
    relay_id: str
    world: str
    batch_s: float = 0.0005
    upstream_timeout_s: float = 10.0
    default_timeout_s: float = 10.0
    # Each zone call's bound: the wait for its link, then the RPC.
    rpc_timeout_s: float = 3.0


class Gateway:
    """See the module docstring. One per relay process."""

    def __init__(
        self, config: GatewayConfig, *, store: RelayStore, opener: TokenOpener, counters: Counters
    ) -> None:
        self.config = config
        self.store = store
        self.opener = opener
        self.counters = counters
        self.sessions = SessionTable()
        self.links: dict[str, ZoneLink] = {}
        self.routes = RouteCache()
        # An expected removal lives as long as its Leave can take, plus delivery.
        self.own_leaves = OwnLeaves(call_bound_s(config.rpc_timeout_s) + REMOVAL_MARGIN_S)
        # Leaves of sessions this relay ended, still running, by player.
        self.leaving: dict[str, asyncio.Task[None]] = {}
        self.used_tokens: dict[bytes, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- admission --------------------------------------------------------

    def admit(self, token: bytes, now: float) -> Grant:
        """Open and verify a connect token and spend it; Rejected if it is bad, names
        another world, or was used."""
        grant = self.opener(token, now)
        if grant.world and grant.world != self.config.world:
            raise Rejected(
                "wrong_world",
                f"connect token is for world {grant.world}, this relay serves {self.config.world}",
            )
        if grant.token_id in self.used_tokens:
            raise Rejected("replayed", "connect token already used")
        self.used_tokens[grant.token_id] = grant.expires_at
        return grant

    def release(self, grant: Grant) -> None:
        """Make a token usable again after its session could not be opened."""
        self.used_tokens.pop(grant.token_id, None)

    async def open_session(
        self,
        grant: Grant,
        *,
        transport: str,
        send: Callable[[bytes], None],
        address: tuple[str, int] | None = None,
        prepare: Callable[[Session], None] | None = None,
    ) -> tuple[Session, relay_pb2.Accepted]:
        """Join the player into its zone (the token's zone, if it names one) and
        register the session; Rejected on failure."""
        player = grant.player_id
        await self._await_leave(player)
        if grant.zone:
            response, link = await self._join_destination(player, grant.zone)
        else:
            response, link = await self._join(player)
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
            address=address,
            entity_id=response.entity_id,
            zone=link.zone,
            epoch=response.epoch,
        )
        if prepare is not None:
            prepare(session)
        old = self.sessions.add(session)
        if old is not None:
            self._end(old, "REPLACED", "a newer session of this player connected", leave=False)
            if old.zone != link.zone and old.zone in self.links:
                self.links[old.zone].detach(player)
        self.routes.update(player, Route(link.zone, response.epoch))
        link.attach(player)
        accepted = relay_pb2.Accepted(
            player_id=player,
            entity_id=response.entity_id,
            world=self.config.world,
            quantization=response.quantization,
            tick_hz=response.tick_hz,
            timeout_s=round(timeout),
        )
        log.info(
            "session opened", extra={"player": player, "transport": transport, "zone": link.zone}
        )
        return session, accepted

    async def _await_leave(self, player: str) -> None:
        """Let this relay's own Leave of ``player`` (a session it just ended) finish
        before joining them again: a Join first would find the player still in the
        zone (a no-op) and the Leave would then take them from the new session."""
        pending = self.leaving.get(player)
        if pending is not None:
            await asyncio.wait({pending}, timeout=call_bound_s(self.config.rpc_timeout_s))

    async def _join(self, player: str) -> tuple[zone_pb2.JoinResponse, ZoneLink]:
        """Join the zone the route names or, without a route, the least-loaded
        active zone; a chosen zone that turns out unreachable (its heartbeat not yet
        expired) is skipped for the next choice."""
        request = zone_pb2.JoinRequest(player_id=player, relay_id=self.config.relay_id)
        unreachable: set[str] = set()
        for _attempt in range(3):
            route = await self.store.route(player)
            zone = route.zone if route is not None else await self._pick_zone(unreachable)
            if zone is None:
                raise Rejected("no_zone", "no active zone in this world")
            link = self.link(zone)
            try:
                return await link.join(request), link
            except UpstreamUnavailable as err:
                if route is not None:
                    raise Rejected("zone_unavailable", str(err)) from None
                unreachable.add(zone)
            except grpc.aio.AioRpcError as err:
                code = err.code()
                if code == grpc.StatusCode.UNAVAILABLE and route is None:
                    unreachable.add(zone)
                elif code != grpc.StatusCode.FAILED_PRECONDITION:
                    raise Rejected("join_failed", err.details() or code.name) from None
                else:
                    # Routed elsewhere meanwhile, or draining: look the route up again.
                    await asyncio.sleep(0.05)
        raise Rejected("join_failed", "no zone accepted the player")

    async def _join_destination(
        self, player: str, zone: str
    ) -> tuple[zone_pb2.JoinResponse, ZoneLink]:
        """Join the zone a connect token names. Into an instance zone, a player owned
        by another live zone leaves it first (its checkpoint saved, its route
        released) and ``zone`` adopts the checkpoint: the player keeps their state
        and is never in two zones. An open-world zone is only where a player with
        no live zone starts; one live elsewhere joins where their route says.
        Nothing is left before ``zone`` is known to be up; a join that fails after
        the leave puts the player back (see ``_roll_back``)."""
        status = await self.store.zone_status(zone)
        if status is None or status.state != zone_pb2.ZONE_STATE_ACTIVE:
            raise Rejected("zone_unavailable", f"zone {zone} is not up")
        instance = bool(status.instance)
        if not instance and await self._live_elsewhere(player, zone) is not None:
            return await self._join(player)
        link = self.link(zone)
        try:
            await link.ready()
        except UpstreamUnavailable as err:
            raise Rejected("zone_unavailable", str(err)) from None
        request = zone_pb2.JoinRequest(player_id=player, relay_id=self.config.relay_id)
        for _attempt in range(3):
            source = None
            elsewhere = await self._live_elsewhere(player, zone)
            if elsewhere is not None:
                if not instance:
                    return await self._join(player)
                source = self.link(elsewhere)
                await self._leave_for_transfer(source, player)
            try:
                response = await link.join(request)
            except (UpstreamUnavailable, grpc.aio.AioRpcError) as err:
                reason = _join_failure(err)
                if source is not None:
                    await self._roll_back(source, request)
                elif reason == "retry":
                    # Routed elsewhere meanwhile (a handoff): look the route up again.
                    await asyncio.sleep(0.05)
                    continue
                raise Rejected(
                    "join_failed" if reason == "join_failed" else "zone_unavailable", _why(err)
                ) from None
            if source is not None:
                self.counters.transfers += 1
                log.info("transferred", extra={"player": player, "from": source.zone, "zone": zone})
            return response, link
        raise Rejected("zone_unavailable", f"zone {zone} did not accept the player")

    async def _live_elsewhere(self, player: str, zone: str) -> str | None:
        """The other zone the player's route names, if that zone is alive."""
        route = await self.store.route(player)
        if route is None or route.zone == zone:
            return None
        return route.zone if await self.store.zone_status(route.zone) is not None else None

    async def _leave_for_transfer(self, source: ZoneLink, player: str) -> None:
        """Leave ``source`` before joining another zone; Rejected if it fails (the
        player then stays in ``source``). The route removal it publishes is this
        relay's own: it does not end the player's live session here. If the player's
        last Join came through another relay (their old connection), the newest
        connection is this one: it claims the player with a Join, then leaves."""
        self.own_leaves.expect(player, time.monotonic())
        try:
            try:
                await source.leave(player)
            except grpc.aio.AioRpcError as err:
                if not served_by_other_relay(err):
                    raise
                claim = zone_pb2.JoinRequest(player_id=player, relay_id=self.config.relay_id)
                await source.join(claim)
                await source.leave(player)
        except (UpstreamUnavailable, grpc.aio.AioRpcError) as err:
            if leave_removed_nothing(err):
                self.own_leaves.cancel(player)
            raise Rejected(
                "zone_unavailable", f"cannot leave zone {source.zone}: {_why(err)}"
            ) from None

    async def _roll_back(self, source: ZoneLink, request: zone_pb2.JoinRequest) -> None:
        """Undo a transfer's leave after the destination refused the player:
        ``source`` adopts the checkpoint it just saved; if it refuses too (e.g. it
        is draining), the ordinary join path (the player's route, else the
        least-loaded active zone) adopts it. A live session of the player here
        follows; if no zone takes the player, it ends with ``ZONE_UNAVAILABLE`` so
        the client reconnects at once (the checkpoint stays for that)."""
        player = request.player_id
        try:
            await source.join(request)
        except (UpstreamUnavailable, grpc.aio.AioRpcError) as err:
            log.warning(
                "transfer rollback refused",
                extra={"player": player, "zone": source.zone, "error": _why(err)},
            )
        else:
            if player in source.attached:
                source.attach(player)
            return
        try:
            response, link = await self._join(player)
        except Rejected as err:
            log.error("transfer rollback failed", extra={"player": player, "error": str(err)})
            session = self.sessions.by_player.get(player)
            if session is not None:
                self._end(
                    session,
                    "ZONE_UNAVAILABLE",
                    f"no zone took the player back: {err}",
                    leave=False,
                )
            return
        log.info("transfer rolled back elsewhere", extra={"player": player, "zone": link.zone})
        session = self.sessions.by_player.get(player)
        if session is None:
            return
        self.reroute(player, Route(link.zone, response.epoch))
        if session.zone == link.zone:
            # The zone dropped the player's attachment on the leave (attaching
            # twice, if the re-route just did, is harmless).
            link.attach(player)
            session.entity_id = response.entity_id

    async def _pick_zone(self, skip: set[str]) -> str | None:
        statuses = await self.store.zone_statuses()
        return pick_zone(await self.store.zone_map(), statuses, skip=skip)

    def link(self, zone: str) -> ZoneLink:
        link = self.links.get(zone)
        if link is None:
            link = ZoneLink(
                zone,
                relay_id=self.config.relay_id,
                resolve=self.store.zone_address,
                handler=self,
                batch_s=self.config.batch_s,
                rpc_timeout_s=self.config.rpc_timeout_s,
            )
            self.links[zone] = link
            link.start()
        return link

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

    def rtt_sample(self, session: Session, rtt_ms: float) -> None:
        session.stats.add_rtt(rtt_ms)
        RTT.observe(rtt_ms / 1000.0)

    # -- zone -> client (LinkHandler) -------------------------------------

    def on_snapshots(self, link: ZoneLink, batch: zone_pb2.SnapshotBatch, received: float) -> None:
        by_player = self.sessions.by_player
        zone = link.zone
        tick = batch.tick
        server_time = batch.server_time_ms
        for i, snap in enumerate(batch.snapshots):
            session = by_player.get(snap.player_id)
            if session is None or session.zone != zone:
                self.counters.drop("snapshot_unrouted")
                continue
            message = relay_pb2.ServerMessage(
                snapshot=relay_pb2.Snapshot(
                    stream=snap.stream,
                    sequence=snap.sequence,
                    baseline=snap.baseline,
                    tick=tick,
                    server_time_ms=server_time,
                    payload=snap.payload,
                )
            )
            session.send(message.SerializeToString())
            if i % SAMPLE_EVERY == 0:
                DOWN_LATENCY.observe(time.perf_counter() - received)

    def on_event(self, link: ZoneLink, event: zone_pb2.PlayerEvent) -> None:
        session = self.sessions.by_player.get(event.player_id)
        if session is not None and session.zone == link.zone:
            session.send(relay_pb2.ServerMessage(event=event).SerializeToString())

    def on_handover(self, link: ZoneLink, handover: zone_pb2.Handover) -> None:
        self.reroute(handover.player_id, Route(handover.to.zone, handover.epoch))

    async def on_link_up(self, link: ZoneLink, reconnect: bool) -> None:
        """After a reconnect, join the link's players again: a restarted zone
        restores them from their checkpoints; one that never went away keeps them."""
        if not reconnect or not link.attached:
            return
        players = sorted(link.attached)
        results = await asyncio.gather(
            *(
                link.join(zone_pb2.JoinRequest(player_id=p, relay_id=self.config.relay_id))
                for p in players
            ),
            return_exceptions=True,
        )
        for player, result in zip(players, results, strict=True):
            if isinstance(result, BaseException):
                # Probably routed elsewhere now; the route check moves the player.
                link.attached.discard(player)
                self._spawn(self._recheck_route(player))
            else:
                session = self.sessions.by_player.get(player)
                if session is not None:
                    session.entity_id = result.entity_id

    def on_shed(self, link: ZoneLink, inputs: int) -> None:
        self.counters.drops["upstream_backlog"] += inputs

    def on_link_down(self, link: ZoneLink) -> None:
        log.warning("zone link down", extra={"zone": link.zone, "players": len(link.attached)})

    # -- routing ----------------------------------------------------------

    def on_route_change(self, player: str, route: Route | None) -> None:
        """A routes_changed notification (most players are not ours). A removal that
        this relay did not cause means another connection (e.g. a transfer made by
        another relay) took the player out of its zone: the session here is stale
        and ends with ``REPLACED``. No Leave: the player already left."""
        if route is not None:
            if player in self.sessions.by_player:
                self.reroute(player, route)
            return
        if self.own_leaves.claim(player, time.monotonic()):
            return
        session = self.sessions.by_player.get(player)
        if session is not None:
            self._end(session, "REPLACED", "the player moved to another connection", leave=False)

    def reroute(self, player: str, route: Route) -> None:
        """Move ``player`` to the zone its route names, seamlessly: detach from the
        old link, attach to the new one and replay the last inputs there."""
        session = self.sessions.by_player.get(player)
        if session is None or not self.routes.update(player, route):
            return
        if route.epoch < session.epoch or route.zone == session.zone:
            session.epoch = max(session.epoch, route.epoch)
            return
        old = self.links.get(session.zone)
        if old is not None:
            old.detach(player)
        session.zone = route.zone
        session.epoch = route.epoch
        new = self.link(route.zone)
        new.attach(player)
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
            session.send(goodbye)
        session.closed = True
        session.on_close(reason)
        current = self.sessions.remove(session)
        if current:
            self.routes.forget(session.player_id)
            link = self.links.get(session.zone)
            if link is not None:
                link.detach(session.player_id)
                if leave:
                    self._start_leave(link, session.player_id)
        log.info("session closed", extra={"player": session.player_id, "reason": reason})

    def _start_leave(self, link: ZoneLink, player: str) -> None:
        """Leave the zone of a session that ended, in the background; a new session
        of the player waits for it (see ``_await_leave``)."""
        self.own_leaves.expect(player, time.monotonic())
        task = self._spawn(self._leave(link, player))
        self.leaving[player] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self.leaving.get(player) is finished:
                del self.leaving[player]

        task.add_done_callback(done)

    async def _leave(self, link: ZoneLink, player: str) -> None:
        try:
            await link.leave(player)
        except (grpc.aio.AioRpcError, UpstreamUnavailable) as err:
            # Forget the expected removal only if surely none comes; else it lapses.
            if leave_removed_nothing(err):
                self.own_leaves.cancel(player)
            if served_by_other_relay(err):
                log.info(
                    "nothing to leave: another relay serves the player",
                    extra={"player": player, "zone": link.zone},
                )
            else:
                log.warning("leave failed", extra={"player": player, "error": _why(err)})

    def kick(self, player: str, reason: str) -> bool:
        session = self.sessions.by_player.get(player)
        if session is None:
            return False
        self._end(session, "KICKED", reason or "kicked by an operator")
        return True

    # -- housekeeping -----------------------------------------------------

    async def maintain(self, interval_s: float = 0.25) -> None:
        """Forever: keep-alives, idle timeouts, upstream stall handling, token expiry."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sweep(time.monotonic(), time.time())
            except Exception:
                log.exception("housekeeping failed")

    async def sweep(self, now: float, wall: float) -> None:
        for session in self.sessions.idle(now):
            self._end(session, "IDLE_TIMEOUT", f"no packet for {session.timeout_s:.0f} s")
        for session in self.sessions:
            if session.transport == "udp" and now - session.last_sent > KEEPALIVE_S:
                session.send(b"")
        for token_id, expires_at in list(self.used_tokens.items()):
            if expires_at < wall:
                del self.used_tokens[token_id]
        self.own_leaves.prune(now)
        for link in list(self.links.values()):
            if link.connected or link.down_since is None:
                continue
            stalled = now - link.down_since
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

    async def close_all(self) -> None:
        for session in self.sessions:
            self._end(session, "RELAY_SHUTDOWN", "the relay is stopping", leave=False)
        for link in list(self.links.values()):
            await link.close()
        self.links.clear()
        for task in list(self._tasks):
            task.cancel()


def _join_failure(err: Exception) -> str:
    """What a failed Join means: "retry" (the route moved, or the zone is between
    states), "zone_unavailable" (unreachable), or "join_failed" (refused)."""
    if not isinstance(err, grpc.aio.AioRpcError):
        return "zone_unavailable"
    code = err.code()
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED):
        return "retry"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return "zone_unavailable"
    return "join_failed"


def leave_removed_nothing(err: Exception) -> bool:
    """Whether a failed Leave surely removed nothing: never sent (the link was
    down), or answered NOT_FOUND / FAILED_PRECONDITION (e.g. SERVED_BY_OTHER_RELAY).
    A timeout or a lost connection may come after the zone released the route."""
    if not isinstance(err, grpc.aio.AioRpcError):
        return True
    return err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


def served_by_other_relay(err: Exception) -> bool:
    """Whether a Leave was refused because another relay serves the player."""
    return (
        isinstance(err, grpc.aio.AioRpcError)
        and err.code() == grpc.StatusCode.FAILED_PRECONDITION
        and detail_of(err).reason == "SERVED_BY_OTHER_RELAY"
    )


def _why(err: Exception) -> str:
    """A short reason for a failed zone call."""
    if isinstance(err, grpc.aio.AioRpcError):
        return err.details() or err.code().name
    return str(err)
