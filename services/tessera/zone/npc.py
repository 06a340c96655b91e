"""NPC behaviour: wander around a home point, chase the nearest living player in
range and swing at it when close. Produces move intents for the shared movement
and combat systems, so NPCs add realistic load without clients. The nearest
player is :func:`tessera.zone.kernels.nearest`, a compiled grid search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tessera.zone import kernels
from tessera.zone.inputs import ACTION_MELEE

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Behaviour:
    """Wander and chase parameters."""

    wander_radius: float = 30.0
    chase_radius: float = 15.0
    attack_range: float = 2.0
    walk: float = 0.4  # fraction of max speed while wandering


def think(
    pos: F64,
    home: F64,
    waypoint: F64,
    player_pos: F64,
    rng: np.random.Generator,
    *,
    behaviour: Behaviour,
) -> tuple[F64, F64, F64, I32]:
    """Move intents (n, 2), facings, new waypoints and action bits for n NPCs.

    Intents are expressed with yaw = direction of travel, so the local move
    vector is straight ahead (0, speed).
    """
    n = pos.shape[0]
    ground = pos[:, [0, 2]]
    waypoint = waypoint.copy()
    reached = np.linalg.norm(waypoint - ground, axis=1) < 1.0
    if reached.any():
        angle = rng.uniform(0, 2 * math.pi, int(reached.sum()))
        radius = behaviour.wander_radius * np.sqrt(rng.uniform(0, 1, angle.size))
        waypoint[reached] = home[reached] + np.stack(
            [np.sin(angle) * radius, np.cos(angle) * radius], axis=1
        )
    target = waypoint.copy()
    speed = np.full(n, behaviour.walk)
    actions = np.zeros(n, np.int32)
    if player_pos.shape[0]:
        idx = np.empty(n, np.int64)
        dist = np.empty(n, np.float64)
        kernels.nearest(
            np.ascontiguousarray(player_pos[:, [0, 2]], np.float64),
            np.ascontiguousarray(ground, np.float64),
            behaviour.chase_radius,
            idx,
            dist,
        )
        chasing = idx >= 0
        target[chasing] = player_pos[idx[chasing]][:, [0, 2]]
        speed[chasing] = 1.0
        actions[chasing & (dist <= behaviour.attack_range)] = ACTION_MELEE
        speed[chasing & (dist <= behaviour.attack_range * 0.6)] = 0.0
    d = target - ground
    yaw = np.arctan2(d[:, 0], d[:, 1])
    move = np.zeros((n, 2))
    move[:, 1] = speed
    return move, yaw, waypoint, actions
