"""Bots: game clients driven by movement patterns, for tests, load and the demo.

A pattern is a pure function of the bot's state, its position and what it sees,
returning the intent for this input tick: random walk, waypoints,
follow-the-crowd (towards the centroid of visible entities) and hotspot (towards
one shared point, with a little noise). A bot with :class:`Arms` also fights:
it faces the nearest visible entity and attacks it (melee when close, ranged
within range) while it keeps walking its pattern.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tessera.client.client import GameClient, Intent

Vec = npt.NDArray[np.float64]
ARRIVED_M = 1.0
# Input action bits (docs/PROTOCOL.md, ClientInput.actions).
ACTION_MELEE = 1
ACTION_RANGED = 2


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


@dataclass(frozen=True)
class Arms:
    """When a fighting bot attacks (inside the zone's default weapon ranges:
    melee 2.5 m, ranged 60 m) and how often: it fights for ``duty`` of every
    ``cycle_s`` (at a phase of its own), so a crowd does not wipe itself out."""

    melee_m: float = 2.0
    ranged_m: float = 40.0
    duty: float = 0.4
    cycle_s: float = 10.0
    # The zone aims from eye height (1.5 m) at the body centre (1 m).
    eye_m: float = 1.5
    body_m: float = 1.0

    def fighting(self, t_s: float, phase: float) -> bool:
        """Whether a bot at ``phase`` (0..1) of the cycle fights at time ``t_s``."""
        return (t_s / self.cycle_s + phase) % 1.0 < self.duty


def attack(position: Vec, move: Intent, target: Vec | None, arms: Arms) -> Intent:
    """``move`` (world frame, yaw 0) turned to face ``target`` and attacking it:
    melee within ``arms.melee_m``, ranged within ``arms.ranged_m``, aimed at its
    body centre; ``move`` unchanged when there is no target in range. The walk
    keeps its world direction (the move is re-expressed in the facing frame)."""
    if target is None:
        return move
    dx, dz = float(target[0] - position[0]), float(target[2] - position[2])
    dist = math.hypot(dx, dz)
    if dist > arms.ranged_m:
        return move
    yaw = math.atan2(dx, dz)
    s, c = math.sin(yaw), math.cos(yaw)
    drop = float(target[1] - position[1]) + arms.body_m - arms.eye_m
    return Intent(
        move_x=move.move_x * c - move.move_z * s,
        move_z=move.move_x * s + move.move_z * c,
        yaw=yaw,
        pitch=math.atan2(drop, dist),
        actions=ACTION_MELEE if dist <= arms.melee_m else ACTION_RANGED,
    )


def nearest(positions: Vec, own: int) -> int | None:
    """Row of the entity nearest (on the ground) to row ``own``; None if alone."""
    if positions.shape[0] < 2:
        return None
    d = positions[:, [0, 2]] - positions[own, [0, 2]]
    d2 = np.einsum("ij,ij->i", d, d)
    d2[own] = np.inf
    return int(np.argmin(d2))


class Bot:
    """A :class:`GameClient` steered by a pattern, fighting with ``arms``.

    What the bot sees (its own position, the nearest other entity) is read once
    per decoded snapshot, not per input. ``sees_others=False`` hands patterns an
    empty list instead of the other entities' positions, which a swarm of
    hundreds of bots per process cannot afford to build; only follow-the-crowd
    needs them. Without prediction the bot steers by the server's position.
    """

    def __init__(
        self,
        client: GameClient,
        pattern: Pattern,
        *,
        seed: int = 0,
        sees_others: bool = True,
        arms: Arms | None = None,
    ) -> None:
        self.client = client
        self.pattern = pattern
        self.sees_others = sees_others
        self.arms = arms
        self.state = BotState(random.Random(seed))
        self.phase = self.state.rng.random()
        self.position: Vec | None = None
        self.target: Vec | None = None
        self.others: Sequence[Vec] = ()
        self._seen = -1

    def look(self, client: GameClient) -> None:
        """Refresh what the bot sees from the newest decoded snapshot."""
        world = client.world
        if world is None or world.applied == self._seen:
            return
        self._seen = world.applied
        table = world.latest
        try:
            own = table.index(world.entity_id)
        except KeyError:
            return
        positions = table.positions(world.quant)
        self.position = positions[own]
        if self.arms is not None:
            row = nearest(positions, own)
            self.target = None if row is None else positions[row]
        if self.sees_others:
            self.others = [p for i, p in enumerate(positions) if i != own]

    def __call__(self, client: GameClient) -> Intent:
        self.look(client)
        position = client.predictor.position if client.predict else None
        if position is None:
            position = self.position
        if position is None:
            return Intent()
        move = self.pattern(self.state, position, self.others)
        if self.arms is None or not self.arms.fighting(time.monotonic(), self.phase):
            return move
        return attack(position, move, self.target, self.arms)

    def start(self) -> None:
        self.client.start(self)
