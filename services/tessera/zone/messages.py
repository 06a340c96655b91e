"""The zone's edge: tessera.v1 messages turned into the core's plain data and back.

The core (simulation, entities, inputs, handoff, topology, ...) never sees a
protobuf message; the shell (servicer, links, border) converts here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tessera.v1 import zone_pb2
from tessera.zone.inputs import Inputs


def inputs(batch: Sequence[zone_pb2.PlayerInput]) -> Inputs:
    """A relay's inputs as columns (one list per field, not a tuple per input:
    thousands of live tuples would trigger a garbage collection pass inside a tick)."""
    return Inputs(
        players=[i.player_id for i in batch],
        sequence=np.array([i.sequence for i in batch], np.int64),
        move_x=np.array([i.move_x for i in batch], np.float64),
        move_z=np.array([i.move_z for i in batch], np.float64),
        yaw=np.array([i.yaw for i in batch], np.float64),
        pitch=np.array([i.pitch for i in batch], np.float64),
        actions=np.array([i.actions for i in batch], np.int64),
        rtt_ms=np.array([i.rtt_ms for i in batch], np.float64),
        interp_ms=np.array([i.interp_delay_ms for i in batch], np.float64),
        client_time_ms=np.array([i.client_time_ms for i in batch], np.float64),
    )
