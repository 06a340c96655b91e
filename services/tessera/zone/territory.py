"""Where the zone stands in its world: its bounds, lifecycle state and zone map.

The one piece of state the zone shell's parts share. The servicer changes the
bounds and the state (start, SetBounds, Drain); the border adopts newer zone
maps; the border and the ghost exchange read all of it. The rules for what the
operator may command (which bounds, which map versions, which drain targets) are
here too, as methods returning why a command is refused.
"""

from __future__ import annotations

import math
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

    def newer(self, version: int) -> bool:
        """Whether a zone map of ``version`` is newer than the one held."""
        return self.topo is None or version > self.topo.version

    def adopt(self, topo: Topology) -> bool:
        """Keep a zone map if it is newer than the one held; True if it was."""
        if not self.newer(topo.version):
            return False
        self.topo = topo
        return True

    def bounds_refusal(self, rect: Rect, map_version: int) -> tuple[str, str, str] | None:
        """Why SetBounds(rect, map_version) is refused, as (field, reason, message), or
        None. Bounds must be a non-empty rectangle inside the world. Versions only
        move forward the operator's way: it publishes the zone map first, then sends
        its version, so a version older than the newest this zone knows is stale, and
        one newer than the zone map held (refreshed just before) was never published:
        accepting it would refuse every real version after it."""
        w = self.world
        values = (rect.min_x, rect.min_z, rect.max_x, rect.max_z)
        if not (
            all(math.isfinite(v) for v in values)
            and w.min_x <= rect.min_x < rect.max_x <= w.max_x
            and w.min_z <= rect.min_z < rect.max_z <= w.max_z
        ):
            return (
                "bounds",
                "BAD_BOUNDS",
                "bounds must be a non-empty rectangle inside the world bounds",
            )
        if map_version < self.map_version:
            message = f"map version {map_version} is older than {self.map_version}"
            return "map_version", "STALE_MAP_VERSION", message
        published = self.topo.version if self.topo else 0
        if map_version > published:
            message = (
                f"map version {map_version} is newer than the world's zone map"
                f" ({published}): publish the map first"
            )
            return "map_version", "UNPUBLISHED_MAP_VERSION", message
        return None

    def drain_refusal(
        self, target_world: str, target: str, *, world: str, alive: bool, active: bool = False
    ) -> tuple[str, str] | None:
        """Why a drain into ``target`` of ``target_world`` ("" = this zone's ``world``)
        is refused, as (reason, message), or None. No target drains by position under
        the zone map. A target must be another zone of this world whose heartbeat is
        ``alive`` and that is either in this world's zone map (the operator's drains)
        or ``active`` by its heartbeat (a zone started outside the map): players are
        never handed to a zone that does not exist."""
        if not target:
            return None
        if target_world and target_world != world:
            return "BAD_TARGET", "the drain target must be a zone of this world"
        if target == self.zone:
            return "BAD_TARGET", "a zone cannot drain into itself"
        mapped = self.topo is not None and self.topo.area(target) is not None
        if not alive or not (mapped or active):
            return "UNKNOWN_TARGET", "the drain target is not an active zone of the world"
        return None

    def nearby(self, margin: float) -> list[tuple[str, Rect]]:
        """The zones within ``margin`` of this one, with their rectangles."""
        if self.topo is None:
            return []
        return [(a.zone, a.rect) for a in self.topo.neighbours(self.zone, margin)]
