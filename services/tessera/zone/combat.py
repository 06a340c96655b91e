"""Combat: lag-compensated melee and ranged hits, damage, death, respawn, regeneration.

:class:`History` is a ring buffer of every entity's position per tick (at
least one second). A hit is validated against target positions at the
attacker's *view time*: server time minus one-way latency minus the client's
interpolation delay, rewound by at most ``max_rewind_ms``. Geometry tests are
vectorized over all candidate targets of an attack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]

MELEE = 1
RANGED = 2
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


def melee_targets(origin: F64, yaw: float, targets: F64, weapons: Weapons) -> Bools:
    """Which targets (m, 3) stand within the melee cone in front of ``origin``."""
    d = targets[:, [0, 2]] - origin[[0, 2]]
    dist = np.linalg.norm(d, axis=1)
    facing = np.array([math.sin(yaw), math.cos(yaw)])
    cos_angle = (d @ facing) / np.maximum(dist, 1e-9)
    in_cone = (cos_angle >= math.cos(weapons.melee_half_angle)) | (dist < 0.3)
    out: Bools = np.logical_and(dist <= weapons.melee_range, in_cone)
    return out


def ray_distances(origin: F64, yaw: float, pitch: float, centers: F64, radius: float) -> F64:
    """Distance along the aim ray to each sphere (m, 3) it enters; inf for misses."""
    direction = np.array(
        [math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)]
    )
    oc = centers - origin
    along = oc @ direction
    closest2 = np.einsum("ij,ij->i", oc, oc) - along**2
    inside = radius**2 - closest2
    t = along - np.sqrt(np.maximum(inside, 0.0))
    return np.where((inside >= 0) & (along >= 0), np.maximum(t, 0.0), np.inf)


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
    """The one target an attack hits (nearest), from rewound candidate positions."""
    if candidate_ids.size == 0 or not eligible.any():
        return None
    if attack == MELEE:
        hits = melee_targets(origin, yaw, candidate_pos, weapons) & eligible
        if not hits.any():
            return None
        dist = np.linalg.norm(candidate_pos[:, [0, 2]] - origin[[0, 2]], axis=1)
        best = int(np.argmin(np.where(hits, dist, np.inf)))
        return Hit(attacker, int(candidate_ids[best]), MELEE, weapons.melee_damage)
    eye = origin + np.array([0.0, EYE_HEIGHT, 0.0])
    centers = candidate_pos + np.array([0.0, BODY_CENTER, 0.0])
    t = ray_distances(eye, yaw, pitch, centers, weapons.ranged_radius)
    t = np.where(eligible & (t <= weapons.ranged_range), t, np.inf)
    best = int(np.argmin(t))
    if not math.isfinite(float(t[best])):
        return None
    return Hit(attacker, int(candidate_ids[best]), RANGED, weapons.ranged_damage)


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
