"""Synthetic players: load without clients, for the scale run (docs/ZONE.md,
"Synthetic players").

A synthetic player is a player entity with the :data:`~tessera.zone.entities.SYNTHETIC`
flag bit, so it keeps being synthetic through checkpoints and handoffs. Instead of a
client's inputs it gets a move intent here, every tick: towards one of a few
**hotspots** that drift over the world, plus a fixed offset of its own. Hotspot
positions are a function of the world's bounds, a seed and wall-clock time only,
so every zone of a world steers towards the same places without talking to each
other; as they drift, crowds cross borders and zones split and merge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tessera.wire.geometry import Rect

F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]
ARRIVED_M = 2.0  # closer than this to its target, a synthetic player stands still


@dataclass(frozen=True)
class Hotspots:
    """Where synthetic players gather: ``count`` attractors, each on its own
    Lissajous path over the middle of the world at ``speed`` m/s (roughly), and
    each player within ``spread`` m of its attractor."""

    count: int = 4
    speed: float = 2.0
    spread: float = 60.0
    seed: int = 0


def centres(world: Rect, hotspots: Hotspots, t_s: float) -> F64:
    """The attractors' (x, z) at wall-clock time ``t_s``: (count, 2)."""
    rng = np.random.default_rng(hotspots.seed)
    k = hotspots.count
    phase = rng.uniform(0.0, 2 * math.pi, (k, 2))
    ratio = rng.uniform(0.6, 1.4, (k, 2))  # a different path for each axis
    half = np.array([world.max_x - world.min_x, world.max_z - world.min_z]) * 0.35
    mid = np.array([(world.min_x + world.max_x) / 2, (world.min_z + world.max_z) / 2])
    omega = hotspots.speed / max(float(half.mean()), 1e-9) * ratio
    out: F64 = mid + half * np.sin(omega * t_s + phase)
    return out


def targets(ids: U64, world: Rect, hotspots: Hotspots, t_s: float) -> F64:
    """Each synthetic player's target (x, z): its attractor (chosen by entity id)
    plus its own offset, both stable for the entity's life."""
    where = centres(world, hotspots, t_s)
    h = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing
    attractor = (ids % np.uint64(hotspots.count)).astype(np.int64)
    angle = (h >> np.uint64(40)).astype(np.float64) / float(1 << 24) * 2 * math.pi
    radius = hotspots.spread * np.sqrt(
        ((h >> np.uint64(16)) & np.uint64(0xFFFFFF)).astype(np.float64) / float(1 << 24)
    )
    offset = np.stack([np.sin(angle) * radius, np.cos(angle) * radius], axis=1)
    out: F64 = where[attractor] + offset
    return out


def steer(ground: F64, target: F64) -> tuple[F64, F64]:
    """Move intents (n, 2) and facings (n,) that take players at ``ground`` (x, z)
    to ``target``: full speed ahead, or standing still once there. Like NPC
    intents, yaw is the direction of travel and the local move is straight ahead."""
    d = target - ground
    move = np.zeros((ground.shape[0], 2))
    move[:, 1] = np.where(np.hypot(d[:, 0], d[:, 1]) > ARRIVED_M, 1.0, 0.0)
    return move, np.arctan2(d[:, 0], d[:, 1])
