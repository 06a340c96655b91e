"""The console's only Redis code: it reads a world (zone heartbeats through the
shared readers of :mod:`tessera.common.store`, the zone map, the scaling event
stream, the matchmaker's instance requests) and converts each record into the
plain rows of :mod:`tessera.console.frame`. It writes nothing but the audit log
(:class:`tessera.common.audit.AuditLog`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import DecodeError

from tessera.common import store
from tessera.common.store import Client
from tessera.console.frame import MatchRow, ZoneRow
from tessera.v1 import zone_pb2
from tessera.wire.bounds import from_bounds
from tessera.wire.geometry import Rect

MATCHES = 200  # newest instance requests read per frame


@dataclass(frozen=True)
class MapView:
    """The zone map's version, world bounds and open-world rectangles."""

    version: int = 0
    bounds: Rect | None = None
    zones: dict[str, Rect] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """What Redis holds of a world at one moment."""

    zones: list[ZoneRow]
    zone_map: MapView
    events: list[tuple[str, dict[str, str]]]
    matches: list[MatchRow]


def zone_row(name: str, s: zone_pb2.ZoneStatus) -> ZoneRow:
    """A heartbeat as a :class:`ZoneRow` (converted at the edge)."""
    return ZoneRow(
        name=name,
        state=_state(s.state),
        bounds=from_bounds(s.bounds) if s.HasField("bounds") else None,
        players=int(s.players),
        tick_p50_ms=float(s.tick_p50_ms),
        tick_p99_ms=float(s.tick_p99_ms),
        overload_level=int(s.overload_level),
        handoffs_received=int(s.handoffs_received),
        drain_remaining=int(s.drain_remaining),
        updated_at_ms=float(s.updated_at_ms),
        instance=s.instance,
        address=s.address,
        xs=np.asarray(s.sample_x, np.float32),
        zs=np.asarray(s.sample_z, np.float32),
    )


def _state(value: zone_pb2.ZoneState.ValueType) -> str:
    """``ZONE_STATE_ACTIVE`` -> ``ACTIVE``; UNKNOWN for a value this build lacks."""
    try:
        return zone_pb2.ZoneState.Name(value).removeprefix("ZONE_STATE_")
    except ValueError:
        return "UNKNOWN"


def map_view(raw: bytes | None) -> MapView:
    """The stored ZoneMap as a :class:`MapView`; empty when missing or torn."""
    if raw is None:
        return MapView()
    try:
        m = zone_pb2.ZoneMap.FromString(raw)
    except DecodeError:
        return MapView()
    zones = {
        e.zone: from_bounds(e.bounds)
        for e in m.zones
        if e.bounds.max_x > e.bounds.min_x and e.bounds.max_z > e.bounds.min_z
    }
    bounds = from_bounds(m.world_bounds) if m.HasField("world_bounds") else None
    return MapView(int(m.version), bounds, zones)


def match_rows(entries: list[tuple[bytes | str, dict[bytes | str, bytes | str]]]) -> list[MatchRow]:
    """The newest request per match from instance-stream entries, newest first."""
    seen: dict[str, MatchRow] = {}
    for entry_id, raw in entries:
        f = {_text(k): _text(v) for k, v in raw.items()}
        match = f.get("match", "")
        if not match or match in seen:
            continue
        at_ms = f.get("at_ms") or _text(entry_id).partition("-")[0]
        seen[match] = MatchRow(match, f.get("zone", ""), f.get("kind", ""), float(at_ms or 0))
    return list(seen.values())


class ConsoleStore:
    """Reads one world for the console."""

    def __init__(self, redis: Client, world: str, *, events: int = 100) -> None:
        self.redis = redis
        self.world = world
        self.keys = store.WorldKeys(world)
        self.events = events

    async def snapshot(self) -> Snapshot:
        """Heartbeats, zone map, the newest scaling events and instance requests."""
        heartbeats = await store.read_heartbeats(self.redis, self.world)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.zone_map)
            pipe.xrevrange(self.keys.events, count=self.events)
            pipe.xrevrange(store.instances_stream(self.world), count=MATCHES)
            raw_map, events, instances = await pipe.execute()
        return Snapshot(
            zones=[zone_row(name, s) for name, s in heartbeats.items()],
            zone_map=map_view(raw_map),
            events=[
                (_text(eid), {_text(k): _text(v) for k, v in fields.items()})
                for eid, fields in reversed(events or [])
            ],
            matches=match_rows(instances or []),
        )


def _text(value: bytes | str) -> str:
    """A stream field as text; binary fields (a create request's protobuf) never
    stop a frame."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
