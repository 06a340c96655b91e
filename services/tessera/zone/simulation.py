"""One zone's simulation: the data flow of a tick.

inputs (validated and buffered on arrival; one per player applied a tick)
-> NPC behaviour and synthetic players' steering
-> the game module's actions and systems (tessera.zone.game) -> movement
-> position history -> combat -> respawn / regeneration -> match rules (an
instance zone's module with rules) -> interest -> quantize
-> tiers -> delta encode, then the overload governor (tessera.zone.overload)
weighs the tick's CPU.

Everything here is plain Python, numpy and the compiled kernels behind interest
and snapshot; the servicer feeds inputs in and ships the :class:`Frame` a tick
produces. Counters are accumulated in
``counts`` and flushed to Prometheus by the caller.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.game.module import Module, load
from tessera.game.view import View
from tessera.wire.geometry import Rect
from tessera.wire.snapshot import Quantization
from tessera.zone import combat, inputs, interest, kernels, overload, synthetic
from tessera.zone.config import ZoneConfig
from tessera.zone.entities import (
    DEAD,
    GHOST,
    MAX_HEALTH,
    NPC,
    PLAYER,
    SYNTHETIC,
    Entities,
    Record,
    export_state,
    owned,
    spawn_state,
)
from tessera.zone.events import (
    INPUT_DROPPED,
    SPEED_CLAMPED,
    TELEPORT_REJECTED,
    Event,
)
from tessera.zone.game import Game
from tessera.zone.movement import desired_velocity, integrate
from tessera.zone.npc import think
from tessera.zone.snapshot import (
    PAD,
    Acks,
    EncodedBatch,
    SnapshotEncoder,
    quantize,
    quantize_components,
    tier_bits,
)

I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Sight:
    """This tick's snapshot recipients and where they stand (their views are current)."""

    players: list[str]
    clients: I64  # their snapshot rows
    viewer_rows: I64  # their entity rows
    viewers: npt.NDArray[np.float64]  # their x, z
    beat: int  # snapshots sent to each client so far
    aoi_s: float


@dataclass(frozen=True)
class Growth:
    """Client-row memory allocated ahead (:meth:`Simulation.allocate`), None where
    the rows held suffice."""

    clients: int
    encoder: list[npt.NDArray[Any]] | None
    views: dict[str, npt.NDArray[Any]] | None


@dataclass
class Frame:
    """What one tick produced."""

    tick: int
    players: list[str]
    batch: EncodedBatch
    events: list[Event]
    aoi_s: float = 0.0
    encode_s: float = 0.0
    encode_cpu_s: float = 0.0  # the encoding's thread CPU (quantize, tiers, delta encode)
    step_s: float = 0.0
    aoi_pairs: int = 0
    overload_level: int = 0  # the overload ladder's rung this tick ran at


