"""The ground rectangle every layer speaks of (pure; its protobuf form is in :mod:`.bounds`).

Zones own rectangles, the operator splits and merges them, the load tool places
bots in them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rect:
    """A half-open rectangle [min_x, max_x) x [min_z, max_z), metres."""

    min_x: float
    min_z: float
    max_x: float
    max_z: float

    @property
    def width(self) -> float:
        return self.max_x - self.min_x

    @property
    def height(self) -> float:
        return self.max_z - self.min_z

    @property
    def area(self) -> float:
        return self.width * self.height

    def inside(self, outer: Rect) -> bool:
        return (
            outer.min_x <= self.min_x
            and outer.min_z <= self.min_z
            and self.max_x <= outer.max_x
            and self.max_z <= outer.max_z
        )

    def union(self, other: Rect) -> Rect | None:
        """The union if the two rectangles share a full edge, else None."""
        same_z = self.min_z == other.min_z and self.max_z == other.max_z
        same_x = self.min_x == other.min_x and self.max_x == other.max_x
        if same_z and (self.max_x == other.min_x or other.max_x == self.min_x):
            return Rect(
                min(self.min_x, other.min_x), self.min_z, max(self.max_x, other.max_x), self.max_z
            )
        if same_x and (self.max_z == other.min_z or other.max_z == self.min_z):
            return Rect(
                self.min_x, min(self.min_z, other.min_z), self.max_x, max(self.max_z, other.max_z)
            )
        return None

    def at(self, fx: float, fz: float) -> tuple[float, float]:
        """The point at fractions (fx, fz) of the rectangle."""
        return (self.min_x + fx * self.width, self.min_z + fz * self.height)

    def text(self) -> str:
        return f"{self.min_x:g},{self.min_z:g},{self.max_x:g},{self.max_z:g}"
