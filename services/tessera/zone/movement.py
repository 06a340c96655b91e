"""Server-authoritative kinematic movement over all entities (a compiled step).

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
from tessera.zone import kernels

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
    handed to the zone that now owns their position. The step is the compiled
    :func:`tessera.zone.kernels.integrate`.
    """
    n = pos.shape[0]
    new = np.empty((n, 3))
    vel = np.array(vel, np.float64, copy=True).reshape(n, 3)
    excess = np.empty(n)
    box = np.array(
        [
            area.min_x,
            np.nextafter(area.max_x, area.min_x),
            area.min_z,
            np.nextafter(area.max_z, area.min_z),
        ]
    )
    kernels.integrate(
        np.ascontiguousarray(pos, np.float64).reshape(n, 3),
        vel,
        np.ascontiguousarray(desired, np.float64).reshape(n, 2),
        np.ascontiguousarray(jump, np.bool_),
        limits.max_speed,
        limits.accel,
        limits.jump_speed,
        limits.gravity,
        dt,
        box,
        new,
        excess,
    )
    return new, vel, excess


def guard(old: F64, new: F64, max_step: float) -> tuple[F64, F64]:
    """Clamp horizontal steps longer than ``max_step`` back onto the allowed circle;
    also returns the metres cut from each step."""
    n = old.shape[0]
    out = np.array(new, np.float64, copy=True).reshape(n, 3)
    excess = np.empty(n)
    kernels.guard(np.ascontiguousarray(old, np.float64).reshape(n, 3), out, max_step, excess)
    return out, excess