class Simulation:
    """Entities, systems and per-client snapshot state of one zone. ``module`` is
    the game (default: the one ``cfg.game_module`` names, imported now)."""

    def __init__(
        self, cfg: ZoneConfig, *, area: Rect, seed: int = 0, module: Module | None = None
    ) -> None:
        self.cfg = cfg
        self.area = area
        self.quant = Quantization(origin=(cfg.world_bounds.min_x, 0.0, cfg.world_bounds.min_z))
        module = module or load(cfg.game_module)
        self.game = Game(module, disable_after=cfg.game_disable_after, match_id=cfg.instance)
        self.ents = Entities(components=module.components)
        self.history = combat.History(math.ceil(cfg.history_s * cfg.tick_hz) + 1)
        self.replicated = module.replicated
        self.tier_bits = tier_bits(self.replicated)
        self.encoder = SnapshotEncoder(
            cfg.tiers.cap, history=cfg.snapshot_history, components=self.replicated
        )
        self.views = interest.Views(cfg.tiers.cap, self.encoder.columns, PAD)
        self.attached: dict[str, int] = {}  # player -> snapshot (client) row
        # per client row, kept on attach/detach/removal so a tick needs no Python loop:
        self.client_player: list[str] = []  # its player ("" when free)
        self.viewer = np.zeros(0, np.int64)  # its player's entity row, -1 when free
        self.fresh = np.zeros(0, np.bool_)  # attached since its last snapshot
        self.tick = 0
        self.events: list[Event] = []
        self.counts: Counter[str] = Counter()
        self._told: dict[tuple[str, str], float] = {}
        self.rng = np.random.default_rng(seed)
        self.forwarded: list[combat.Forwarded] = []  # hits on ghosts, for their owners
        self.governor = overload.Governor(cfg.ladder)
        self.tiers = cfg.tiers  # the AOI tiers in effect (degraded under overload)
        # Wall-clock seconds, set by the shell before each step: synthetic players'
        # hotspots move with it, so every zone of the world agrees where they are.
        self.clock_s = 0.0

    @property
    def now_s(self) -> float:
        """Simulation time: ticks elapsed times the tick length."""
        return self.tick * self.cfg.dt

    @property
    def tick_ms(self) -> float:
        return 1000.0 * self.cfg.dt

    # --- entities -------------------------------------------------------

    def spawn_point(self) -> tuple[float, float, float]:
        """A random point within 20 m of the area's centre."""
        a = self.area
        cx, cz = (a.min_x + a.max_x) / 2, (a.min_z + a.max_z) / 2
        x, z = self.clamp_xz(cx + self.rng.uniform(-20, 20), cz + self.rng.uniform(-20, 20))
        return (x, 0.0, z)

    def clamp_xz(self, x: float, z: float) -> tuple[float, float]:
        a = self.area
        return (
            float(min(max(x, a.min_x), math.nextafter(a.max_x, a.min_x))),
            float(min(max(z, a.min_z), math.nextafter(a.max_z, a.min_z))),
        )

    def spawn_npcs(self, ids: list[int]) -> None:
        """Add NPCs at random points of the area, each wandering around its spawn point."""
        a = self.area
        for eid in ids:
            x = float(self.rng.uniform(a.min_x, a.max_x))
            z = float(self.rng.uniform(a.min_z, a.max_z))
            self.ents.add(eid, NPC, (x, 0.0, z), home=(x, z), waypoint=(x, z))

    def add_player(
        self,
        *,
        entity_id: int,
        player_id: str,
        pos: tuple[float, float, float],
        team: int,
        synthetic: bool = False,
    ) -> int:
        """Spawn a new player at ``pos`` (clamped into the area); a ``synthetic`` one
        is steered here and gets its snapshots encoded from now on."""
        x, z = self.clamp_xz(pos[0], pos[2])
        row = self.ents.add_player(
            entity_id,
            player_id,
            (x, max(pos[1], 0.0), z),
            team=team,
            home=(x, z),
            flags=SYNTHETIC if synthetic else 0,
            tokens=inputs.BURST_S * self.cfg.tick_hz,
            tokens_at=time.monotonic(),
        )
        if synthetic:
            self.attach(player_id)
        return row

    def adopt(self, state: Record, *, epoch: int, now: float) -> int:
        """Instantiate an entity from its durable state (checkpoint restore, and a
        committed handoff); its position is clamped into the area. Non-finite values
        of a corrupt record are replaced (position by a spawn point, velocity and yaw
        by 0, health by full), so NaN or inf never reaches entity state."""
        x, y, z = state.position
        if not all(map(math.isfinite, state.position)):
            x, y, z = self.spawn_point()
        x, z = self.clamp_xz(x, z)
        finite = all(map(math.isfinite, state.velocity))
        state = replace(
            state,
            position=(x, y, z),
            velocity=state.velocity if finite else (0.0, 0.0, 0.0),
            yaw=state.yaw if math.isfinite(state.yaw) else 0.0,
            health=state.health if math.isfinite(state.health) else MAX_HEALTH,
        )
        row = spawn_state(self.ents, state, now_s=self.now_s)
        extra = self.ents.extra[state.entity_id]
        extra.restored, extra.epoch = True, epoch
        self.ents.home[row] = (x, z)
        # A joining player's input burst: the client's first packet here resends its
        # newest inputs, and an empty bucket would drop them for the rate.
        self.ents.tokens[row] = inputs.BURST_S * self.cfg.tick_hz
        self.ents.tokens_at[row] = now
        if self.ents.flags[row] & SYNTHETIC:
            self.attach(state.player_id)  # no relay will: its snapshots start now
        return row

    def remove_player(self, player_id: str) -> None:
        """Remove a player and its snapshot state."""
        self.detach(player_id)
        self.remove_entity(self.ents.players[player_id])
        self._told = {k: v for k, v in self._told.items() if k[0] != player_id}

    def remove_entity(self, entity_id: int) -> None:
        """Remove any entity; views referencing it drop it."""
        row, last = self.ents.index[entity_id], self.ents.n - 1
        self.game.forget(entity_id)
        self.views.removed(row, last)
        kernels.swap_removed(self.viewer, row, last)
        self.ents.remove(entity_id)

    def export_player(self, player_id: str, zone: str) -> Record:
        """The durable state of a present player."""
        e = self.ents
        eid = e.players[player_id]
        return export_state(e, e.index[eid], zone=zone, epoch=e.extra[eid].epoch)

    # --- links ----------------------------------------------------------

    def attach(self, player_id: str) -> bool:
        """Start snapshots for a present player (a new stream, full snapshot first)."""
        if player_id not in self.ents.players:
            return False
        self.detach(player_id)
        row = self.encoder.open()
        self.views.reset(row)
        self._reserve_rows(row + 1)
        self.attached[player_id] = row
        self.client_player[row] = player_id
        self.viewer[row] = self.ents.index[self.ents.players[player_id]]
        self.fresh[row] = True
        return True

    def reserve(self, clients: int) -> None:
        """Snapshot state for at least ``clients`` attached players, grown now in one
        step: a zone that takes a whole zone's players by handoff calls this while
        their offers are held, so their attaches then grow nothing."""
        self.install(self.allocate(clients))

    def holds(self, clients: int) -> bool:
        """Whether the snapshot state has rows for ``clients`` attached players."""
        return clients <= min(self.encoder.rows, self.views.ids.shape[0], self.viewer.size)

    def allocate(self, clients: int) -> Growth:
        """The new memory of :meth:`reserve`, allocated and faulted in; it reads only
        the sizes held, so it can run on a worker thread while the zone ticks."""
        return Growth(clients, self.encoder.allocate(clients), self.views.allocate(clients))

    def install(self, growth: Growth) -> None:
        """Take :meth:`allocate`'s memory (on the loop: copies the rows held)."""
        self.encoder.install(growth.encoder)
        self.views.install(growth.views)
        self._reserve_rows(growth.clients)

    def _reserve_rows(self, clients: int) -> None:
        if clients > self.viewer.size:
            grow = max(clients, 2 * self.viewer.size, 16) - self.viewer.size
            self.client_player += [""] * grow
            self.viewer = np.append(self.viewer, np.full(grow, -1, np.int64))
            self.fresh = np.append(self.fresh, np.zeros(grow, np.bool_))

    def detach(self, player_id: str) -> None:
        row = self.attached.pop(player_id, None)
        if row is not None:
            self.encoder.close(row)
            self.client_player[row] = ""
            self.viewer[row] = -1
            self.fresh[row] = False

    def ack(self, player_id: str, stream: int, sequence: int) -> bool:
        row = self.attached.get(player_id)
        return row is not None and self.encoder.ack(row, stream, sequence)

    def ack_many(self, acks: Acks) -> int:
        """Record a batch of acknowledgements, as :meth:`ack` does one by one; the
        count recorded."""
        rows = np.array([self.attached.get(p, -1) for p in acks.players], np.int64)
        known = rows >= 0
        return self.encoder.ack_received(rows[known], acks.stream[known], acks.sequence[known])

    # --- inputs ---------------------------------------------------------

    def submit(self, one: inputs.Input, now_s: float) -> str | None:
        """Validate and buffer one input for the next tick; the drop reason or None."""
        return self._apply(inputs.Inputs.of([one]), now_s).get(0)

    def submit_many(self, batch: inputs.Inputs, now_s: float) -> None:
        """Validate and buffer a relay's batch of inputs, in order."""
        self._apply(batch, now_s)

    def _apply(self, batch: inputs.Inputs, now_s: float) -> dict[int, str]:
        """Apply the inputs, then count and report the rare outcomes in input order."""
        out = inputs.apply(self.ents, batch, now_s, hz=self.cfg.tick_hz)
        self.counts["accepted"] += out.accepted
        for i in sorted(out.drops.keys() | out.clamped.keys()):
            player = batch.players[i]
            if i in out.drops:
                why = out.drops[i]
                self._drop(player, why, event=why not in inputs.QUIET)
                continue
            self.counts["speed_clamped"] += 1
            self.ents.extra[self.ents.players[player]].speed_clamps += 1
            self.events.append(Event(player, SPEED_CLAMPED, amount=out.clamped[i], detail="move"))
        return out.drops

    def act(self, player_id: str, action_id: int, args: list[float], now_s: float) -> str | None:
        """Check one game action and queue it for the next tick; returns the drop
        reason (counted) or None."""
        return self.game.submit(
            self.ents,
            player_id=player_id,
            action_id=action_id,
            values=args,
            now_s=now_s,
            counts=self.counts,
        )

    def _drop(self, player_id: str, reason: str, *, event: bool) -> None:
        """Count a dropped input; tell the player at most once per reason per second."""
        self.counts["drop:" + reason] += 1
        key = (player_id, reason)
        if event and self.now_s - self._told.get(key, -1e9) >= 1.0:
            self._told[key] = self.now_s
            self.events.append(Event(player_id, INPUT_DROPPED, detail=reason))

    # --- hits forwarded by neighbours -----------------------------------

    def take_hit(self, target: int, attacker_id: int, damage: float) -> None:
        """Apply a validated hit forwarded by a neighbour (told to players next tick)."""
        combat.take_hit(
            self.ents,
            target,
            attacker_id,
            damage,
            now=self.now_s,
            respawn_s=self.cfg.weapons.respawn_s,
            events=self.events,
            counts=self.counts,
        )

    # --- the tick -------------------------------------------------------

    def step(self) -> Frame:
        """Advance one tick: each player's next buffered input sets its intent, the
        systems act on the intents, then each attached player's view is refreshed
        and its snapshot encoded."""
        started, cpu = time.perf_counter(), time.thread_time()
        self.tick += 1
        events, self.events = self.events, []  # told by inputs and hits since the last tick
        self._systems(events)
        if self.game.match is not None:
            ghost = (self.ents.flags[: self.ents.n] & GHOST) != 0
            alive = ((self.ents.flags[: self.ents.n] & DEAD) == 0) & ~ghost
            self.game.judge(self.ents, self._view(alive), events, self.counts)
        sight = self._interest()
        frame = self._encode(sight, events)
        self._ack_synthetic(frame, sight)
        frame.step_s = time.perf_counter() - started
        frame.overload_level = self.governor.level
        level = self.governor.add(time.thread_time() - cpu)
        self.tiers = overload.degrade(self.cfg.tiers, level)
        return frame

    def _systems(self, events: list[Event]) -> None:
        """Buffered inputs -> NPC behaviour -> game module -> movement -> position
        history -> combat -> respawn / regeneration."""
        e, n, now, cfg = self.ents, self.ents.n, self.now_s, self.cfg
        if n:
            inputs.consume(e, hz=cfg.tick_hz)
            ghost = (e.flags[:n] & GHOST) != 0  # neighbours' entities: shown, not simulated
            alive = ((e.flags[:n] & DEAD) == 0) & ~ghost
            self._think(alive)
            self._steer(alive)
            if self.game.active:
                self.game.run(e, self._view(alive), dt=cfg.dt, out=events, counts=self.counts)
                alive = ((e.flags[:n] & DEAD) == 0) & ~ghost  # the module may kill or revive
            self._move(alive, events)
        self.history.record(self.tick, e.id[:n], e.pos[:n])
        if n:
            self._fight(alive, now, events)
            combat.recover(e, ghost, now=now, dt=cfg.dt, weapons=cfg.weapons, events=events)
            e.actions[:n] = 0

    def _view(self, simulated: Bools) -> View:
        e, n = self.ents, self.ents.n
        return View(
            tick=self.tick,
            now_s=self.now_s,
            id=e.id[:n],
            kind=e.kind[:n],
            pos=e.pos[:n],
            vel=e.vel[:n],
            yaw=e.yaw[:n],
            health=e.health[:n],
            team=e.team[:n],
            flags=e.flags[:n],
            move=e.move[:n],
            simulated=simulated,
            components={name: col[:n] for name, col in e.columns.items()},
        )

    def _think(self, alive: npt.NDArray[np.bool_]) -> None:
        e, n = self.ents, self.ents.n
        npc = alive & (e.kind[:n] == NPC)
        if not npc.any():
            return
        players = alive & (e.kind[:n] == PLAYER)
        move, yaw, waypoint, actions = think(
            e.pos[:n][npc],
            e.home[:n][npc],
            e.waypoint[:n][npc],
            e.pos[:n][players],
            self.rng,
            behaviour=self.cfg.behaviour,
        )
        rows = np.flatnonzero(npc)
        e.move[rows] = move
        e.yaw[rows] = yaw
        e.waypoint[rows] = waypoint
        e.actions[rows] |= actions

    def _steer(self, alive: npt.NDArray[np.bool_]) -> None:
        """Synthetic players' intents: towards their hotspots (tessera.zone.synthetic)."""
        e, n = self.ents, self.ents.n
        rows = np.flatnonzero(alive & ((e.flags[:n] & SYNTHETIC) != 0))
        if not rows.size:
            return
        target = synthetic.targets(
            e.id[rows], self.cfg.world_bounds, self.cfg.hotspots, self.clock_s
        )
        e.move[rows], e.yaw[rows] = synthetic.steer(e.pos[rows][:, [0, 2]], target)

    def _ack_synthetic(self, frame: Frame, sight: Sight) -> None:
        """Synthetic players' snapshots are encoded, counted and not sent: each is
        acknowledged at once, as by a client on a perfect link, so the next one is
        a delta like a real client's."""
        synthetic = (self.ents.flags[sight.viewer_rows] & SYNTHETIC) != 0
        if not synthetic.any():
            return
        self.encoder.ack_many(sight.clients[synthetic], frame.batch.sequence[synthetic])
        self.counts["synthetic_snapshots"] += int(synthetic.sum())
        self.counts["synthetic_bytes"] += int(frame.batch.sizes[synthetic].sum())

    def _move(self, alive: npt.NDArray[np.bool_], events: list[Event]) -> None:
        e, n, cfg = self.ents, self.ents.n, self.cfg
        desired = desired_velocity(e.move[:n], e.yaw[:n], cfg.limits.max_speed)
        desired[~alive] = 0.0
        jump = alive & ((e.actions[:n] & inputs.ACTION_JUMP) != 0)
        pos, vel, excess = integrate(
            e.pos[:n], e.vel[:n], desired, jump, limits=cfg.limits, dt=cfg.dt, area=self.area
        )
        ghost = (e.flags[:n] & GHOST) != 0
        pos[ghost], vel[ghost] = e.pos[:n][ghost], e.vel[:n][ghost]
        e.pos[:n], e.vel[:n] = pos, vel
        for row in np.flatnonzero((excess > 0) & (e.kind[:n] == PLAYER)).tolist():
            self.counts["teleport_rejected"] += 1
            extra = e.extra[int(e.id[row])]
            extra.teleports += 1
            events.append(Event(extra.player_id, TELEPORT_REJECTED, amount=float(excess[row])))

    def _fight(self, alive: npt.NDArray[np.bool_], now: float, events: list[Event]) -> None:
        cfg = self.cfg
        self.forwarded += combat.fight(
            self.ents,
            alive,
            tick=self.tick,
            now=now,
            tick_ms=self.tick_ms,
            history=self.history,
            weapons=cfg.weapons,
            max_rewind_ms=cfg.max_rewind_ms,
            events=events,
            counts=self.counts,
        )

    def _interest(self) -> Sight:
        """Who gets a snapshot this tick, with their views refreshed when due (or new)."""
        e, n, tiers, views = self.ents, self.ents.n, self.tiers, self.views
        every = self.cfg.snapshot_every
        beat = self.tick // every  # snapshots sent to each client so far
        slots = np.arange(self.viewer.size)
        clients = np.flatnonzero((self.viewer >= 0) & ((slots + self.tick) % every == 0))
        players = [self.client_player[c] for c in clients.tolist()]
        viewer_rows = self.viewer[clients]
        started = time.perf_counter()
        viewers = e.pos[viewer_rows][:, [0, 2]]
        refresh = ((clients + beat) % tiers.refresh_every == 0) | self.fresh[clients]
        self.fresh[clients] = False
        if refresh.any() and n:
            boost = np.where(self.now_s - e.combat_at[:n] < 2.0, tiers.combat_bonus_m, 0.0)
            seen = interest.visible(
                e.pos[:n][:, [0, 2]],
                viewers[refresh],
                boost,
                e.id[:n],
                tiers=tiers,
                width=views.cap,
            )
            views.refresh(clients[refresh], seen, e.id[:n])
        return Sight(players, clients, viewer_rows, viewers, beat, time.perf_counter() - started)

    def _encode(self, sight: Sight, events: list[Event]) -> Frame:
        """Quantize, take fresh values for the due view slots (tiers), delta-encode."""
        e, n, views, clients = self.ents, self.ents.n, self.views, sight.clients
        started, cpu = time.perf_counter(), time.thread_time()
        table = quantize(
            self.quant,
            pos=e.pos[:n],
            vel=e.vel[:n],
            yaw=e.yaw[:n],
            health=e.health[:n],
            flags=e.flags[:n],
            kind=e.kind[:n],
            team=e.team[:n],
        )
        if self.replicated:
            # a ghost holds its components' defaults, not the owner's values: none sent
            extra, clamped = quantize_components(self.replicated, e.columns, owned(e))
            table = np.hstack([table, extra])
            for name, count in clamped.items():
                if count:
                    self.counts["replication_clamped:" + name] += count
        due = interest.due(
            views,
            clients,
            viewers=sight.viewers,
            pos=e.pos[:n],
            entity_ids=e.id[:n],
            table=table,
            beat=sight.beat,
            tiers=self.tiers,
            tier_bits=self.tier_bits,
        )
        batch = self.encoder.encode_due(views, due, last_input_seq=e.last_seq[sight.viewer_rows])
        return Frame(
            tick=self.tick,
            players=sight.players,
            batch=batch,
            events=events,
            aoi_s=sight.aoi_s,
            encode_s=time.perf_counter() - started,
            encode_cpu_s=time.thread_time() - cpu,
            aoi_pairs=int(due.valid.sum()),
        )


