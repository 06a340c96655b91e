"""Combat: lag-compensated melee and ranged hits, damage, death, respawn, regeneration.

:class:`History` is a ring buffer of every entity's position per tick (at
least one second). A hit is validated against target positions at the
attacker's *view time*: server time minus one-way latency minus the client's
interpolation delay, rewound by at most ``max_rewind_ms``. Geometry tests are
vectorized over all candidate targets of an attack. :func:`fight`,
:func:`take_hit` and :func:`recover` apply all of it to the entity arrays once
per tick; hits on ghosts are returned for the ghost's owner to apply.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from tessera.zone import kernels
from tessera.zone.entities import DEAD, GHOST, MAX_HEALTH, NPC, PLAYER, Entities
from tessera.zone.events import DIED, HIT_DEALT, HIT_TAKEN, RESPAWNED, Event

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]

MELEE = 1
RANGED = 2
# An attack's name in events (PlayerEvent.detail, the event log's weapon).
WEAPON_NAMES = {MELEE: "melee", RANGED: "ranged"}
EYE_HEIGHT = 1.5
BODY_CENTER = 1.0


@dataclass(frozen=True)
class Weapons:
    """Attack geometry, damage and timing."""

    melee_range: float = 2.5
    melee_half_angle: float = math.pi / 3
    melee_damage: float = 25.0
    melee_cooldown_s: float = 0.5
    ranged_range: float = 60.0
    ranged_radius: float = 0.6
    ranged_damage: float = 15.0
    ranged_cooldown_s: float = 0.25
    respawn_s: float = 3.0
    regen_delay_s: float = 5.0
    regen_per_s: float = 5.0


@dataclass(frozen=True)
class Hit:
    """One validated hit."""

    attacker: int
    target: int
    attack: int
    damage: float


class Forwarded(NamedTuple):
    """A hit on a ghost, for its owner zone to check and apply (attacker at ``x``, ``z``)."""

    target: int
    attacker: int
    attack: int
    damage: float
    x: float
    z: float


class History:
    """Positions of all entities for the last ``length`` ticks, one row per tick."""

    def __init__(self, length: int, capacity: int = 256) -> None:
        self.length = length
        self.ticks = np.full(length, -1, np.int64)
        self.count = np.zeros(length, np.int64)
        self.ids = np.zeros((length, capacity), np.uint64)
        self.pos = np.zeros((length, capacity, 3))

    def record(self, tick: int, ids: U64, pos: F64) -> None:
        """Store this tick's ids and positions (overwrites the oldest row)."""
        n = ids.size
        if n > self.ids.shape[1]:
            cap = max(n, self.ids.shape[1] * 2)
            grown_ids = np.zeros((self.length, cap), np.uint64)
            grown_pos = np.zeros((self.length, cap, 3))
            grown_ids[:, : self.ids.shape[1]] = self.ids
            grown_pos[:, : self.pos.shape[1]] = self.pos
            self.ids, self.pos = grown_ids, grown_pos
        slot = tick % self.length
        self.ticks[slot] = tick
        self.count[slot] = n
        self.ids[slot, :n] = ids
        self.pos[slot, :n] = pos

    def at(self, tick: int) -> tuple[U64, F64]:
        """Ids and positions recorded at ``tick``, or at the oldest tick still held."""
        slot = tick % self.length
        if self.ticks[slot] != tick:
            held = self.ticks[self.ticks >= 0]
            if held.size == 0:
                return np.zeros(0, np.uint64), np.zeros((0, 3))
            slot = int(held.min()) % self.length
        n = int(self.count[slot])
        return self.ids[slot, :n], self.pos[slot, :n]


def rewind_ticks(rtt_ms: float, interp_ms: float, *, tick_ms: float, max_rewind_ms: float) -> int:
    """How many ticks back the attacker saw the world: one-way latency + interpolation."""
    cap = int(max_rewind_ms / tick_ms + 1e-9)  # never rewind past max_rewind_ms
    return max(0, min(round((rtt_ms / 2 + interp_ms) / tick_ms), cap))


