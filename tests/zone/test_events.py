"""Event kinds: the core's numbers are the wire's PlayerEvent.Kind values."""

from __future__ import annotations

from tessera.v1 import zone_pb2
from tessera.zone import events


def test_kinds_match_the_wire_enum() -> None:
    for name, value in zone_pb2.PlayerEvent.Kind.items():
        if name != "KIND_UNSPECIFIED":
            assert getattr(events, name) == value