def warm_up(cfg: ZoneConfig) -> None:
    """Compile (or load from numba's disk cache) every kernel a tick and an input
    batch call, the game module's included, with the argument types they pass: two
    players and an NPC step through a throwaway simulation (one player's input
    checked, one attacking the other, the NPC chasing), the second tick against an
    acknowledged baseline, then the NPC removed.
    The zone calls this before it reports ready, so no tick waits for the JIT."""
    area = cfg.bounds or cfg.world_bounds
    sim = Simulation(cfg, area=area)
    cx, cz = (area.min_x + area.max_x) / 2, (area.min_z + area.max_z) / 2
    for eid in (1, 2):
        sim.add_player(entity_id=eid, player_id=f"warm-{eid}", pos=(cx, 0.0, cz), team=0)
        sim.attach(f"warm-{eid}")
    sim.ents.add(3, NPC, (cx, 0.0, cz), home=(cx, cz), waypoint=(cx, cz))  # compiles the chase
    sim.submit(inputs.Input("warm-1", 1, move_x=2.0), 0.0)  # compiles the input check
    kernels.refill(0.0, 0.0, 0.0, 1.0, 1.0)  # the game actions' rate bucket
    sim.ents.actions[0] = inputs.ACTION_MELEE | inputs.ACTION_RANGED  # compiles the aim
    frame = sim.step()
    for player, stream, seq in zip(
        frame.players, frame.batch.stream.tolist(), frame.batch.sequence.tolist(), strict=True
    ):
        sim.ack(player, stream, seq)
    sim.step()
    sim.remove_entity(3)  # compiles the views' swap-remove
