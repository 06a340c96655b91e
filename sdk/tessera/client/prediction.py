"""Client-side prediction of the player's own movement, with reconciliation
against the server's authoritative state.

The client applies each input locally at once (no waiting for the round trip),
remembers it until the server's snapshot says it was applied (the payload's
``last_input_seq``), then restarts from the server's position and velocity and
replays the inputs the server has not seen yet. The distance between what it
had predicted for that input and what the server computed is the prediction
error.

The model mirrors the zone's movement (tessera.zone.movement): the move intent
is in the player's frame (yaw 0 faces +z, move_z forward, move_x right), the
ground velocity accelerates towards ``intent * max_speed`` by at most
``accel * dt`` and is capped at ``max_speed``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Vec = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Motion:
    """The zone's movement limits (defaults match the zone's)."""

    max_speed: float = 6.0
    accel: float = 40.0


def step(
    state: tuple[Vec, Vec],
    move_x: float,
    move_z: float,
    yaw: float,
    *,
    dt: float,
    motion: Motion,
) -> tuple[Vec, Vec]:
    """(position, velocity) after one input of ``dt`` seconds."""
    position, velocity = state
    length = math.hypot(move_x, move_z)
    if length > 1.0:
        move_x, move_z = move_x / length, move_z / length
    s, c = math.sin(yaw), math.cos(yaw)
    want_x = (move_x * c + move_z * s) * motion.max_speed
    want_z = (-move_x * s + move_z * c) * motion.max_speed
    dvx, dvz = want_x - velocity[0], want_z - velocity[2]
    dv = math.hypot(dvx, dvz)
    limit = motion.accel * dt
    if dv > limit:
        dvx, dvz = dvx * limit / dv, dvz * limit / dv
    vx, vz = velocity[0] + dvx, velocity[2] + dvz
    speed = math.hypot(vx, vz)
    if speed > motion.max_speed:
        vx, vz = vx * motion.max_speed / speed, vz * motion.max_speed / speed
    new_velocity = np.array([vx, velocity[1], vz])
    new_position = position.copy()
    new_position[0] += vx * dt
    new_position[2] += vz * dt
    return new_position, new_velocity


@dataclass
class Pending:
    sequence: int
    move_x: float
    move_z: float
    yaw: float
    dt: float
    predicted: Vec


@dataclass
class Predictor:
    """Predicted own position; see the module docstring."""

    motion: Motion = field(default_factory=Motion)
    position: Vec | None = None
    velocity: Vec = field(default_factory=lambda: np.zeros(3))
    pending: deque[Pending] = field(default_factory=lambda: deque(maxlen=256))
    errors_m: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    reconciled_seq: int = 0

    def apply(self, sequence: int, move_x: float, move_z: float, yaw: float, dt: float) -> None:
        """Predict one input locally (ignored until the first server position)."""
        if self.position is None:
            return
        self.position, self.velocity = step(
            (self.position, self.velocity), move_x, move_z, yaw, dt=dt, motion=self.motion
        )
        self.pending.append(Pending(sequence, move_x, move_z, yaw, dt, self.position))

    def reconcile(
        self, server_position: Vec, last_input_seq: int, server_velocity: Vec | None = None
    ) -> float | None:
        """Adopt the server's state for ``last_input_seq`` and replay later inputs;
        the prediction error in metres if this input was predicted here."""
        if self.position is not None and last_input_seq < self.reconciled_seq:
            return None
        self.reconciled_seq = last_input_seq
        error: float | None = None
        while self.pending and self.pending[0].sequence <= last_input_seq:
            done = self.pending.popleft()
            if done.sequence == last_input_seq:
                error = float(np.hypot(*(done.predicted - server_position)[[0, 2]]))
        state = (
            server_position.copy(),
            np.zeros(3) if server_velocity is None else server_velocity.copy(),
        )
        for p in self.pending:
            state = step(state, p.move_x, p.move_z, p.yaw, dt=p.dt, motion=self.motion)
            p.predicted = state[0]
        self.position, self.velocity = state
        if error is not None:
            self.errors_m.append(error)
        return error

    def error_stats(self) -> dict[str, float]:
        """Mean, p95 and max prediction error (metres) over recent reconciliations."""
        if not self.errors_m:
            return {"mean_m": 0.0, "p95_m": 0.0, "max_m": 0.0, "samples": 0.0}
        values = np.asarray(self.errors_m)
        return {
            "mean_m": float(values.mean()),
            "p95_m": float(np.percentile(values, 95)),
            "max_m": float(values.max()),
            "samples": float(values.size),
        }
