"""The client's view of the world: decoded snapshots, baselines for deltas,
acks, interpolation of other entities (100 ms behind by default), and each
entity's latest state with its replicated components.

Pure bookkeeping over :mod:`tessera.wire.snapshot`; no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tessera.v1 import relay_pb2
from tessera.wire.snapshot import (
    FLAGS,
    HEALTH,
    KIND,
    TEAM,
    Decoded,
    EntityTable,
    Quantization,
    Replicated,
    SnapshotError,
    decode,
)

BASELINES = 64
HISTORY = 32


@dataclass(frozen=True)
class Frame:
    """A decoded snapshot at a server time."""

    server_time_ms: float
    tick: int
    table: EntityTable


@dataclass(frozen=True)
class Entity:
    """One entity as the latest snapshot has it, in world units. ``components``
    holds the replicated components the snapshot carries for it (those whose
    tiers include its distance from this client), dequantized."""

    id: int
    position: npt.NDArray[np.float64]
    velocity: npt.NDArray[np.float64]
    yaw: float
    health: int
    flags: int
    kind: int
    team: int
    components: dict[str, float]


class WorldView:
    """Snapshots of one client, turned into entity positions; ``schema`` are the
    replicated components announced at connect (``Accepted.game.components``)."""

    def __init__(
        self,
        quant: Quantization,
        *,
        entity_id: int,
        interp_delay_ms: float = 100.0,
        schema: Sequence[Replicated] = (),
    ):
        self.quant = quant
        self.schema = tuple(schema)
        self.entity_id = entity_id
        self.interp_delay_ms = interp_delay_ms
        self.stream = 0
        self.baselines: dict[int, EntityTable] = {}
        self.latest_sequence = 0
        self.frames: deque[Frame] = deque(maxlen=HISTORY)
        self.decode_errors = 0
        self.missing_baselines = 0
        self.applied = 0
        self.last_input_seq = 0

    def rescheme(self, schema: Sequence[Replicated]) -> None:
        """Decode by another zone's component schema from now on (the session
        moved to a zone whose game module differs): baselines and frames decoded
        by the old one are dropped; that zone's stream starts with a full snapshot."""
        self.schema = tuple(schema)
        self.baselines.clear()
        self.frames.clear()
        self.latest_sequence = 0

    def apply(self, snap: relay_pb2.Snapshot) -> Decoded | None:
        """Decode a snapshot against its baseline; None if it cannot be used."""
        if snap.stream != self.stream:
            # A new sequence space (zone restart, handoff): old baselines are void.
            self.stream = snap.stream
            self.baselines.clear()
            self.latest_sequence = 0
        baseline: EntityTable | None = None
        if snap.baseline:
            baseline = self.baselines.get(snap.baseline)
            if baseline is None:
                self.missing_baselines += 1
                return None
        try:
            decoded = decode(snap.payload, baseline, self.schema)
        except SnapshotError:
            self.decode_errors += 1
            return None
        self.baselines[snap.sequence] = decoded.table
        if len(self.baselines) > BASELINES:
            for old in sorted(self.baselines)[: len(self.baselines) - BASELINES]:
                del self.baselines[old]
        if snap.sequence > self.latest_sequence:
            self.latest_sequence = snap.sequence
            self.frames.append(Frame(snap.server_time_ms, snap.tick, decoded.table))
            self.last_input_seq = decoded.last_input_seq
        self.applied += 1
        return decoded

    def ack(self) -> relay_pb2.ClientMessage:
        """The ack for the newest decoded snapshot."""
        return relay_pb2.ClientMessage(
            ack=relay_pb2.ClientAck(stream=self.stream, sequence=self.latest_sequence)
        )

    @property
    def latest(self) -> EntityTable:
        return self.frames[-1].table if self.frames else EntityTable()

    def own_position(self) -> npt.NDArray[np.float64] | None:
        """The server's latest position of this client's own entity."""
        table = self.latest
        try:
            i = table.index(self.entity_id)
        except KeyError:
            return None
        pos: npt.NDArray[np.float64] = table.positions(self.quant)[i]
        return pos

    def own_state(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
        """The server's latest position and velocity of this client's own entity."""
        table = self.latest
        try:
            i = table.index(self.entity_id)
        except KeyError:
            return None
        return table.positions(self.quant)[i], table.velocities(self.quant)[i]

    def entity(self, entity_id: int) -> Entity | None:
        """An entity of the latest snapshot (None if it is not in view)."""
        table = self.latest
        try:
            i = table.index(entity_id)
        except KeyError:
            return None
        row = table.rows[i]
        return Entity(
            id=entity_id,
            position=table.positions(self.quant)[i],
            velocity=table.velocities(self.quant)[i],
            yaw=float(table.yaws(self.quant)[i]) % (2 * math.pi),
            health=int(row[HEALTH]),
            flags=int(row[FLAGS]),
            kind=int(row[KIND]),
            team=int(row[TEAM]),
            components=table.components(i, self.schema),
        )

    def entities(self) -> dict[int, Entity]:
        """Every entity of the latest snapshot, this client's own included."""
        found = (self.entity(int(eid)) for eid in self.latest.ids)
        return {e.id: e for e in found if e is not None}

    def others(self) -> dict[int, npt.NDArray[np.float64]]:
        """Latest positions of every other visible entity."""
        table = self.latest
        positions = table.positions(self.quant)
        return {
            int(eid): positions[i] for i, eid in enumerate(table.ids) if int(eid) != self.entity_id
        }

    def interpolated(self, server_now_ms: float) -> dict[int, npt.NDArray[np.float64]]:
        """Positions of other entities at ``server_now_ms - interp_delay_ms``,
        linearly interpolated between the two frames around that time."""
        return interpolate(
            list(self.frames), server_now_ms - self.interp_delay_ms, self.quant, skip=self.entity_id
        )


def interpolate(
    frames: list[Frame], render_ms: float, quant: Quantization, *, skip: int = -1
) -> dict[int, npt.NDArray[np.float64]]:
    """Entity positions at ``render_ms``; entities only in one frame take that frame's."""
    if not frames:
        return {}
    after = next((i for i, f in enumerate(frames) if f.server_time_ms >= render_ms), None)
    if after is None or after == 0:
        frame = frames[-1] if after is None else frames[0]
        pos = frame.table.positions(quant)
        return {int(e): pos[i] for i, e in enumerate(frame.table.ids) if int(e) != skip}
    a, b = frames[after - 1], frames[after]
    span = b.server_time_ms - a.server_time_ms
    t = 0.0 if span <= 0 else (render_ms - a.server_time_ms) / span
    pa, pb = a.table.positions(quant), b.table.positions(quant)
    index_a = {int(e): i for i, e in enumerate(a.table.ids)}
    out: dict[int, npt.NDArray[np.float64]] = {}
    for j, e in enumerate(b.table.ids):
        eid = int(e)
        if eid == skip:
            continue
        i = index_a.get(eid)
        out[eid] = pb[j] if i is None else pa[i] + (pb[j] - pa[i]) * t
    return out
