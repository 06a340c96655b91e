"""Bots: game clients driven by movement patterns, for tests, load and the demo.

A pattern is a pure function of the bot's state, its position and what it sees,
returning the intent for this input tick: random walk, waypoints,
follow-the-crowd (towards the centroid of visible entities) and hotspot (towards
one shared point, with a little noise).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tessera.client.client import GameClient, Intent

Vec = npt.NDArray[np.float64]
ARRIVED_M = 1.0


@dataclass
class BotState:
    """What a pattern remembers between ticks."""

    rng: random.Random
    heading: float = 0.0
    waypoint: int = 0
    ticks: int = 0
    extra: dict[str, float] = field(default_factory=dict)


Pattern = Callable[[BotState, Vec, Sequence[Vec]], Intent]


def towards(position: Vec, target: Sequence[float] | Vec) -> Intent:
    """Full speed towards ``target`` on the ground plane (yaw 0: world frame)."""
    dx, dz = float(target[0] - position[0]), float(target[2] - position[2])
    dist = math.hypot(dx, dz)
    if dist < 1e-6:
        return Intent()
    scale = 1.0 if dist > ARRIVED_M else dist / ARRIVED_M
    return Intent(move_x=dx / dist * scale, move_z=dz / dist * scale)


def random_walk(state: BotState, position: Vec, others: Sequence[Vec]) -> Intent:
    """Keep a heading, turn by a random amount about once a second."""
    state.ticks += 1
    if state.ticks % 20 == 1:
        state.heading += state.rng.uniform(-math.pi / 2, math.pi / 2)
    return Intent(move_x=math.cos(state.heading), move_z=math.sin(state.heading))


def waypoints(points: Sequence[tuple[float, float]]) -> Pattern:
    """Visit ``points`` (x, z) in order, looping."""

    def pattern(state: BotState, position: Vec, others: Sequence[Vec]) -> Intent:
        x, z = points[state.waypoint % len(points)]
        if math.hypot(x - position[0], z - position[2]) < ARRIVED_M:
            state.waypoint += 1
            x, z = points[state.waypoint % len(points)]
        return towards(position, (x, 0.0, z))

    return pattern


def follow_the_crowd(state: BotState, position: Vec, others: Sequence[Vec]) -> Intent:
    """Walk to the centroid of the entities in view; random walk when alone."""
    if not others:
        return random_walk(state, position, others)
    centroid = np.mean(np.asarray(others), axis=0)
    return towards(position, centroid)


def hotspot(center: tuple[float, float], radius_m: float = 5.0) -> Pattern:
    """Converge on ``center`` (x, z) and mill around within ``radius_m``."""

    def pattern(state: BotState, position: Vec, others: Sequence[Vec]) -> Intent:
        state.ticks += 1
        if state.ticks % 20 == 1 or "tx" not in state.extra:
            angle = state.rng.uniform(0, 2 * math.pi)
            r = radius_m * math.sqrt(state.rng.random())
            state.extra["tx"] = center[0] + r * math.cos(angle)
            state.extra["tz"] = center[1] + r * math.sin(angle)
        return towards(position, (state.extra["tx"], 0.0, state.extra["tz"]))

    return pattern


class Bot:
    """A :class:`GameClient` steered by a pattern.

    ``sees_others=False`` hands patterns an empty list instead of the other
    entities' positions, which a swarm of hundreds of bots per process cannot
    afford to build on every input; only follow-the-crowd needs them.
    """

    def __init__(
        self, client: GameClient, pattern: Pattern, *, seed: int = 0, sees_others: bool = True
    ) -> None:
        self.client = client
        self.pattern = pattern
        self.sees_others = sees_others
        self.state = BotState(random.Random(seed))

    def __call__(self, client: GameClient) -> Intent:
        position = client.predictor.position
        if position is None and client.world is not None:
            position = client.world.own_position()
        if position is None:
            return Intent()
        others: Sequence[Vec] = ()
        if self.sees_others and client.world is not None:
            others = list(client.world.others().values())
        return self.pattern(self.state, position, others)

    def start(self) -> None:
        self.client.start(self)
