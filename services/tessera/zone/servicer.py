"""The zone's gRPC adapter (tessera.v1.Zone) and its background loops.

Owns the glue between the simulation, relays (ZoneLink streams), Redis (via
:class:`~tessera.zone.store.ZoneStore`) and metrics: the tick loop runs the
simulation and fans the frame out to links, a heartbeat loop registers the
zone, a checkpoint loop saves every player's durable state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np
from redis.exceptions import RedisError

from tessera.common.errors import abort
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc
from tessera.wire.geometry import from_bounds, to_bounds
from tessera.zone import messages, metrics
from tessera.zone.border import Border
from tessera.zone.config import ZoneConfig
from tessera.zone.entities import Record
from tessera.zone.links import Links
from tessera.zone.simulation import Simulation
from tessera.zone.store import ZoneStore
from tessera.zone.tick import Ticker

log = logging.getLogger(__name__)

State = zone_pb2.ZoneState
Context = grpc.aio.ServicerContext[Any, Any]
MAX_PLAYER_ID = 128


class ZoneServicer(zone_pb2_grpc.ZoneServicer):
    """tessera.v1.Zone over one Simulation."""

    def __init__(self, cfg: ZoneConfig, store: ZoneStore) -> None:
        self.cfg = cfg
        self.store = store
        self.bounds = cfg.bounds
        self.sim = Simulation(cfg, area=cfg.bounds or cfg.world_bounds, seed=cfg.seed)
        self.state = State.ZONE_STATE_STARTING
        self.map_version = 0
        self.address = cfg.advertise_address
        self.links = Links(sim=self.sim, world=cfg.world, queue_size=cfg.link_queue)
        self.ticker = Ticker(cfg.tick_hz, self.tick)
        self.ticker.on_skip = metrics.TICKS_SKIPPED.inc
        self.ticker.on_error = metrics.TICK_ERRORS.inc
        self._tasks: list[asyncio.Task[None]] = []
        self._npcs_spawned = False
        self.border = Border(self)

    @property
    def zone_ref(self) -> common_pb2.ZoneRef:
        return common_pb2.ZoneRef(world=self.cfg.world, zone=self.cfg.zone)

    @property
    def quantization(self) -> common_pb2.Quantization:
        q = self.sim.quant
        return common_pb2.Quantization(
            position_step_m=q.position_step_m,
            yaw_bits=q.yaw_bits,
            velocity_step_mps=q.velocity_step_mps,
            origin=common_pb2.Vec3(x=q.origin[0], y=q.origin[1], z=q.origin[2]),
        )

    # --- lifecycle --------------------------------------------------------

    async def start(self, port: Callable[[], int]) -> None:
        """Restore routed players, then run the tick, heartbeat and checkpoint loops."""
        if self.bounds is not None:
            began = time.perf_counter()
            await self._activate()
            await self.restore()
            metrics.RECOVERY.observe(time.perf_counter() - began)
        else:
            self.state = State.ZONE_STATE_STANDBY
        await self.border.refresh_map()
        self._tasks = [
            asyncio.create_task(self.ticker.run()),
            asyncio.create_task(self._heartbeats(port)),
            asyncio.create_task(self._checkpoints()),
            asyncio.create_task(self.border.run_scan()),
            asyncio.create_task(self.border.run_inbox()),
            asyncio.create_task(self.border.run_ghosts_out()),
            asyncio.create_task(self.border.run_ghosts_in()),
        ]

    async def stop(self) -> None:
        """Stop the loops, write a final checkpoint, end every link."""
        self.ticker.stop()
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.checkpoint()
        self.links.close()

    async def _activate(self) -> None:
        self.state = State.ZONE_STATE_ACTIVE
        if not self._npcs_spawned and self.cfg.npcs:
            self.sim.spawn_npcs(await self.store.next_ids(self.cfg.npcs))
            self._npcs_spawned = True

    async def restore(self) -> int:
        """Re-create every player whose route names this zone from its checkpoint."""
        routed = await self.store.routes_here()
        states = await self.store.load_checkpoints(sorted(routed))
        for player, state in states.items():
            if player in self.sim.ents.players or state.entity_id in self.sim.ents.index:
                continue
            self.sim.adopt(messages.record(state), epoch=routed[player], now=time.monotonic())
        if states:
            log.info("restored players", extra={"players": len(states)})
        return len(states)

    # --- loops -------------------------------------------------------------

    def tick(self) -> None:
        """One simulation step, fanned out to the links."""
        frame = self.sim.step()
        counts, self.sim.counts = self.sim.counts, type(self.sim.counts)()
        metrics.observe(frame, counts, players=len(self.sim.ents.players), entities=self.sim.ents.n)
        metrics.TICK.observe(frame.step_s)
        metrics.OVERLOADED.set(1 if self.ticker.stats.overloaded else 0)
        self.links.publish(frame)
        if self.state == State.ZONE_STATE_DRAINING:
            metrics.DRAIN_REMAINING.set(len(self.sim.ents.players))
            self._maybe_drained()

    def _maybe_drained(self) -> None:
        """DRAINED once no entity is left to hand away (NPCs stay only if no zone can
        take them, or if this is an instance zone: its NPCs end with it)."""
        e, border = self.sim.ents, self.border
        topo = border.topo
        neighbours = topo is not None and any(a.zone != self.cfg.zone for a in topo.zones)
        owned = int(border.owned().sum())
        npcs_leave = bool(neighbours or border.drain_target) and not self.cfg.instance
        left = owned if npcs_leave else len(e.players)
        if not left and not border.flight.outgoing:
            self.state = State.ZONE_STATE_DRAINED
            log.info(
                "drained",
                extra={"seconds": round(time.monotonic() - border.drain_started, 3)},
            )

    def release(self, entity_id: int, target: str, epoch: int) -> None:
        """A committed handoff: the entity now belongs to ``target``; tell the relay."""
        extra = self.sim.ents.extra.get(entity_id)
        player = extra.player_id if extra else ""
        if not player:
            self.sim.remove_entity(entity_id)
            return
        self.links.handover(player, target, epoch)
        self.sim.remove_player(player)

    def receive(self, state: Record, epoch: int) -> None:
        """A committed handoff to this zone: the entity becomes authoritative here."""
        self.sim.adopt(state, epoch=epoch, now=time.monotonic())
        metrics.HANDOFFS_RECEIVED.inc()
        if state.player_id:
            self.links.arrived(state.player_id)

    def status(self, *, entities: bool = False) -> zone_pb2.ZoneStatus:
        """The zone's current ZoneStatus (also its heartbeat); ``entities`` lists
        every owned entity too."""
        e = self.sim.ents
        stats = self.ticker.stats
        players = [e.index[eid] for eid in e.players.values()]
        if len(players) > 512:
            players = self.sim.rng.choice(players, 512, replace=False).tolist()
        status = zone_pb2.ZoneStatus(
            zone=self.zone_ref,
            address=self.address,
            state=self.state,
            players=len(e.players),
            npcs=e.n - len(e.players) - len(self.border.ghost_src),
            ghosts=len(self.border.ghost_src),
            tick_hz=self.cfg.tick_hz,
            tick_p50_ms=stats.percentile(50) * 1000,
            tick_p99_ms=stats.percentile(99) * 1000,
            overloaded=stats.overloaded,
            drain_remaining=len(e.players) if self.state == State.ZONE_STATE_DRAINING else 0,
            map_version=self.map_version,
            updated_at_ms=time.time() * 1000,
            sample_x=e.pos[players, 0].tolist(),
            sample_z=e.pos[players, 2].tolist(),
            handoffs_pending=len(self.border.flight.outgoing),
            instance=self.cfg.instance,
        )
        if entities:
            ids = e.id[: e.n][self.border.owned()].tolist()
            status.entity_ids.extend(ids)
            status.entity_players.extend(e.extra[i].player_id if i in e.extra else "" for i in ids)
        if self.bounds is not None:
            status.bounds.CopyFrom(to_bounds(self.bounds))
        return status

    async def _heartbeats(self, port: Callable[[], int]) -> None:
        while not self.address:
            if port():
                self.address = f"127.0.0.1:{port()}"
                break
            await asyncio.sleep(0.02)
        while True:
            try:
                await self.store.heartbeat(self.status(), ttl_s=3 * self.cfg.heartbeat_s)
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(self.cfg.heartbeat_s)

    async def checkpoint(self) -> int:
        """Save every player's durable state in one Redis command."""
        states = [self._checkpoint_of(p) for p in list(self.sim.ents.players)]
        began = time.perf_counter()
        await self.store.save_checkpoints(states)
        metrics.CHECKPOINT.observe(time.perf_counter() - began)
        return len(states)

    def _checkpoint_of(self, player: str) -> zone_pb2.EntityState:
        return messages.entity_state(self.sim.export_player(player, self.cfg.zone))

    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.checkpoint_s)
            try:
                await self.checkpoint()
            except Exception:
                metrics.CHECKPOINT_ERRORS.inc()
                log.exception("checkpoint failed")

    # --- ZoneLink ------------------------------------------------------------

    async def ZoneLink(
        self, request_iterator: AsyncIterator[zone_pb2.ZoneLinkUp], context: Context
    ) -> AsyncIterator[zone_pb2.ZoneLinkDown]:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("msg") != "hello":
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first ZoneLink message must be hello",
                reason="LINK_HELLO_REQUIRED",
                field="hello",
            )
        link = self.links.open(first.hello.relay_id, request_iterator)
        try:
            yield zone_pb2.ZoneLinkDown(
                welcome=zone_pb2.LinkWelcome(
                    zone=self.zone_ref,
                    tick_hz=self.cfg.tick_hz,
                    quantization=self.quantization,
                    bounds=to_bounds(self.bounds or self.cfg.world_bounds),
                )
            )
            while (msg := await link.queue.get()) is not None:
                yield msg
        finally:
            self.links.end(link)

    # --- unary RPCs ----------------------------------------------------------------

    async def Join(self, request: zone_pb2.JoinRequest, context: Context) -> zone_pb2.JoinResponse:
        player = request.player_id
        if not 0 < len(player) <= MAX_PLAYER_ID or "|" in player or not player.isprintable():
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"player_id must be 1-{MAX_PLAYER_ID} printable characters without '|'",
                reason="BAD_PLAYER_ID",
                field="player_id",
            )
        if self.state != State.ZONE_STATE_ACTIVE:
            name = State.Name(self.state)
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"zone {self.cfg.zone} does not accept joins while {name}",
                reason="ZONE_NOT_ACTIVE",
            )
        if request.HasField("spawn") and not all(
            np.isfinite((request.spawn.x, request.spawn.y, request.spawn.z))
        ):
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "spawn must be finite",
                reason="BAD_SPAWN",
                field="spawn",
            )
        if player not in self.sim.ents.players:
            try:
                await self._join_new(request, context)
            except RedisError as err:
                await _unavailable(context, err)
        eid = self.sim.ents.players[player]
        extra = self.sim.ents.extra[eid]
        extra.relay_id = request.relay_id or extra.relay_id
        x, y, z = (float(v) for v in self.sim.ents.pos[self.sim.ents.index[eid]])
        return zone_pb2.JoinResponse(
            entity_id=eid,
            position=common_pb2.Vec3(x=x, y=y, z=z),
            restored=extra.restored,
            zone=self.zone_ref,
            epoch=extra.epoch,
            quantization=self.quantization,
            tick_hz=self.cfg.tick_hz,
        )

    async def _join_new(self, request: zone_pb2.JoinRequest, context: Context) -> None:
        player = request.player_id
        route = await self.store.route(player)
        elsewhere = route is not None and route.zone != self.cfg.zone
        if elsewhere and route is not None and await self.store.zone_alive(route.zone):
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"player {player} is owned by live zone {route.zone}",
                reason="ROUTED_ELSEWHERE",
                field="player_id",
            )
        checkpoint = (await self.store.load_checkpoints([player])).get(player)
        new_id = None if checkpoint is not None else (await self.store.next_ids(1))[0]
        # Epochs only grow: after a leave the route is gone but the checkpoint remembers.
        epoch = max(route.epoch if route else 0, checkpoint.epoch if checkpoint else 0) + 1
        if not await self.store.claim_route(player, route.raw if route else "", epoch):
            await abort(
                context,
                grpc.StatusCode.ABORTED,
                f"route of {player} changed during the join; retry",
                reason="ROUTE_CHANGED",
                retry_after_s=0.1,
            )
        if player in self.sim.ents.players:
            return  # a concurrent join of the same player finished first
        if checkpoint is not None and checkpoint.entity_id not in self.sim.ents.index:
            self.sim.adopt(messages.record(checkpoint), epoch=epoch, now=time.monotonic())
        else:
            spawn = request.spawn
            pos = (spawn.x, spawn.y, spawn.z) if request.HasField("spawn") else None
            self.sim.add_player(
                entity_id=new_id if new_id is not None else (await self.store.next_ids(1))[0],
                player_id=player,
                pos=pos or self.sim.spawn_point(),
                team=request.team,
            )
            self.sim.ents.extra[self.sim.ents.players[player]].epoch = epoch
        self.sim.ents.extra[self.sim.ents.players[player]].relay_id = request.relay_id
        await self.store.save_checkpoints([self._checkpoint_of(player)])

    async def Leave(
        self, request: zone_pb2.LeaveRequest, context: Context
    ) -> zone_pb2.LeaveResponse:
        player = request.player_id
        if player not in self.sim.ents.players:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"player {player!r} is not in zone {self.cfg.zone}",
                reason="UNKNOWN_PLAYER",
                field="player_id",
            )
        serving = self.sim.ents.extra[self.sim.ents.players[player]].relay_id
        if request.relay_id and serving and serving != request.relay_id:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"player {player!r} is served by relay {serving!r}, not {request.relay_id!r}",
                reason="SERVED_BY_OTHER_RELAY",
                field="relay_id",
            )
        # Durable first: if Redis fails, the player stays and the caller may retry.
        try:
            await self.store.save_checkpoints([self._checkpoint_of(player)])
            await self.store.release_route(player)
        except RedisError as err:
            await _unavailable(context, err)
        if player in self.sim.ents.players:
            self.links.forget(player)
            self.sim.remove_player(player)
        return zone_pb2.LeaveResponse()

    async def GetStatus(
        self, request: zone_pb2.GetStatusRequest, context: Context
    ) -> zone_pb2.ZoneStatus:
        return self.status(entities=request.include_entities)

    async def SetBounds(
        self, request: zone_pb2.SetBoundsRequest, context: Context
    ) -> zone_pb2.SetBoundsResponse:
        b, w = request.bounds, self.cfg.world_bounds
        values = (b.min_x, b.min_z, b.max_x, b.max_z)
        if not (
            request.HasField("bounds")
            and all(np.isfinite(values))
            and w.min_x <= b.min_x < b.max_x <= w.max_x
            and w.min_z <= b.min_z < b.max_z <= w.max_z
        ):
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "bounds must be a non-empty rectangle inside the world bounds",
                reason="BAD_BOUNDS",
                field="bounds",
            )
        if request.map_version < self.map_version:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"map version {request.map_version} is older than {self.map_version}",
                reason="STALE_MAP_VERSION",
                field="map_version",
            )
        self.map_version = request.map_version
        self.bounds = from_bounds(b)
        self.sim.area = self.bounds
        with contextlib.suppress(RedisError):
            await self.border.refresh_map()
        self.border.rebound()
        if self.state in (State.ZONE_STATE_STANDBY, State.ZONE_STATE_STARTING):
            await self._activate()
        leaving = len(self.border.departures())
        log.info(
            "bounds set",
            extra={"bounds": values, "map_version": self.map_version, "leaving": leaving},
        )
        return zone_pb2.SetBoundsResponse(handoffs_started=leaving)

    async def Drain(
        self, request: zone_pb2.DrainRequest, context: Context
    ) -> zone_pb2.DrainResponse:
        if not np.isfinite(request.deadline_s) or request.deadline_s < 0:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "deadline_s must be a finite number >= 0",
                reason="BAD_DEADLINE",
                field="deadline_s",
            )
        target = request.target.zone
        if target == self.cfg.zone:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "a zone cannot drain into itself",
                reason="BAD_TARGET",
                field="target",
            )
        if self.state in (State.ZONE_STATE_ACTIVE, State.ZONE_STATE_STANDBY):
            self.state = State.ZONE_STATE_DRAINING
        if self.state == State.ZONE_STATE_DRAINING:
            self.border.drain(target, request.deadline_s)
            with contextlib.suppress(RedisError):
                await self.border.refresh_map()
            self._maybe_drained()
        return zone_pb2.DrainResponse(remaining=len(self.sim.ents.players))


async def _unavailable(context: Context, err: RedisError) -> None:
    await abort(
        context,
        grpc.StatusCode.UNAVAILABLE,
        f"state store unavailable: {err}",
        reason="STORE_UNAVAILABLE",
        retry_after_s=1.0,
    )