def resolve(
    *,
    attacker: int,
    attack: int,
    origin: F64,
    yaw: float,
    pitch: float,
    candidate_ids: U64,
    candidate_pos: F64,
    eligible: Bools,
    weapons: Weapons,
) -> Hit | None:
    """The one target an attack hits (nearest), from rewound candidate positions:
    melee within range and a cone in front, ranged the first body sphere along the
    aim ray within range (:func:`tessera.zone.kernels.aim`)."""
    melee = attack == MELEE
    best = kernels.aim(
        melee,
        np.ascontiguousarray(origin, np.float64),
        float(yaw),
        float(pitch),
        np.ascontiguousarray(candidate_pos, np.float64).reshape(-1, 3),
        np.ascontiguousarray(eligible, np.bool_),
        weapons.melee_range if melee else weapons.ranged_range,
        math.cos(weapons.melee_half_angle),
        weapons.ranged_radius,
        EYE_HEIGHT,
        BODY_CENTER,
    )
    if best < 0:
        return None
    damage = weapons.melee_damage if melee else weapons.ranged_damage
    return Hit(attacker, int(candidate_ids[best]), attack, damage)


def regenerate(
    health: F64,
    dead: Bools,
    combat_at: F64,
    *,
    now_s: float,
    dt: float,
    weapons: Weapons,
    max_health: float,
) -> F64:
    """Health after one tick of out-of-combat regeneration."""
    calm = ~dead & (now_s - combat_at >= weapons.regen_delay_s)
    return np.where(calm, np.minimum(health + weapons.regen_per_s * dt, max_health), health)


# --- applying combat to the entity arrays ----------------------------------


def fight(
    ents: Entities,
    alive: Bools,
    *,
    tick: int,
    now: float,
    tick_ms: float,
    history: History,
    weapons: Weapons,
    max_rewind_ms: float,
    events: list[Event],
    counts: Counter[str],
) -> list[Forwarded]:
    """Run every attack an entity's actions ask for and its cooldown allows, each
    against the positions its attacker saw; apply the damage. Hits on ghosts are
    returned instead, for their owners."""
    n = ents.n
    wants = np.flatnonzero(alive & ((ents.actions[:n] & (MELEE | RANGED)) != 0)).tolist()
    if not wants:
        return []
    order = np.argsort(ents.id[:n])
    index = (ents.id[:n][order], order)
    rows_at: dict[int, I64] = {}  # by history tick: the rows of the entities it holds
    forwarded: list[Forwarded] = []
    for row in wants:
        if ents.flags[row] & DEAD:
            continue  # killed earlier this tick
        for attack, ready, cooldown in (
            (MELEE, ents.melee_ready, weapons.melee_cooldown_s),
            (RANGED, ents.ranged_ready, weapons.ranged_cooldown_s),
        ):
            if not ents.actions[row] & attack or ready[row] > now + 1e-9:
                continue
            ready[row] = now + cooldown
            ents.combat_at[row] = now
            back = _rewind(ents, row, tick_ms=tick_ms, max_rewind_ms=max_rewind_ms)
            seen = history.at(tick - back)
            if (rows := rows_at.get(back)) is None:
                rows = rows_at[back] = _rows_of(seen[0], index)
            hit = _aim(ents, row, attack, seen=seen, rows=rows, weapons=weapons)
            if hit is None:
                continue
            counts["hits"] += 1
            target = ents.index[hit.target]
            if not ents.flags[target] & GHOST:
                take_hit(
                    ents,
                    target,
                    hit.attacker,
                    hit.damage,
                    now=now,
                    respawn_s=weapons.respawn_s,
                    events=events,
                    counts=counts,
                    weapon=WEAPON_NAMES[attack],
                )
                continue
            x, _, z = (float(v) for v in ents.pos[row])
            forwarded.append(Forwarded(hit.target, hit.attacker, attack, hit.damage, x, z))
            attacker = ents.extra.get(hit.attacker)
            if attacker and attacker.player_id:
                attacker.hits_dealt += 1
                events.append(
                    Event(
                        attacker.player_id,
                        HIT_DEALT,
                        hit.target,
                        hit.damage,
                        WEAPON_NAMES[attack],
                    )
                )
    return forwarded


def _rewind(ents: Entities, row: int, *, tick_ms: float, max_rewind_ms: float) -> int:
    """Ticks back to the attacker's view time: players see the past, NPCs the present.
    An input that waited in the buffer (tessera.zone.inputs) was sent that much earlier."""
    if ents.kind[row] != PLAYER:
        return 0
    return rewind_ticks(
        float(ents.rtt_ms[row]),
        float(ents.interp_ms[row]) + float(ents.waited[row]) * tick_ms,
        tick_ms=tick_ms,
        max_rewind_ms=max_rewind_ms,
    )


