"""What a system or action handler sees: the zone's arrays for this tick, and the
sink for the events it sends to players."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.game.errors import ModuleError

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
Bools = npt.NDArray[np.bool_]

PLAYER = 1  # kind values (tessera.v1.EntityKind)
NPC = 2
DEAD = 1  # flag bits
GHOST = 2


@dataclass(frozen=True)
class View:
    """Rows ``0..n-1`` of the zone's entities; every array is a view into the
    zone's own, so writes change the entity. Rows are stable within one tick.
    ``simulated`` marks what this zone owns and is alive (not ghosts, not dead)."""

    tick: int
    now_s: float
    id: npt.NDArray[np.uint64]
    kind: I32
    pos: F64  # (n, 3) metres
    vel: F64  # (n, 3) metres per second
    yaw: F64
    health: F64
    team: I32
    flags: I32
    move: F64  # (n, 2) this tick's move intent
    simulated: Bools
    components: Mapping[str, npt.NDArray[Any]]

    @property
    def n(self) -> int:
        return int(self.id.shape[0])

    def __getitem__(self, component: str) -> npt.NDArray[Any]:
        return self.components[component]


class Events:
    """Collects the events a system or handler sends; the zone delivers them on the
    reliable event channel as ``PlayerEvent`` kind ``GAME`` (docs/GAME.md)."""

    def __init__(self, declared: frozenset[str], player_of: Callable[[int], str]) -> None:
        self.declared = declared
        self.player_of = player_of
        self.sent: list[tuple[str, str, float, int]] = []  # (player, name, amount, other)

    def send(self, row: int, name: str, *, amount: float = 0.0, other: int = 0) -> None:
        """Tell the player at ``row`` the declared event ``name``."""
        if name not in self.declared:
            raise ModuleError(f"event {name!r} is not declared by the module")
        player = self.player_of(int(row))
        if not player:
            raise ModuleError(f"row {row} is not a player")
        self.sent.append((player, name, float(amount), int(other)))
