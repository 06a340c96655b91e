"""Client-side prediction of the player's own movement, with reconciliation
against the server's authoritative position.

The client applies each input locally at once (no waiting for the round trip),
remembers it until the server's snapshot says it was applied (the payload's
``last_input_seq``), then restarts from the server position and replays the
inputs the server has not seen yet. The distance between what it had predicted
for that input and what the server computed is the prediction error.
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
    """The movement model the zone uses (mirror it for accurate prediction)."""

    speed_mps: float = 5.0


def step(
    position: Vec, move_x: float, move_z: float, yaw: float, *, dt: float, motion: Motion
) -> Vec:
    """Position after one input: intent rotated by yaw, clamped to unit length."""
    length = math.hypot(move_x, move_z)
    if length > 1.0:
        move_x, move_z = move_x / length, move_z / length
    c, s = math.cos(yaw), math.sin(yaw)
    dx = move_x * c + move_z * s
    dz = -move_x * s + move_z * c
    out = position.copy()
    out[0] += dx * motion.speed_mps * dt
    out[2] += dz * motion.speed_mps * dt
    return out


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
    pending: deque[Pending] = field(default_factory=lambda: deque(maxlen=256))
    errors_m: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    reconciled_seq: int = 0

    def apply(self, sequence: int, move_x: float, move_z: float, yaw: float, dt: float) -> None:
        """Predict one input locally (ignored until the first server position)."""
        if self.position is None:
            return
        self.position = step(self.position, move_x, move_z, yaw, dt=dt, motion=self.motion)
        self.pending.append(Pending(sequence, move_x, move_z, yaw, dt, self.position))

    def reconcile(self, server_position: Vec, last_input_seq: int) -> float | None:
        """Adopt the server's position for ``last_input_seq``, replay later inputs;
        the prediction error in metres if this input was predicted here."""
        if self.position is not None and last_input_seq < self.reconciled_seq:
            return None
        self.reconciled_seq = last_input_seq
        error: float | None = None
        while self.pending and self.pending[0].sequence <= last_input_seq:
            done = self.pending.popleft()
            if done.sequence == last_input_seq:
                error = float(np.hypot(*(done.predicted - server_position)[[0, 2]]))
        position = server_position.copy()
        for p in self.pending:
            position = step(position, p.move_x, p.move_z, p.yaw, dt=p.dt, motion=self.motion)
            p.predicted = position
        self.position = position
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
