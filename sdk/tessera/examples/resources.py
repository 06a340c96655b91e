"""Resource nodes for the open world (docs/GAME.md's tutorial module).

Nodes stand at the centres of a ``SPACING`` grid. A player who stands within
``RADIUS`` of one collects a resource into ``resources``, a persisted counter,
then waits ``COOLDOWN_S`` before the next; the check is one numba kernel over
all entities. The ``drop`` action gives resources away.
"""

from __future__ import annotations

from collections.abc import Mapping

import numba
import numpy as np
import numpy.typing as npt

from tessera.game import (
    PLAYER,
    Action,
    Argument,
    Component,
    Events,
    Module,
    Replication,
    System,
    View,
)

SPACING = 40.0  # metres between nodes
RADIUS = 2.0  # metres from a node's centre to collect
COOLDOWN_S = 1.0  # seconds between two collections of a player


@numba.njit(cache=True, nogil=True)
def gather(  # noqa: PLR0917 (numba kernels take positional arguments)
    pos: npt.NDArray[np.float64],
    simulated: npt.NDArray[np.bool_],
    kind: npt.NDArray[np.int32],
    cooldown: npt.NDArray[np.float32],
    count: npt.NDArray[np.uint32],
    dt: float,
    out: npt.NDArray[np.int64],
) -> int:
    """Count down every cooldown; a player at a node with none left collects one.
    Writes the collecting rows into ``out``; returns how many."""
    k = 0
    for i in range(pos.shape[0]):
        cooldown[i] = max(cooldown[i] - dt, 0.0)
        if not simulated[i] or kind[i] != PLAYER or cooldown[i] > 0.0:
            continue
        dx = pos[i, 0] - (np.floor(pos[i, 0] / SPACING) + 0.5) * SPACING
        dz = pos[i, 2] - (np.floor(pos[i, 2] / SPACING) + 0.5) * SPACING
        if dx * dx + dz * dz <= RADIUS * RADIUS:
            count[i] += 1
            cooldown[i] = COOLDOWN_S
            out[k] = i
            k += 1
    return k


def collect(view: View, dt: float, events: Events) -> None:
    """The system: run the kernel, tell each collector their new count."""
    count = view["resources"]
    rows = np.empty(view.n, np.int64)
    k = gather(view.pos, view.simulated, view.kind, view["gather_cooldown"], count, dt, rows)
    for row in rows[:k].tolist():
        events.send(row, "collected", amount=float(count[row]))


def drop(view: View, row: int, args: Mapping[str, float], events: Events) -> None:
    """The ``drop`` action: give away up to ``amount`` resources."""
    count = view["resources"]
    count[row] -= min(int(count[row]), int(args["amount"]))
    events.send(row, "dropped", amount=float(count[row]))


GAME = Module(
    name="resources",
    components=(
        Component(
            "resources",
            "uint32",
            persist=True,
            replicate=Replication(step=1.0, bits=16, tiers=("near",)),
        ),
        Component("gather_cooldown", "float32"),
    ),
    systems=(System("collect", collect),),
    actions=(
        Action(
            1, "drop", drop, arguments=(Argument("amount", 1, 1000, integer=True),), rate_per_s=2
        ),
    ),
    events=("collected", "dropped"),
)
