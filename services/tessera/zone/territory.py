"""Where the zone stands in its world: its bounds, lifecycle state and zone map.

The one piece of state the zone shell's parts share. The servicer changes the
bounds and the state (start, SetBounds, Drain); the border adopts newer zone
maps; the border and the ghost exchange read all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tessera.v1 import zone_pb2
from tessera.wire.geometry import Rect
from tessera.zone.topology import Topology

State = zone_pb2.ZoneState


@dataclass
class Territory:
    """This zone's place in the world."""

    zone: str
    world: Rect  # the world's bounds
    bounds: Rect | None  # this zone's rectangle; None while standing by
    state: zone_pb2.ZoneState.ValueType = State.ZONE_STATE_STARTING
    topo: Topology | None = None  # the newest zone map seen
    bounds_version: int = 0  # the map version of the last SetBounds

    @property
    def map_version(self) -> int:
        """The newest map version this zone knows, from SetBounds or the zone map."""
        return max(self.bounds_version, self.topo.version if self.topo else 0)

    def adopt(self, topo: Topology) -> bool:
        """Keep a zone map if it is newer than the one held; True if it was."""
        if self.topo is not None and topo.version <= self.topo.version:
            return False
        self.topo = topo
        return True

    def nearby(self, margin: float) -> list[tuple[str, Rect]]:
        """The zones within ``margin`` of this one, with their rectangles."""
        if self.topo is None:
            return []
        return [(a.zone, a.rect) for a in self.topo.neighbours(self.zone, margin)]
