"""The zone's gRPC adapter (tessera.v1.Zone) and its background loops.

Wires the zone's parts together and runs them: the :class:`~tessera.zone.simulation.Simulation`
(the core), its relay :class:`~tessera.zone.links.Links`, the
:class:`~tessera.zone.border.Border` (zone map, handoffs, drain), the ghost
exchange with the :class:`~tessera.zone.neighbours.Neighbours` and the
:class:`~tessera.zone.store.ZoneStore`. The tick loop runs the simulation and
fans the frame out to the links; the border loops apply the border's releases
and receipts to the links; a heartbeat loop registers the zone, a checkpoint
loop saves every player's durable state. With a database, the
:class:`~tessera.zone.persistence.Persistence` loads a player's persistent data
on the first join, writes it behind and logs combat and match events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from redis.exceptions import RedisError

from tessera.authclient import access
from tessera.common import tracing
from tessera.common.audit import AuditLog, AuditRecord
from tessera.common.database import DatabaseUnavailable
from tessera.common.errors import abort
from tessera.common.server import end_tasks
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc
from tessera.wire.bounds import from_bounds, to_bounds
from tessera.wire.connect_token import MAX_MATCH_ID_BYTES, MAX_ROLE_BYTES
from tessera.wire.geometry import Rect
from tessera.wire.names import CHEAT_REASONS
from tessera.zone import messages, metrics
from tessera.zone.border import Border, Release
from tessera.zone.config import ZoneConfig
from tessera.zone.entities import PLAYER, Extra, Record, enter_match, owned
from tessera.zone.events import Event
from tessera.zone.links import Links
from tessera.zone.neighbours import Neighbours
from tessera.zone.persistence import Persistence
from tessera.zone.results import Reporter
from tessera.zone.simulation import Growth, Simulation
from tessera.zone.store import ZoneStore, entry_age_s, entry_key
from tessera.zone.territory import Territory
from tessera.zone.tick import Beat, Ticker

log = logging.getLogger(__name__)

# Who may call each RPC (tessera.authclient.access); docs/AUTH.md lists it. The
# relay links, joins and removes players; the operator (both runtimes) re-bounds
# and drains zones; an admin may read a zone and drain it (the console).
RULES = access.table(
    zone_pb2.DESCRIPTOR.services_by_name["Zone"],
    {
        "ZoneLink": access.roles("service"),
        "Join": access.roles("service"),
        "Leave": access.roles("service"),
        "GetStatus": access.roles("service", "admin"),
        "SetBounds": access.roles("service"),
        "Drain": access.roles("service", "admin"),
    },
)

State = zone_pb2.ZoneState
Context = grpc.aio.ServicerContext[Any, Any]
MAX_PLAYER_ID = 128
# Team numbers travel as u16 in snapshots and ghosts.
MAX_TEAM = 0xFFFF
INBOX_BLOCK_MS = 1000  # an idle zone's inbox read: once a second (socket timeout: 2 s)
INBOX_BLOCK_DRAINING_MS = 50
# A relay id is its pod name (a DNS subdomain): stored with every checkpoint.
MAX_RELAY_ID = 253
RELAY_ID_RULE = f"relay_id must be at most {MAX_RELAY_ID} printable characters"
# How far above or below the ground plane a spawn point may be.
MAX_SPAWN_HEIGHT_M = 10_000.0
# The World's drainTimeoutS is at most an hour (its CRD).
MAX_DRAIN_DEADLINE_S = 3600.0
# A Drain that finds nothing left waits this long (at most half its deadline) for
# the inbox to close, so that it can answer DRAINED; a failed close is retried
# after CLOSE_RETRY_S.
CLOSE_WAIT_S = 1.0
CLOSE_RETRY_S = 1.0


class ZoneServicer(zone_pb2_grpc.ZoneServicer):
    """tessera.v1.Zone over one Simulation."""

    def __init__(
        self,
        cfg: ZoneConfig,
        store: ZoneStore,
        persistence: Persistence | None = None,
        audit: AuditLog | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.cfg = cfg
        # An instance zone's match result goes to matchmaking through it (with rules).
        self.reporter = reporter
        self.store = store
        self.persistence = persistence
        # The audit trail of SetBounds and Drain (with a database only).
        self.audit = audit
        self.territory = Territory(cfg.zone, cfg.world_bounds, cfg.bounds)
        self.sim = Simulation(cfg, area=cfg.bounds or cfg.world_bounds, seed=cfg.seed)
        self.checkpoints = messages.Checkpoints(cfg.zone)
        self.game_schema = messages.game_schema(self.sim.game.module)
        self.address = cfg.advertise_address
        self.links = Links(
            sim=self.sim,
            world=cfg.world,
            queue_size=cfg.link_queue,
            chunk=cfg.link_chunk,
            spread_s=cfg.link_spread_s,
        )
        self.beat = Beat()  # each tick and zone-map change: the border and ghost loops follow
        self._map_notice = False  # a zone-map notice came: the next scan reads the map
        self.neighbours = Neighbours(
            cfg=cfg, store=store, sim=self.sim, territory=self.territory, beat=self.beat
        )
        self.border = Border(
            cfg=cfg, store=store, sim=self.sim, territory=self.territory, neighbours=self.neighbours
        )
        self.ticker = Ticker(cfg.tick_hz, self.tick)
        self.ticker.on_skip = metrics.TICKS_SKIPPED.inc
        self.ticker.on_error = metrics.TICK_ERRORS.inc
        self._tasks: list[asyncio.Task[None]] = []
        self._growing: asyncio.Task[None] | None = None
        self._allocating: asyncio.Future[Growth] | None = None  # client rows, off the loop
        self._joining = 0  # synthetic joins between their room and their attach
        self._npcs_spawned = False
        self._inbox_done: tuple[int, int] = (0, 0)  # the newest inbox entry handled
        self._inbox_moved = asyncio.Condition()  # notified when _inbox_done grows
        self._closed_upto: tuple[int, int] | None = None  # newest entry at the close
        self._closing: asyncio.Task[None] | None = None
        self._close_tried = -math.inf  # monotonic time of the last failed close

    @property
    def zone_ref(self) -> common_pb2.ZoneRef:
        return common_pb2.ZoneRef(world=self.cfg.world, zone=self.cfg.zone)

    # --- lifecycle --------------------------------------------------------

    async def start(self, port: Callable[[], int]) -> None:
        """Restore routed players, then run the tick, heartbeat, checkpoint, border
        and ghost loops."""
        await self.store.open_inbox()  # a zone of this name that drained before closed it
        if self.territory.bounds is not None:
            began = time.perf_counter()
            await self._activate()
            await self.restore()
            metrics.RECOVERY.observe(time.perf_counter() - began)
        else:
            self.territory.state = State.ZONE_STATE_STANDBY
        await self._refresh_map()
        self._tasks = [
            asyncio.create_task(self.ticker.run()),
            asyncio.create_task(self._heartbeats(port)),
            asyncio.create_task(self._checkpoints()),
            asyncio.create_task(self._scans()),
            asyncio.create_task(self._inbox()),
            asyncio.create_task(self.neighbours.run_out()),
            asyncio.create_task(self.neighbours.run_in(on_map=self._map_changed)),
        ]
        if self.reporter is not None:
            self._tasks.append(asyncio.create_task(self.reporter.run()))
        if self.persistence is not None:
            self.persistence.refused = self._adopt_versions
            self._tasks += [
                asyncio.create_task(self.persistence.run()),
                asyncio.create_task(self._write_behind()),
            ]

    async def stop(self) -> None:
        """Stop the loops, write a final checkpoint, end every link."""
        self.ticker.stop()
        helpers = [t for t in (self._growing, self._closing) if t is not None]
        await end_tasks([*self._tasks[1:], *helpers])
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.persistence is not None:
            self._persist(list(self.sim.ents.players))
        with contextlib.suppress(Exception):
            await self.checkpoint()
        if self.persistence is not None:
            await self.persistence.flush()
        self.links.close()

    async def _activate(self) -> None:
        self.territory.state = State.ZONE_STATE_ACTIVE
        if not self._npcs_spawned and self.cfg.npcs:
            self.sim.spawn_npcs(await self.store.next_ids(self.cfg.npcs))
            self._npcs_spawned = True

    async def restore(self) -> int:
        """Re-create every player whose route names this zone from its checkpoint."""
        routed = await self.store.routes_here()
        states = await self.store.load_checkpoints(sorted(routed))
        await self._make_room(len(states))  # their relays attach them all at once
        for player, state in states.items():
            if player in self.sim.ents.players or state.entity_id in self.sim.ents.index:
                continue
            self.sim.adopt(messages.record(state), epoch=routed[player], now=time.monotonic())
        if states:
            log.info("restored players", extra={"players": len(states)})
        return len(states)

    # --- the tick ----------------------------------------------------------

    def tick(self) -> None:
        """One simulation step, fanned out to the links; the beat follows it (a
        failed one too)."""
        try:
            self._step()
        finally:
            self.beat.bump()

    def _step(self) -> None:
        self.sim.clock_s = time.time()
        frame = self.sim.step()
        counts, self.sim.counts = self.sim.counts, type(self.sim.counts)()
        metrics.observe(frame, counts, players=len(self.sim.ents.players), entities=self.sim.ents.n)
        metrics.TICK.observe(frame.step_s)
        now = time.monotonic()
        self.links.publish(frame, time.time() * 1000 + (self.ticker.next_due(now) - now) * 1000)
        self._grow_ahead()
        if self.reporter is not None and self.sim.game.outcome is not None:
            self.reporter.submit(self.sim.game.outcome)
        if self.persistence is not None and frame.events:
            self.persistence.log(frame.events, self._positions(frame.events))
        if self.territory.state == State.ZONE_STATE_DRAINING:
            metrics.DRAIN_REMAINING.set(len(self.sim.ents.players))
            self._maybe_drained()

    async def _grow(self, clients: int) -> None:
        """Snapshot state for ``clients`` attached players. The new memory is
        allocated and faulted in on a worker thread while the zone ticks (on the
        loop, the first touch of 34 MB for 200 players stopped the ticks for
        60-340 ms on a loaded machine); only copying the rows held is left to
        the loop. Concurrent callers share the allocation in flight (then grow
        again if it was too small for them)."""
        while not self.sim.holds(clients):
            if self._allocating is None:  # one allocation at a time, shared by the callers
                allocating = asyncio.ensure_future(asyncio.to_thread(self.sim.allocate, clients))
                allocating.add_done_callback(self._allocated)
                self._allocating = allocating
            growth = await asyncio.shield(self._allocating)
            self.sim.install(growth)  # nothing, if another caller's was larger

    def _allocated(self, allocation: asyncio.Future[Growth]) -> None:
        """An allocation ended (before its callers resume): the next growth starts anew."""
        if self._allocating is allocation:
            self._allocating = None

    async def _make_room(self, coming: int) -> None:
        """Room for the players here, ``coming`` more and a quarter of those spare,
        so that taking them leaves :meth:`_grow_ahead` nothing to do (for 200
        adopted players it would double the 200 rows at once, another 34 MB to
        fault in); synthetic joins in progress count as players. Counted again
        after each wait: other joins may have come meanwhile."""
        while not self.sim.holds(
            need := len(self.sim.ents.players) + self._joining + coming + coming // 4
        ):
            await self._grow(need)

    @contextlib.asynccontextmanager
    async def _row_kept(self, synthetic: bool) -> AsyncIterator[None]:
        """A synthetic player attaches as it joins: a client row is made free for
        it (grown off the loop) before its route is claimed, and kept for it,
        while the join goes on, from the other joins' room."""
        if not synthetic:
            yield
            return
        await self._make_room(1)
        self._joining += 1
        try:
            yield
        finally:
            self._joining -= 1

    def _grow_ahead(self) -> None:
        """Start growing when fewer than an eighth of the client rows are free, so a
        wave of attaches takes rows grown off the loop instead of doubling them
        on it."""
        encoder = self.sim.encoder
        if self._growing is None and encoder.spare * 8 < encoder.rows:
            self._growing = asyncio.create_task(self._grow(encoder.rows * 2))
            self._growing.add_done_callback(self._grown)

    def _grown(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Not retried each tick: attaches still grow the rows when they must.
            log.error("growing the client rows ahead failed", exc_info=task.exception())
            return
        self._growing = None

    def _maybe_drained(self) -> None:
        """Drained once nothing is left and no handoff can still come in: the inbox
        is closed first (the commit script refuses commits into a closed zone), and
        every entry queued before the close is handled. Published at once: the
        operator and the pod's preStop hook wait for it."""
        if not self.border.drained():
            return
        if self._closed_upto is None:
            idle = self._closing is None or self._closing.done()
            if idle and time.monotonic() - self._close_tried >= CLOSE_RETRY_S:
                self._closing = asyncio.create_task(self._close_inbox())
            return
        if self._inbox_done >= self._closed_upto:
            self.territory.state = State.ZONE_STATE_DRAINED
            seconds = round(time.monotonic() - self.border.drain_started, 3)
            log.info("drained", extra={"seconds": seconds})

    async def _close_inbox(self) -> None:
        try:
            upto = self._closed_upto = entry_key(await self.store.close_inbox())
        except Exception:
            self._close_tried = time.monotonic()
            log.exception("closing the inbox failed; tried again in a second")
            return
        async with self._inbox_moved:
            await self._inbox_moved.wait_for(lambda: self._inbox_done >= upto)
        if self.territory.state == State.ZONE_STATE_DRAINING:
            self._maybe_drained()
        if self.territory.state == State.ZONE_STATE_DRAINED and self.address:
            with contextlib.suppress(RedisError):
                await self._heartbeat()

    # --- persistence (docs/ZONE.md, "Persistence") ------------------------------

    def _positions(self, events: list[Event]) -> dict[str, tuple[float, float]]:
        e, where = self.sim.ents, {}
        for ev in events:
            row = e.row_of_player(ev.player_id)
            if row is not None:
                where[ev.player_id] = (float(e.pos[row, 0]), float(e.pos[row, 2]))
        return where

    def _persist(self, players: list[str], *, now: bool = False) -> None:
        """Queue the persistent data of present ``players``, each with a new version
        (written at once with ``now``, else by the next write-behind flush)."""
        assert self.persistence is not None
        records = []
        for player in players:
            eid = self.sim.ents.players.get(player)
            if eid is not None:
                self.sim.ents.extra[eid].data_version += 1
                records.append(self.sim.export_player(player, self.cfg.zone))
        self.persistence.save(records, now=now)

    def _adopt_versions(self, stale: dict[str, int]) -> None:
        """Saves refused for a newer stored version: players still here (restored from
        a checkpoint older than their last write) continue from the stored version and
        are written again; players gone are someone else's now."""
        here = []
        for player, version in stale.items():
            eid = self.sim.ents.players.get(player)
            if eid is not None:
                extra = self.sim.ents.extra[eid]
                extra.data_version = max(extra.data_version, version)
                here.append(player)
        if here:
            self._persist(here)

    async def _write_behind(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.persist_s)
            self._persist(list(self.sim.ents.players))

    async def _saved(self, player: str, entity_id: int) -> Record | None:
        """The player's persistent data in this world as a record to adopt, or None."""
        assert self.persistence is not None
        data = await self.persistence.load(player)
        if data is None:
            return None
        return Record(
            entity_id=entity_id,
            kind=PLAYER,
            player_id=player,
            position=data.position,
            yaw=data.yaw,
            health=data.health,
            blob=data.blob,
            data_version=data.version,
            speed_clamps=data.speed_clamps,
            teleports=data.teleports,
            kills=data.kills,
            deaths=data.deaths,
            hits_dealt=data.hits_dealt,
            hits_taken=data.hits_taken,
            components=data.components,
        )

    # --- the border ---------------------------------------------------------

    async def _scans(self) -> None:
        """After each tick and zone-map notice (at most ``handoff_scan_s`` apart
        if no tick comes): the zone map (on a notice, else every
        ``map_poll_s``), handoffs to start, time out or force, hits on ghosts to
        forward, offers to expire. Entities move and hits land only in ticks, so a
        scan right after one starts their handoffs at once, and deadlines (a
        second's timeout, a half-second rest) need no finer step than a tick."""
        last_map = 0.0
        seen = self.beat.count
        while True:
            try:
                now = time.monotonic()
                if self._map_notice or now - last_map >= self.cfg.map_poll_s:
                    self._map_notice = False
                    last_map = now
                    await self._refresh_map()
                self._release(await self.border.scan())
                await self.neighbours.forward_hits()
                self.border.expire()
            except Exception:
                log.exception("handoff scan failed")
            seen = await self.beat.past(seen, self.cfg.handoff_scan_s)

    def _map_changed(self) -> None:
        """A zone-map notice (the operator wrote a new version): read it at once."""
        self._map_notice = True
        self.beat.bump()

    def _inbox_block_ms(self) -> int:
        """How long an inbox read waits for a first entry: a read returns as soon as
        one arrives, so this only sets how often an idle zone asks again; short
        while draining, whose end waits for the reads to pass the inbox's close."""
        if self.territory.state == State.ZONE_STATE_DRAINING or self._closed_upto is not None:
            return INBOX_BLOCK_DRAINING_MS
        return INBOX_BLOCK_MS

    async def _inbox(self) -> None:
        """Between ticks: handoff messages and forwarded hits from other zones. A
        batch handled is acknowledged with the next read (or again after a failed
        one: acknowledging is idempotent); each read also returns what a lost read
        delivered."""
        handled: list[str] = []
        while True:
            try:
                entries = await self.store.receive(block_ms=self._inbox_block_ms(), done=handled)
                handled = [entry for entry, _ in entries]
                msgs = [m for _e, m in entries if m is not None]
                metrics.INBOX.labels("malformed").inc(len(entries) - len(msgs))
                try:
                    inbox = self.border.take(msgs)
                    for receipt in inbox.receipts:
                        self.links.arrived(receipt.player_id)
                    now = time.time()
                    for entry, msg in entries:
                        if msg is not None and msg.WhichOneof("msg") == "commit":
                            metrics.ARRIVAL.labels("inbox").observe(entry_age_s(entry, now))
                    # Grown while offers are held, not by each arrival's attach; after
                    # the adopted players' arrivals, which an Attach read meanwhile
                    # would otherwise find attached already.
                    await self._make_room(len(self.border.flight.incoming))
                    self._release(await self.border.reply(inbox))
                except Exception:
                    metrics.INBOX.labels("error").inc()
                    log.exception("inbox batch failed")
                if entries:
                    async with self._inbox_moved:
                        self._inbox_done = max(self._inbox_done, entry_key(entries[-1][0]))
                        self._inbox_moved.notify_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("inbox read failed")
                await asyncio.sleep(0.5)

    def _release(self, releases: list[Release]) -> None:
        """Players now owned by another zone: their relays follow them there."""
        for r in releases:
            self.links.handover(r.player_id, r.target, r.epoch, r.trace_context)

    async def _refresh_map(self) -> None:
        if await self.border.refresh_map():
            self._fit_area()
            self.beat.bump()  # a new neighbour gets the aura, and is followed, at once

    def _fit_area(self) -> None:
        area = self.border.movement_area()
        if area is not None:
            self.sim.area = area

    # --- status and durability ------------------------------------------------

    def status(self, *, entities: bool = False) -> zone_pb2.ZoneStatus:
        """The zone's current ZoneStatus (also its heartbeat); ``entities`` lists
        every owned entity too."""
        e = self.sim.ents
        stats = self.ticker.stats
        overloaded = stats.overloaded
        metrics.OVERLOADED.set(1 if overloaded else 0)  # with each heartbeat, not each tick
        draining = self.territory.state == State.ZONE_STATE_DRAINING
        players = [e.index[eid] for eid in e.players.values()]
        if len(players) > 512:
            players = self.sim.rng.choice(players, 512, replace=False).tolist()
        status = zone_pb2.ZoneStatus(
            zone=self.zone_ref,
            address=self.address,
            state=self.territory.state,
            players=len(e.players),
            npcs=e.n - len(e.players) - len(self.neighbours.ghosts),
            ghosts=len(self.neighbours.ghosts),
            tick_hz=self.cfg.tick_hz,
            tick_p50_ms=stats.percentile(50) * 1000,
            tick_p99_ms=stats.percentile(99) * 1000,
            overloaded=overloaded,
            drain_remaining=len(e.players) if draining else 0,
            map_version=self.territory.map_version,
            updated_at_ms=time.time() * 1000,
            sample_x=e.pos[players, 0].tolist(),
            sample_z=e.pos[players, 2].tolist(),
            handoffs_pending=len(self.border.flight.outgoing),
            instance=self.cfg.instance,
            overload_level=self.sim.governor.level,
            handoffs_received=self.border.received,
        )
        if entities:
            ids = e.id[: e.n][owned(e)].tolist()
            status.entity_ids.extend(ids)
            extras = [e.extra.get(i, Extra()) for i in ids]
            status.entity_players.extend(x.player_id for x in extras)
            status.entity_teams.extend(int(e.team[e.index[i]]) for i in ids)
            status.entity_matches.extend(x.match_id for x in extras)
            status.entity_roles.extend(x.role for x in extras)
        if self.territory.bounds is not None:
            status.bounds.CopyFrom(to_bounds(self.territory.bounds))
        return status

    async def _heartbeats(self, port: Callable[[], int]) -> None:
        while not self.address:
            if port():
                self.address = f"127.0.0.1:{port()}"
                break
            await asyncio.sleep(0.02)
        while True:
            try:
                await self._heartbeat()
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(self.cfg.heartbeat_s)

    async def _heartbeat(self) -> None:
        await self.store.heartbeat(self.status(), ttl_s=3 * self.cfg.heartbeat_s)

    async def checkpoint(self) -> int:
        """Save every player's durable state in one Redis command, then publish the
        non-zero anti-cheat tallies among them (docs/ZONE.md#anti-cheat)."""
        ents = self.sim.ents
        payloads = self.checkpoints.payloads(ents, list(ents.players))
        tallies = {
            p: tuple(getattr(ents.extra[eid], r) for r in CHEAT_REASONS)
            for p, eid in ents.players.items()
        }
        began = time.perf_counter()
        await self.store.save_checkpoints(payloads)
        metrics.CHECKPOINT.observe(time.perf_counter() - began)
        await self.store.publish_tallies(
            tallies, ttl_s=self.cfg.cheat_ttl_s, now_ms=int(time.time() * 1000)
        )
        return len(payloads)

    async def _save_checkpoint(self, player: str) -> None:
        await self.store.save_checkpoints(self.checkpoints.payloads(self.sim.ents, [player]))

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
    ) -> AsyncIterator[Any]:
        """A relay's link (links.py): ZoneLinkDown messages, snapshots among them
        serialised already (bytes, sent as is: tessera.common.decoding)."""
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("msg") != "hello":
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first ZoneLink message must be hello",
                reason="LINK_HELLO_REQUIRED",
                field="hello",
            )
        if bad_relay_id(first.hello.relay_id):
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                RELAY_ID_RULE,
                reason="BAD_RELAY_ID",
                field="hello.relay_id",
            )
        if self.links.closed:
            await abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the zone is stopping",
                reason="ZONE_STOPPING",
                retry_after_s=1.0,
            )
        link = self.links.open(first.hello.relay_id, request_iterator)
        try:
            yield zone_pb2.ZoneLinkDown(
                welcome=zone_pb2.LinkWelcome(
                    zone=self.zone_ref,
                    tick_hz=self.cfg.tick_hz,
                    quantization=messages.quantization(self.sim.quant),
                    bounds=to_bounds(self.territory.bounds or self.cfg.world_bounds),
                    game=self.game_schema,
                )
            )
            async for msg in self.links.outgoing(link):
                yield msg
        finally:
            self.links.end(link)

    # --- unary RPCs ----------------------------------------------------------------

    async def Join(self, request: zone_pb2.JoinRequest, context: Context) -> zone_pb2.JoinResponse:
        """Place a player here (its checkpoint, or a new entity); a span ``zone.join``
        in the caller's trace."""
        with tracing.serving(
            "zone.join",
            context.invocation_metadata(),
            {"tessera.zone": self.cfg.zone, "tessera.player_id": request.player_id},
        ) as span:
            response = await self._join(request, context)
            span.set_attributes(
                {"tessera.entity_id": response.entity_id, "tessera.restored": response.restored}
            )
            return response

    async def _join(self, request: zone_pb2.JoinRequest, context: Context) -> zone_pb2.JoinResponse:
        player = request.player_id
        if not 0 < len(player) <= MAX_PLAYER_ID or "|" in player or not player.isprintable():
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"player_id must be 1-{MAX_PLAYER_ID} printable characters without '|'",
                reason="BAD_PLAYER_ID",
                field="player_id",
            )
        if self.territory.state != State.ZONE_STATE_ACTIVE:
            name = State.Name(self.territory.state)
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"zone {self.cfg.zone} does not accept joins while {name}",
                reason="ZONE_NOT_ACTIVE",
            )
        bad_match = _bad_spawn(request, self.cfg.world_bounds) or _bad_match(request)
        if bad_match is not None:
            field, reason, message = bad_match
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, message, reason=reason, field=field
            )
        if request.synthetic:
            await self._check_synthetic(request, context)
        if player not in self.sim.ents.players:
            try:
                await self._join_new(request, context)
            except (RedisError, DatabaseUnavailable) as err:
                await _unavailable(context, err)
        else:
            self._enter_match(request)
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
            quantization=messages.quantization(self.sim.quant),
            tick_hz=self.cfg.tick_hz,
            game=self.game_schema,
        )

    async def _check_synthetic(self, request: zone_pb2.JoinRequest, context: Context) -> None:
        """A synthetic Join needs a zone that allows them, no relay, and a player new
        here (one already present is never turned synthetic)."""
        if not self.cfg.synthetic:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"zone {self.cfg.zone} does not create synthetic players (TESSERA_SYNTHETIC)",
                reason="SYNTHETIC_OFF",
                field="synthetic",
            )
        if request.relay_id:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "a synthetic player has no relay",
                reason="SYNTHETIC_RELAY",
                field="relay_id",
            )
        if request.player_id in self.sim.ents.players:
            await abort(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"player {request.player_id} is already in the world",
                reason="SYNTHETIC_EXISTS",
                field="player_id",
            )

    async def _join_new(self, request: zone_pb2.JoinRequest, context: Context) -> None:
        player = request.player_id
        route = await self.store.route(player)
        if request.synthetic and route is not None:
            await abort(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"player {player} is already in the world",
                reason="SYNTHETIC_EXISTS",
                field="player_id",
            )
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
        # Joining the world (no checkpoint): the persistent data, if any, is where
        # the player resumes. Without it the player must not start afresh.
        saved = None
        if new_id is not None and self.persistence is not None:
            saved = await self._saved(player, new_id)
        # Epochs only grow: after a leave the route is gone but the checkpoint remembers.
        epoch = max(route.epoch if route else 0, checkpoint.epoch if checkpoint else 0) + 1
        async with self._row_kept(request.synthetic):
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
            elif saved is not None:
                self.sim.adopt(saved, epoch=epoch, now=time.monotonic())
            else:
                spawn = request.spawn
                pos = (spawn.x, spawn.y, spawn.z) if request.HasField("spawn") else None
                self.sim.add_player(
                    entity_id=new_id if new_id is not None else (await self.store.next_ids(1))[0],
                    player_id=player,
                    pos=pos or self.sim.spawn_point(),
                    team=request.team,
                    synthetic=request.synthetic,
                )
                self.sim.ents.extra[self.sim.ents.players[player]].epoch = epoch
        self.sim.ents.extra[self.sim.ents.players[player]].relay_id = request.relay_id
        self._enter_match(request)
        await self._save_checkpoint(player)
        self._presence("join", player)

    def _enter_match(self, request: zone_pb2.JoinRequest) -> None:
        """A Join with a match context puts the player in that match (team, match id,
        role); one without leaves what the player has (checkpoint or handoff)."""
        if request.match_id:
            enter_match(
                self.sim.ents,
                self.sim.ents.players[request.player_id],
                match_id=request.match_id,
                team=request.team,
                role=request.role,
            )

    def _presence(self, kind: str, player: str) -> None:
        if self.persistence is not None:
            row = self.sim.ents.index[self.sim.ents.players[player]]
            x, _, z = (float(v) for v in self.sim.ents.pos[row])
            self.persistence.presence(kind, player, x, z)

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
        # At once: until it lands, an API write based on the older row would win.
        if self.persistence is not None:
            self._persist([player], now=True)
            self._presence("leave", player)
        try:
            await self._save_checkpoint(player)
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
        b = request.bounds
        asked = f"bounds {b.min_x:g},{b.min_z:g},{b.max_x:g},{b.max_z:g} map {request.map_version}"
        async with self._audited(context, "set_bounds", asked) as done:
            response = await self._set_bounds(request, context)
            done(f"{asked}: {response.handoffs_started} handoffs")
            return response

    async def Drain(
        self, request: zone_pb2.DrainRequest, context: Context
    ) -> zone_pb2.DrainResponse:
        into = f"into {request.target.zone[:64]}" if request.target.zone else "by position"
        asked = f"drain {into}, deadline {request.deadline_s:g} s"
        async with self._audited(context, "drain", asked) as done:
            response = await self._drain(request, context)
            done(f"{asked}: {response.remaining} remaining")
            return response

    @contextlib.asynccontextmanager
    async def _audited(
        self, context: Context, action: str, asked: str
    ) -> AsyncIterator[Callable[[str], None]]:
        """Write one audit record of the call: ``ok`` with the detail the body
        reports through the yielded function, or ``refused`` / ``failed`` (the zone
        could not act: UNAVAILABLE) when it aborts."""
        if self.audit is None:
            yield lambda _: None
            return
        log_ = self.audit
        record = AuditRecord(
            actor=access.current_claims().sub,
            action=action,
            target=f"{self.cfg.world}/{self.cfg.zone}",
            source=context.peer(),
            outcome="ok",
        )

        def done(detail: str) -> None:
            log_.write(dataclasses.replace(record, detail=detail))

        try:
            yield done
        except Exception:
            code = context.code()
            failed = code == grpc.StatusCode.UNAVAILABLE
            outcome = "failed" if failed else "refused"
            reason = code.name if isinstance(code, grpc.StatusCode) else "error"
            log_.write(dataclasses.replace(record, outcome=outcome, detail=f"{asked}: {reason}"))
            raise

    async def _set_bounds(
        self, request: zone_pb2.SetBoundsRequest, context: Context
    ) -> zone_pb2.SetBoundsResponse:
        if not request.HasField("bounds"):
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "bounds are required",
                reason="BAD_BOUNDS",
                field="bounds",
            )
        here, rect = self.territory, from_bounds(request.bounds)
        try:
            await self._refresh_map()  # the newest published version, to check against
        except RedisError as err:
            await _unavailable(context, err)
        refusal = here.bounds_refusal(rect, request.map_version)
        if refusal is not None:
            field, reason, message = refusal
            code = grpc.StatusCode.INVALID_ARGUMENT
            if reason != "BAD_BOUNDS":
                code = grpc.StatusCode.FAILED_PRECONDITION
            await abort(context, code, message, reason=reason, field=field)
        here.bounds_version = request.map_version
        here.bounds = rect
        self.sim.area = here.bounds  # until the zone map says where movement may reach
        self.border.rebound()
        self._fit_area()
        if here.state in (State.ZONE_STATE_STANDBY, State.ZONE_STATE_STARTING):
            await self._activate()
        leaving = len(self.border.departures())
        log.info(
            "bounds set",
            extra={
                "bounds": (rect.min_x, rect.min_z, rect.max_x, rect.max_z),
                "map_version": here.map_version,
                "leaving": leaving,
            },
        )
        return zone_pb2.SetBoundsResponse(handoffs_started=leaving)

    async def _drain(
        self, request: zone_pb2.DrainRequest, context: Context
    ) -> zone_pb2.DrainResponse:
        if not 0 <= request.deadline_s <= MAX_DRAIN_DEADLINE_S:  # NaN fails too
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"deadline_s must be in [0, {MAX_DRAIN_DEADLINE_S}]",
                reason="BAD_DEADLINE",
                field="deadline_s",
            )
        target = request.target.zone
        if target:
            try:
                await self._refresh_map()
                heartbeat = await self.store.read_heartbeat(target)
            except RedisError as err:
                await _unavailable(context, err)
            refusal = self.territory.drain_refusal(
                request.target.world,
                target,
                world=self.cfg.world,
                alive=heartbeat is not None,
                active=heartbeat is not None and heartbeat.state == State.ZONE_STATE_ACTIVE,
            )
            if refusal is not None:
                reason, message = refusal
                code = grpc.StatusCode.INVALID_ARGUMENT
                if reason == "UNKNOWN_TARGET":
                    code = grpc.StatusCode.FAILED_PRECONDITION
                await abort(context, code, message, reason=reason, field="target")
        here = self.territory
        if here.state in (State.ZONE_STATE_ACTIVE, State.ZONE_STATE_STANDBY):
            here.state = State.ZONE_STATE_DRAINING
        if here.state == State.ZONE_STATE_DRAINING:
            self.border.drain(target, request.deadline_s)
            with contextlib.suppress(RedisError):
                await self._refresh_map()
            self._maybe_drained()
            if self._closing is not None:  # nothing left: answer once no commit can come
                left = context.time_remaining()
                wait = CLOSE_WAIT_S if left is None else min(CLOSE_WAIT_S, left / 2)
                await asyncio.wait({self._closing}, timeout=wait)
            if self.address:
                # Published at once: the pod's preStop hook reads the state there.
                with contextlib.suppress(RedisError):
                    await self.store.heartbeat(self.status(), ttl_s=3 * self.cfg.heartbeat_s)
        return zone_pb2.DrainResponse(remaining=len(self.sim.ents.players))


