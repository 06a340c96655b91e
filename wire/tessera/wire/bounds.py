"""``tessera.v1.Bounds``, the protobuf form of a :class:`~tessera.wire.geometry.Rect`.

The one converter between the two, kept apart from the pure geometry so a
simulation core can use rectangles without importing generated protobuf code.
"""

from __future__ import annotations

from tessera.v1 import common_pb2
from tessera.wire.geometry import Rect


def to_bounds(rect: Rect) -> common_pb2.Bounds:
    return common_pb2.Bounds(min_x=rect.min_x, min_z=rect.min_z, max_x=rect.max_x, max_z=rect.max_z)


def from_bounds(bounds: common_pb2.Bounds) -> Rect:
    return Rect(bounds.min_x, bounds.min_z, bounds.max_x, bounds.max_z)