def _aim(
    ents: Entities,
    row: int,
    attack: int,
    *,
    seen: tuple[U64, F64],
    rows: I64,
    weapons: Weapons,
) -> Hit | None:
    """The hit of one attack among the entities its attacker saw (``seen``: ids and
    positions of a history row; ``rows``: their rows now, -1 for gone) that still
    exist, are alive, are not the attacker nor on its team (NPCs only hit players)."""
    ids, pos = seen
    safe = np.maximum(rows, 0)
    team = int(ents.team[row])
    eligible = (
        (rows >= 0)
        & (rows != row)
        & ((ents.flags[safe] & DEAD) == 0)
        & ((team == 0) | (ents.team[safe] != team))
    )
    if ents.kind[row] == NPC:
        eligible &= ents.kind[safe] == PLAYER
    return resolve(
        attacker=int(ents.id[row]),
        attack=attack,
        origin=ents.pos[row],
        yaw=float(ents.yaw[row]),
        pitch=float(ents.pitch[row]),
        candidate_ids=ids,
        candidate_pos=pos,
        eligible=eligible,
        weapons=weapons,
    )


def _rows_of(ids: U64, index: tuple[U64, I64]) -> I64:
    """Current rows of entity ids (``index``: sorted ids and their rows); -1 for ids
    that are gone (or PAD)."""
    sorted_ids, sorted_rows = index
    if sorted_ids.size == 0:
        return np.full(ids.shape, -1, np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    found = sorted_ids[pos] == ids
    return np.where(found, sorted_rows[pos], -1)


def take_hit(
    ents: Entities,
    target: int,
    attacker_id: int,
    damage: float,
    *,
    now: float,
    respawn_s: float,
    events: list[Event],
    counts: Counter[str],
    weapon: str = "",
) -> None:
    """Apply validated damage to an owned entity (local or forwarded hit); at 0 health
    it dies and waits ``respawn_s``. ``weapon`` names the attack (empty when a
    neighbour forwarded the hit; the attacker's zone told it in the hit dealt)."""
    ents.health[target] = max(0.0, float(ents.health[target]) - damage)
    ents.combat_at[target] = now
    target_id = int(ents.id[target])
    attacker_player = ents.extra.get(attacker_id)
    target_player = ents.extra.get(target_id)
    # Stats count on the players' Extra (no database work here: the write-behind
    # carries them); a hit forwarded from a neighbour credits no kill there.
    attacker = attacker_player if attacker_player and attacker_player.player_id else None
    victim = target_player if target_player and target_player.player_id else None
    if attacker:
        attacker.hits_dealt += 1
        events.append(Event(attacker.player_id, HIT_DEALT, target_id, damage, weapon))
    if victim:
        victim.hits_taken += 1
        events.append(Event(victim.player_id, HIT_TAKEN, attacker_id, damage, weapon))
    if ents.health[target] <= 0.0:
        ents.flags[target] |= DEAD
        ents.vel[target] = 0.0
        ents.respawn_at[target] = now + respawn_s
        counts["deaths"] += 1
        if attacker:
            attacker.kills += 1
        if victim:
            victim.deaths += 1
            events.append(Event(victim.player_id, DIED, attacker_id))


def recover(
    ents: Entities,
    ghost: Bools,
    *,
    now: float,
    dt: float,
    weapons: Weapons,
    events: list[Event],
) -> None:
    """Respawn the dead whose time has come (full health, at home) and regenerate
    the living out of combat; ghosts are left as their owner sent them."""
    n = ents.n
    dead = ((ents.flags[:n] & DEAD) != 0) & ~ghost
    back = np.flatnonzero(dead & (ents.respawn_at[:n] <= now + 1e-9))
    if back.size:
        ents.flags[back] &= ~DEAD
        ents.health[back] = MAX_HEALTH
        ents.pos[back, 0] = ents.home[back, 0]
        ents.pos[back, 1] = 0.0
        ents.pos[back, 2] = ents.home[back, 1]
        ents.vel[back] = 0.0
        ents.combat_at[back] = -1e9
        for row in back.tolist():
            extra = ents.extra.get(int(ents.id[row]))
            if extra and extra.player_id:
                events.append(Event(extra.player_id, RESPAWNED))
        dead[back] = False
    ents.health[:n] = np.where(
        ghost,
        ents.health[:n],
        regenerate(
            ents.health[:n],
            dead,
            ents.combat_at[:n],
            now_s=now,
            dt=dt,
            weapons=weapons,
            max_health=MAX_HEALTH,
        ),
    )