async def _unavailable(context: Context, err: RedisError | DatabaseUnavailable) -> None:
    await abort(
        context,
        grpc.StatusCode.UNAVAILABLE,
        f"state store unavailable: {err}",
        reason="STORE_UNAVAILABLE",
        retry_after_s=1.0,
    )


def bad_relay_id(relay_id: str) -> bool:
    """A relay id longer than MAX_RELAY_ID or with unprintable characters."""
    return len(relay_id) > MAX_RELAY_ID or not relay_id.isprintable()


def _bad_spawn(request: zone_pb2.JoinRequest, world: Rect) -> tuple[str, str, str] | None:
    """Why a Join's relay id or spawn point is refused, as (field, reason, message):
    a spawn must lie inside the world's bounds, at most MAX_SPAWN_HEIGHT_M from
    the ground plane."""
    if bad_relay_id(request.relay_id):
        return "relay_id", "BAD_RELAY_ID", RELAY_ID_RULE
    if not request.HasField("spawn"):
        return None
    p = request.spawn
    if not (
        world.min_x <= p.x < world.max_x
        and world.min_z <= p.z < world.max_z
        and abs(p.y) <= MAX_SPAWN_HEIGHT_M
    ):  # NaN fails every comparison
        message = (
            f"spawn must be finite, inside the world bounds and within"
            f" {MAX_SPAWN_HEIGHT_M:g} m of the ground"
        )
        return "spawn", "BAD_SPAWN", message
    return None


def _bad_match(request: zone_pb2.JoinRequest) -> tuple[str, str, str] | None:
    """Why a Join's team or match context is out of bounds, as (field, reason, message)."""
    if request.team > MAX_TEAM:
        return "team", "BAD_MATCH", f"team must be at most {MAX_TEAM}"
    if len(request.match_id.encode()) > MAX_MATCH_ID_BYTES:
        return "match_id", "BAD_MATCH", f"match_id must be at most {MAX_MATCH_ID_BYTES} bytes"
    if request.role and not request.match_id:
        return "role", "BAD_MATCH", "a role needs a match_id"
    if len(request.role.encode()) > MAX_ROLE_BYTES:
        return "role", "BAD_MATCH", f"role must be at most {MAX_ROLE_BYTES} bytes"
    return None
