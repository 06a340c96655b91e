"""Server-authoritative kinematic movement, vectorized over all entities.

Inputs are intents (a move vector in the entity's frame and a facing); the
zone turns them into a desired velocity, accelerates towards it at most
``accel`` m/s², caps ground speed at ``max_speed`` and integrates. A final
guard clamps any horizontal step longer than one tick at max speed (a bug or a
bad restore must never teleport an entity) and reports which entities it hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tessera.wire.geometry import Rect

F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Limits:
    """Movement limits shared by players and NPCs."""

    max_speed: float = 6.0
    accel: float = 40.0
    jump_speed: float = 5.0
    gravity: float = 9.81


def desired_velocity(move: F64, yaw: F64, max_speed: float) -> F64:
    """World-space ground velocity (n, 2) as (vx, vz) for local move intents.

    Yaw 0 faces +z, increasing towards +x; move_z is forward, move_x is right.
    """
    s, c = np.sin(yaw), np.cos(yaw)
    out = np.empty((move.shape[0], 2))
    out[:, 0] = (move[:, 0] * c + move[:, 1] * s) * max_speed
    out[:, 1] = (-move[:, 0] * s + move[:, 1] * c) * max_speed
    return out


def integrate(
    pos: F64, vel: F64, desired: F64, jump: Bools, *, limits: Limits, dt: float, area: Rect
) -> tuple[F64, F64, F64]:
    """One step for n entities; returns new positions, velocities and, per entity,
    the metres the teleport guard had to cut from its step (0 when none).

    Entities already outside ``area`` (the zone's bounds shrank in a split) stay
    where they are and may not move further out, only back in: pulling them onto
    the edge would put them inside this zone's bounds, and they would never be
    handed to the zone that now owns their position.
    """
    vel = vel.copy()
    ground = vel[:, [0, 2]]
    dv = desired - ground
    dv_len = np.linalg.norm(dv, axis=1)
    max_dv = limits.accel * dt
    scale = np.where(dv_len > max_dv, max_dv / np.maximum(dv_len, 1e-12), 1.0)
    ground = ground + dv * scale[:, None]
    speed = np.linalg.norm(ground, axis=1)
    over = speed > limits.max_speed
    ground[over] *= (limits.max_speed / speed[over])[:, None]
    vel[:, 0], vel[:, 2] = ground[:, 0], ground[:, 1]

    on_ground = pos[:, 1] <= 0.0
    vel[:, 1] = np.where(jump & on_ground, limits.jump_speed, vel[:, 1])
    vel[:, 1] -= limits.gravity * dt

    new = pos + vel * dt
    landed = new[:, 1] <= 0.0
    new[landed, 1] = 0.0
    vel[landed, 1] = 0.0
    new, excess = guard(pos, clamp(new, area, pos), limits.max_speed * dt)
    return new, vel, excess


def clamp(pos: F64, area: Rect, old: F64) -> F64:
    """Positions kept on the half-open rectangle (x and z only), each grown to hold
    the entity's old position: an entity outside may stay but not go further out."""
    out = pos.copy()
    for axis, lo, hi in ((0, area.min_x, area.max_x), (2, area.min_z, area.max_z)):
        top = np.nextafter(hi, lo)
        out[:, axis] = np.clip(
            pos[:, axis], np.minimum(lo, old[:, axis]), np.maximum(top, old[:, axis])
        )
    return out


def guard(old: F64, new: F64, max_step: float) -> tuple[F64, F64]:
    """Clamp horizontal steps longer than ``max_step`` back onto the allowed circle;
    also returns the metres cut from each step."""
    step = new[:, [0, 2]] - old[:, [0, 2]]
    length = np.linalg.norm(step, axis=1)
    clamped = length > max_step * (1 + 1e-9)
    excess = np.where(clamped, length - max_step, 0.0)
    if clamped.any():
        new = new.copy()
        k = (max_step / length[clamped])[:, None]
        new[clamped, 0] = old[clamped, 0] + step[clamped, 0] * k[:, 0]
        new[clamped, 2] = old[clamped, 2] + step[clamped, 1] * k[:, 0]
    return new, excess
