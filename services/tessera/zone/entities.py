"""Entity state as a structure of numpy arrays.

Entities live in dense arrays (index ``0..n-1``) so every system is a vector
operation; removal swaps the last entity into the hole. Entity ids are 64-bit,
world-unique and never reused (allocated by :mod:`tessera.zone.store`); ``index``
maps an id to its current row. Data that systems never vectorize over (account
id, opaque blob, relay) lives in dicts keyed by entity id. What outlives a zone
(checkpoints, handoffs) is an entity's :class:`Record`. A game module's components
(tessera.game) are more columns, in ``columns``, and ride records as one mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.game.module import Component

# PLAYER, NPC: entity kinds (tessera.v1.EntityKind); DEAD: flag bit, waiting to
# respawn; GHOST: flag bit, a read-only copy of a neighbour's entity (tessera.zone.ghosts).
from tessera.game.view import DEAD, GHOST, NPC, PLAYER

# Flag bit: a synthetic player, steered inside the zone (tessera.zone.synthetic). Above
# the low byte that snapshots and ghosts carry, so clients and neighbours never see it.
SYNTHETIC = 0x100
KEPT = DEAD | SYNTHETIC  # the flag bits a record carries into its next zone

MAX_HEALTH = 100.0
INPUT_QUEUE = 8  # a player's buffered inputs at most (tessera.zone.inputs)
__all__ = ["DEAD", "GHOST", "MAX_HEALTH", "NPC", "PLAYER", "Entities", "Extra", "Record"]

# name -> (dtype, trailing shape, initial value)
_FIELDS: dict[str, tuple[type[np.generic], tuple[int, ...], float]] = {
    "id": (np.uint64, (), 0),
    "kind": (np.int32, (), 0),
    "pos": (np.float64, (3,), 0.0),
    "vel": (np.float64, (3,), 0.0),
    "yaw": (np.float64, (), 0.0),
    "pitch": (np.float64, (), 0.0),
    "health": (np.float64, (), MAX_HEALTH),
    "team": (np.int32, (), 0),
    "flags": (np.int32, (), 0),
    "last_seq": (np.int64, (), 0),  # the newest input applied (snapshots report it)
    "seen_seq": (np.int64, (), 0),  # the newest input accepted
    # Inputs accepted and not yet applied, oldest first (tessera.zone.inputs): the
    # sequence, the values (move x/z, yaw, pitch, rtt, interpolation delay), actions.
    "queued": (np.int32, (), 0),
    "held_ticks": (np.int32, (), 0),  # ticks in a row the buffer kept inputs back
    "q_seq": (np.int64, (INPUT_QUEUE,), 0),
    "q_values": (np.float64, (INPUT_QUEUE, 6), 0.0),
    "q_actions": (np.int32, (INPUT_QUEUE,), 0),
    "q_wait": (np.int32, (INPUT_QUEUE,), 0),  # ticks each has waited
    "waited": (np.int32, (), 0),  # ticks the newest applied input waited (lag compensation)
    "leaving": (np.bool_, (), 0),  # its handoff is committing: new inputs are the next zone's
    # latest intent from inputs (players) or AI (NPCs)
    "move": (np.float64, (2,), 0.0),
    "actions": (np.int32, (), 0),
    "rtt_ms": (np.float64, (), 0.0),
    "interp_ms": (np.float64, (), 100.0),
    # input rate limiting (token bucket)
    "tokens": (np.float64, (), 0.0),
    "tokens_at": (np.float64, (), 0.0),
    # combat timers, seconds of simulation time
    "melee_ready": (np.float64, (), 0.0),
    "ranged_ready": (np.float64, (), 0.0),
    "combat_at": (np.float64, (), -1e9),
    "respawn_at": (np.float64, (), 0.0),
    # NPC behaviour
    "home": (np.float64, (2,), 0.0),
    "waypoint": (np.float64, (2,), 0.0),
}


@dataclass
class Extra:
    """Per-entity data that is not simulated."""

    player_id: str = ""
    blob: bytes = b""
    relay_id: str = ""
    restored: bool = False
    epoch: int = 0
    speed_clamps: int = 0  # per-player tallies of clamped cheats, for anti-cheat review
    teleports: int = 0
    data_version: int = 0  # of the player's persistent data row (docs/ZONE.md, "Persistence")
    # Combat stats, persisted with the player data.
    kills: int = 0
    deaths: int = 0
    hits_dealt: int = 0
    hits_taken: int = 0
    # The match the player last joined for (the matchmaker's), and their role in
    # it; their team is the ``team`` column (docs/ZONE.md, "Teams and matches").
    match_id: str = ""
    role: str = ""


class Entities:
    """Dense SoA storage with swap-remove and an id -> row map."""

    id: npt.NDArray[np.uint64]
    kind: npt.NDArray[np.int32]
    pos: npt.NDArray[np.float64]
    vel: npt.NDArray[np.float64]
    yaw: npt.NDArray[np.float64]
    pitch: npt.NDArray[np.float64]
    health: npt.NDArray[np.float64]
    team: npt.NDArray[np.int32]
    flags: npt.NDArray[np.int32]
    last_seq: npt.NDArray[np.int64]
    seen_seq: npt.NDArray[np.int64]
    queued: npt.NDArray[np.int32]
    held_ticks: npt.NDArray[np.int32]
    q_seq: npt.NDArray[np.int64]
    q_values: npt.NDArray[np.float64]
    q_actions: npt.NDArray[np.int32]
    q_wait: npt.NDArray[np.int32]
    waited: npt.NDArray[np.int32]
    leaving: npt.NDArray[np.bool_]
    move: npt.NDArray[np.float64]
    actions: npt.NDArray[np.int32]
    rtt_ms: npt.NDArray[np.float64]
    interp_ms: npt.NDArray[np.float64]
    tokens: npt.NDArray[np.float64]
    tokens_at: npt.NDArray[np.float64]
    melee_ready: npt.NDArray[np.float64]
    ranged_ready: npt.NDArray[np.float64]
    combat_at: npt.NDArray[np.float64]
    respawn_at: npt.NDArray[np.float64]
    home: npt.NDArray[np.float64]
    waypoint: npt.NDArray[np.float64]

    def __init__(self, capacity: int = 256, components: Sequence[Component] = ()) -> None:
        self.n = 0
        self.capacity = 0
        self.index: dict[int, int] = {}
        self.players: dict[str, int] = {}
        self.extra: dict[int, Extra] = {}
        self.components = {c.name: c for c in components}
        self.columns: dict[str, npt.NDArray[Any]] = {}  # component name -> its column
        self._resize(max(capacity, 1))

    def _resize(self, capacity: int) -> None:
        for name, (dtype, shape, init) in _FIELDS.items():
            arr = np.full((capacity, *shape), init, dtype)
            if self.capacity:
                arr[: self.n] = getattr(self, name)[: self.n]
            setattr(self, name, arr)
        for name, c in self.components.items():
            col = np.full(capacity, c.default, np.dtype(c.dtype))
            if self.capacity:
                col[: self.n] = self.columns[name][: self.n]
            self.columns[name] = col
        self.capacity = capacity

    def __len__(self) -> int:
        return self.n

    def add(self, entity_id: int, kind: int, pos: tuple[float, float, float], **values: Any) -> int:
        """Append an entity; returns its row. ``values`` set other fields by name."""
        if entity_id in self.index:
            raise ValueError(f"entity {entity_id} already exists")
        if self.n == self.capacity:
            self._resize(self.capacity * 2)
        i = self.n
        for name, (_dtype, _shape, init) in _FIELDS.items():
            getattr(self, name)[i] = init
        for name, c in self.components.items():
            self.columns[name][i] = c.default
        self.id[i] = entity_id
        self.kind[i] = kind
        self.pos[i] = pos
        for name, value in values.items():
            getattr(self, name)[i] = value
        self.n += 1
        self.index[entity_id] = i
        return i

    def remove(self, entity_id: int) -> None:
        """Swap-remove an entity (the last row moves into its place)."""
        i = self.index.pop(entity_id)
        last = self.n - 1
        if i != last:
            for name in _FIELDS:
                arr = getattr(self, name)
                arr[i] = arr[last]
            for col in self.columns.values():
                col[i] = col[last]
            self.index[int(self.id[i])] = i
        self.n = last
        extra = self.extra.pop(entity_id, None)
        if extra is not None and extra.player_id:
            self.players.pop(extra.player_id, None)

    def add_player(
        self, entity_id: int, player_id: str, pos: tuple[float, float, float], **values: Any
    ) -> int:
        """Append a player entity with its account id."""
        if player_id in self.players:
            raise ValueError(f"player {player_id!r} already exists")
        i = self.add(entity_id, PLAYER, pos, **values)
        self.players[player_id] = entity_id
        self.extra[entity_id] = Extra(player_id=player_id)
        return i

    def row_of_player(self, player_id: str) -> int | None:
        """Current row of a player, or None."""
        eid = self.players.get(player_id)
        return None if eid is None else self.index[eid]


def owned(ents: Entities) -> npt.NDArray[np.bool_]:
    """Rows this zone is authoritative for (everything but ghosts)."""
    mask: npt.NDArray[np.bool_] = (ents.flags[: ents.n] & GHOST) == 0
    return mask


@dataclass(slots=True)
class Record:
    """An entity's durable state: the handoff payload and what a checkpoint saves
    (``EntityState`` on the wire). Read-only by convention, not frozen: a frozen
    dataclass's constructor costs four times as much (2.5 µs more for these 24
    fields), and a drain or merge exports every player."""

    entity_id: int
    kind: int = 0
    player_id: str = ""
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw: float = 0.0
    health: float = 0.0
    team: int = 0
    flags: int = 0
    last_input_seq: int = 0
    blob: bytes = b""
    relay_id: str = ""
    zone: str = ""  # the zone that wrote it
    epoch: int = 0  # the routing epoch when written
    data_version: int = 0
    speed_clamps: int = 0
    teleports: int = 0
    kills: int = 0
    deaths: int = 0
    hits_dealt: int = 0
    hits_taken: int = 0
    match_id: str = ""
    role: str = ""
    components: dict[str, float] = field(default_factory=dict)  # the game module's, by name


_NO_EXTRA = Extra()  # what an entity without extra data reads (never written)


def export_state(ents: Entities, row: int, *, zone: str, epoch: int) -> Record:
    """The durable state of one entity (the handoff payload; checkpoints write the
    same fields through ``messages.Checkpoints``)."""
    eid = int(ents.id[row])
    extra = ents.extra.get(eid, _NO_EXTRA)
    return Record(
        entity_id=eid,
        kind=int(ents.kind[row]),
        player_id=extra.player_id,
        position=tuple(ents.pos[row].tolist()),
        velocity=tuple(ents.vel[row].tolist()),
        yaw=float(ents.yaw[row]),
        health=float(ents.health[row]),
        team=int(ents.team[row]),
        flags=int(ents.flags[row]),
        last_input_seq=int(ents.last_seq[row]),
        blob=extra.blob,
        relay_id=extra.relay_id,
        zone=zone,
        epoch=epoch,
        data_version=extra.data_version,
        speed_clamps=extra.speed_clamps,
        teleports=extra.teleports,
        kills=extra.kills,
        deaths=extra.deaths,
        hits_dealt=extra.hits_dealt,
        hits_taken=extra.hits_taken,
        match_id=extra.match_id,
        role=extra.role,
        components={name: float(col[row]) for name, col in ents.columns.items()},
    )


def spawn_state(ents: Entities, state: Record, *, now_s: float) -> int:
    """Instantiate an entity from its durable state (restore or handoff); returns its row."""
    p = state.position
    values: dict[str, Any] = {
        "vel": state.velocity,
        "yaw": state.yaw,
        "health": min(max(state.health, 0.0), MAX_HEALTH),
        "team": state.team,
        "flags": state.flags & KEPT,
        "last_seq": state.last_input_seq,
        "seen_seq": state.last_input_seq,
        "tokens_at": now_s,
        "home": (p[0], p[2]),
        "waypoint": (p[0], p[2]),
    }
    if state.flags & DEAD:
        values["respawn_at"] = now_s
    if state.kind == PLAYER:
        row = ents.add_player(state.entity_id, state.player_id, p, **values)
    else:
        row = ents.add(state.entity_id, NPC, p, **values)
        ents.extra[state.entity_id] = Extra()
    extra = ents.extra[state.entity_id]
    extra.blob, extra.relay_id = state.blob, state.relay_id
    extra.data_version = state.data_version
    extra.speed_clamps, extra.teleports = state.speed_clamps, state.teleports
    extra.kills, extra.deaths = state.kills, state.deaths
    extra.hits_dealt, extra.hits_taken = state.hits_dealt, state.hits_taken
    extra.match_id, extra.role = state.match_id, state.role
    for name, value in state.components.items():
        c = ents.components.get(name)
        # Another module's component, or a value this one cannot hold: the default stays.
        if c is not None and c.fits(value):
            ents.columns[name][row] = value
    return row


def enter_match(ents: Entities, entity_id: int, *, match_id: str, team: int, role: str) -> None:
    """Put an entity in a match: its team (the combat column), match id and role
    replace what it had."""
    ents.team[ents.index[entity_id]] = team
    extra = ents.extra[entity_id]
    extra.match_id, extra.role = match_id, role
