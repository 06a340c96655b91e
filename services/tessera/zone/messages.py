"""The zone's edge: tessera.v1 messages turned into the core's plain data and back.

The core (simulation, entities, inputs, handoff, topology, ...) never sees a
protobuf message; the shell (servicer, links, border) converts here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from operator import attrgetter
from typing import Any

import numpy as np
from google.protobuf.descriptor import Descriptor

from tessera.game.errors import ModuleError
from tessera.game.module import Module
from tessera.v1 import common_pb2, zone_pb2
from tessera.wire.bounds import from_bounds
from tessera.wire.snapshot import Quantization
from tessera.zone import kernels
from tessera.zone.entities import Entities, Record
from tessera.zone.events import Event
from tessera.zone.handoff import Ack, Prepare
from tessera.zone.inputs import Inputs
from tessera.zone.snapshot import Acks, EncodedBatch
from tessera.zone.topology import Topology, ZoneArea

# A module's schema travels in Accepted, one reliable message of at most 1149 bytes
# (docs/protocol/udp.md): this leaves room for its other fields (ids, world, quantization).
SCHEMA_MAX = 896

# Zones on their way out own nothing: entities are never handed to them.
_LEAVING = (zone_pb2.ZONE_STATE_DRAINING, zone_pb2.ZONE_STATE_DRAINED)


_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5  # protobuf wire types


def _tags(message: Descriptor, fields: Sequence[str], wire_type: int) -> np.ndarray:
    """The one-byte protobuf tags of ``fields`` of ``message``."""
    tags = [message.fields_by_name[f].number << 3 | wire_type for f in fields]
    if max(tags) >= 0x80:
        raise ValueError(f"a field of {fields} needs a tag of two bytes")
    return np.array(tags, np.uint8)


@dataclass(frozen=True)
class _Repeated:
    """How :func:`kernels.proto_columns` reads a repeated sub-message ``field``:
    ``spec``, each sub-message field's wire type (-1: not read) and row by field
    number, and the rows of each kind of column (LEN, VARINT, I32 and I64)."""

    field: int
    spec: np.ndarray
    rows: tuple[int, int, int]

    @classmethod
    def of(cls, message: Descriptor, field: str, columns: dict[str, tuple[int, int]]) -> _Repeated:
        """``field`` of ``message``; ``columns``: its sub-message's fields read, by
        name: (wire type, row)."""
        sub = message.fields_by_name[field]
        if sub.message_type is None:
            raise TypeError(f"{message.name}.{field} is not a message field")
        by_number = {sub.message_type.fields_by_name[f].number: at for f, at in columns.items()}
        spec = np.zeros((2, max(by_number) + 1), np.int64)
        spec[0] = -1
        for number, (wire, row) in by_number.items():
            spec[:, number] = wire, row
        kinds = ((_LEN,), (_VARINT,), (_I32, _I64))
        rows = [1 + max((r for w, r in columns.values() if w in k), default=-1) for k in kinds]
        return cls(sub.number, spec, (rows[0], rows[1], rows[2]))

    def read(self, data: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``n`` sub-messages in ``data``: spans (start and stop rows per LEN
        field), ints (VARINT) and floats (I32, I64)."""
        spans = np.zeros((2 * self.rows[0], n), np.int64)
        ints = np.zeros((self.rows[1], n), np.int64)
        floats = np.zeros((self.rows[2], n), np.float64)
        if n:  # (an empty field: no kernel call, the common batch of acks only)
            read = kernels.proto_columns(data, self.field, self.spec, spans, ints, floats)
            if read != n:  # protobuf's own serialisation of a parsed message
                raise ValueError(f"read {read} of {n} entries of field {self.field}")
        return spans, ints, floats


_INPUTS = _Repeated.of(
    zone_pb2.InputBatch.DESCRIPTOR,
    "inputs",
    {
        "player_id": (_LEN, 0),
        "sequence": (_VARINT, 0),
        "actions": (_VARINT, 1),
        "move_x": (_I32, 0),
        "move_z": (_I32, 1),
        "yaw": (_I32, 2),
        "pitch": (_I32, 3),
        "rtt_ms": (_I32, 4),
        "interp_delay_ms": (_I32, 5),
        "client_time_ms": (_I64, 6),
    },
)
_ACKS = _Repeated.of(
    zone_pb2.InputBatch.DESCRIPTOR,
    "acks",
    {"player_id": (_LEN, 0), "stream": (_VARINT, 0), "sequence": (_VARINT, 1)},
)


def _texts(raw: bytes, spans: np.ndarray) -> list[str]:
    starts, ends = spans.tolist()
    return [raw[a:b].decode() for a, b in zip(starts, ends, strict=True)]


def input_batch(batch: zone_pb2.InputBatch) -> tuple[Inputs, Acks]:
    """A relay's inputs and acknowledgements as columns (one array per field, not
    a tuple per entry: thousands of live tuples would trigger a garbage
    collection pass inside a tick). They are read from the batch's
    serialisation by :func:`kernels.proto_columns`: through protobuf's Python
    objects, a field at a time, a thousand inputs took ~0.9 ms (about 9 % of a
    1,000-player tick, bench/zone_tick.py) and a thousand acks ~1.1 ms with
    their recording; ~0.3 and ~0.4 ms this way (docs/BENCHMARKS.md)."""
    raw = batch.SerializeToString()
    data = np.frombuffer(raw, np.uint8)
    spans, ints, floats = _INPUTS.read(data, len(batch.inputs))
    cols = Inputs(
        players=_texts(raw, spans),
        sequence=ints[0],
        move_x=floats[0],
        move_z=floats[1],
        yaw=floats[2],
        pitch=floats[3],
        actions=ints[1],
        rtt_ms=floats[4],
        interp_ms=floats[5],
        client_time_ms=floats[6],
    )
    spans, ints, _ = _ACKS.read(data, len(batch.acks))
    return cols, Acks(_texts(raw, spans), ints[0], ints[1])


_SNAPSHOT = zone_pb2.PlayerSnapshot.DESCRIPTOR
# SnapshotBatch.snapshots, then PlayerSnapshot's fields as kernels.proto_entries writes them
_ENTRY_TAGS = np.concatenate(
    [
        _tags(zone_pb2.SnapshotBatch.DESCRIPTOR, ("snapshots",), _LEN),
        _tags(_SNAPSHOT, ("player_id",), _LEN),
        _tags(_SNAPSHOT, ("stream", "sequence", "baseline", "tick"), _VARINT),
        _tags(_SNAPSHOT, ("payload",), _LEN),
    ]
)
_SNAPSHOTS_TAG = _tags(zone_pb2.ZoneLinkDown.DESCRIPTOR, ("snapshots",), _LEN).tobytes()


def snapshot_entries(
    players: Sequence[str], batch: EncodedBatch, tick: int, rows: Sequence[int]
) -> tuple[memoryview, list[int]]:
    """Snapshots ``rows`` of a tick's batch serialised one after another as
    ``SnapshotBatch.snapshots`` entries (``PlayerSnapshot``s), and where each
    ends: what :func:`snapshot_chunk` sends. Building each ``PlayerSnapshot`` in
    place and splitting the batch into chunks cost ~1.5 µs a snapshot
    (docs/BENCHMARKS.md)."""
    names = [players[i].encode() for i in rows]
    at = np.array(rows, np.int64)
    numbers = np.stack(
        [batch.stream[at], batch.sequence[at], batch.baseline[at], np.full(at.size, tick)], 1
    ).astype(np.int64)
    texts, lengths = b"".join(names), np.array([len(n) for n in names], np.int64)
    text_ends = np.cumsum(lengths)
    text_spans = np.stack([text_ends - lengths, text_ends])
    sizes, blob_ends = batch.sizes[at], batch.ends[at]
    blob_spans = np.stack([blob_ends - sizes, blob_ends])
    bound = kernels.proto_entries_bound(at.size, numbers.shape[1], len(texts), int(sizes.sum()))
    out, ends = np.empty(bound, np.uint8), np.empty(at.size, np.int64)
    kernels.proto_entries(
        _ENTRY_TAGS,
        np.frombuffer(texts, np.uint8),
        text_spans,
        numbers,
        np.frombuffer(batch.raw, np.uint8),
        blob_spans,
        out,
        ends,
    )
    return out[: ends[-1] if at.size else 0].data, ends.tolist()


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def snapshot_chunk(
    tick: int, server_time_ms: float, next_tick_ms: float, entries: bytes | memoryview
) -> bytes:
    """A serialised ``ZoneLinkDown`` of a ``SnapshotBatch`` of ``tick``,
    ``server_time_ms`` and ``next_tick_ms`` holding ``entries`` (whole
    :func:`snapshot_entries` entries): the bytes protobuf writes for that message
    built field by field."""
    head = zone_pb2.SnapshotBatch(tick=tick, server_time_ms=server_time_ms).SerializeToString()
    tail = zone_pb2.SnapshotBatch(next_tick_ms=next_tick_ms).SerializeToString()
    size = _varint_bytes(len(head) + len(entries) + len(tail))
    return b"".join((_SNAPSHOTS_TAG, size, head, entries, tail))


def record(state: zone_pb2.EntityState) -> Record:
    """An EntityState (checkpoint or handoff payload) as the core's record."""
    p, v = state.position, state.velocity
    return Record(
        entity_id=state.entity_id,
        kind=state.kind,
        player_id=state.player_id,
        position=(p.x, p.y, p.z),
        velocity=(v.x, v.y, v.z),
        yaw=state.yaw,
        health=state.health,
        team=state.team,
        flags=state.flags,
        last_input_seq=state.last_input_seq,
        blob=state.blob,
        relay_id=state.relay_id,
        zone=state.zone,
        epoch=state.epoch,
        data_version=state.data_version,
        speed_clamps=state.speed_clamps,
        teleports=state.teleports,
        kills=state.kills,
        deaths=state.deaths,
        hits_dealt=state.hits_dealt,
        hits_taken=state.hits_taken,
        match_id=state.match_id,
        role=state.role,
        components=dict(state.components),
    )


def entity_state(r: Record) -> zone_pb2.EntityState:
    """The core's record as an EntityState."""
    (x, y, z), (vx, vy, vz) = r.position, r.velocity
    return zone_pb2.EntityState(
        entity_id=r.entity_id,
        kind=r.kind,  # type: ignore[arg-type]
        player_id=r.player_id,
        position=common_pb2.Vec3(x=x, y=y, z=z),
        velocity=common_pb2.Vec3(x=vx, y=vy, z=vz),
        yaw=r.yaw,
        health=r.health,
        team=r.team,
        flags=r.flags,
        last_input_seq=r.last_input_seq,
        blob=r.blob,
        relay_id=r.relay_id,
        zone=r.zone,
        epoch=r.epoch,
        data_version=r.data_version,
        speed_clamps=r.speed_clamps,
        teleports=r.teleports,
        kills=r.kills,
        deaths=r.deaths,
        hits_dealt=r.hits_dealt,
        hits_taken=r.hits_taken,
        match_id=r.match_id,
        role=r.role,
        components=r.components,
    )


# EntityState's fields held in entity columns, which Checkpoints writes with
# kernels.proto_rows, and those held in each player's Extra.
_VARINTS = ("entity_id", "kind", "team", "flags", "last_input_seq")
_FLOATS = ("yaw", "health")
_VECTORS = ("position", "velocity")
_EXTRA = (
    "player_id", "blob", "relay_id", "epoch", "data_version", "speed_clamps", "teleports",
    "kills", "deaths", "hits_dealt", "hits_taken", "match_id", "role",
)  # fmt: skip
_extra = attrgetter(*_EXTRA)
KEEP_MAX = 1024  # bytes of a player's serialised Extra fields that Checkpoints keeps


_STATE = zone_pb2.EntityState.DESCRIPTOR
_VARINT_TAGS = _tags(_STATE, _VARINTS, _VARINT)
_FLOAT_TAGS = _tags(_STATE, _FLOATS, _I32)
_VECTOR_TAGS = _tags(_STATE, _VECTORS, _LEN)
_COORDINATE_TAGS = _tags(common_pb2.Vec3.DESCRIPTOR, ("x", "y", "z"), _I64)


@cache
def _entry_head(name: str) -> bytes:
    """The bytes of a ``components`` map entry for ``name`` before its value."""
    return zone_pb2.EntityState(components={name: 0.0}).SerializeToString()[:-8]


class Checkpoints:
    """The checkpoint payloads (serialised ``EntityState``) of many players at once,
    for ``zone``: a checkpoint writes every player every second, and building each
    player's record and message costs ~10× as much (bench/zone_checkpoint.py).

    The numeric fields come from the entity columns through
    :func:`kernels.proto_rows`; the rest (ids, strings, tallies, epoch) are a message
    serialised once per player and kept while they do not change, unless it is
    over :data:`KEEP_MAX` bytes (a large ``blob``: rebuilt each time rather than
    held twice). Protobuf parses concatenated messages as one, so a payload is the
    two parts joined, and ``EntityState.FromString`` of it equals
    :func:`entity_state` of the player's record (``tests/zone/test_messages.py``)."""

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self._held: dict[str, tuple[tuple[object, ...], bytes]] = {}

    def payloads(self, ents: Entities, players: Sequence[str]) -> dict[str, bytes]:
        """Player id -> checkpoint payload, for present ``players``."""
        eids = [ents.players[p] for p in players]
        index = np.array([ents.index[e] for e in eids], np.int64)
        n, names = index.size, list(ents.columns)
        varints = np.empty((n, len(_VARINTS)), np.uint64)
        columns: tuple[np.ndarray, ...] = (ents.id, ents.kind, ents.team, ents.flags, ents.last_seq)
        for k, col in enumerate(columns):
            varints[:, k] = col[index]
        with np.errstate(over="ignore"):  # to inf, as protobuf's float does
            floats = np.stack([ents.yaw[index], ents.health[index]], 1).astype(np.float32)
        vectors = np.stack([ents.pos[index], ents.vel[index]], 1)
        entries = np.empty((n, len(names)), np.float64)
        for k, name in enumerate(names):
            entries[:, k] = ents.columns[name][index]
        heads = [_entry_head(name) for name in names]
        heads_at = np.cumsum([0, *map(len, heads)], dtype=np.int64)
        bound = kernels.proto_rows_bound(
            len(_VARINTS), len(_VECTORS), len(_FLOATS), int(heads_at[-1]), len(names)
        )
        out, ends = np.empty(n * bound, np.uint8), np.empty(n, np.int64)
        kernels.proto_rows(
            varints, _VARINT_TAGS, floats.view(np.uint32), _FLOAT_TAGS,
            vectors.view(np.uint64), _VECTOR_TAGS, _COORDINATE_TAGS,
            entries.view(np.uint64), np.array(bytearray(b"".join(heads)), np.uint8), heads_at,
            out, ends,
        )  # fmt: skip
        numeric = out[: ends[-1] if n else 0].tobytes()
        held, payloads, start = self._held, {}, 0
        for eid, end in zip(eids, ends.tolist(), strict=True):
            values: tuple[Any, ...] = _extra(ents.extra[eid])
            player = values[0]
            kept = held.get(player)
            if kept is None or kept[0] != values:
                rest = dict(zip(_EXTRA, values, strict=True))
                kept = (values, zone_pb2.EntityState(zone=self.zone, **rest).SerializeToString())
                if len(kept[1]) <= KEEP_MAX:
                    held[player] = kept
            payloads[player] = kept[1] + numeric[start:end]
            start = end
        if len(held) > len(ents.players):  # some have left
            self._held = {p: kept for p, kept in held.items() if p in ents.players}
        return payloads


def warm_up() -> None:
    """Compile (or load) the kernels of checkpoints, input batches and snapshot
    batches, as ``simulation.warm_up`` does the tick's: the zone calls both
    before it reports ready."""
    Checkpoints("warm").payloads(Entities(), [])
    warm = zone_pb2.InputBatch(
        inputs=[zone_pb2.PlayerInput(player_id="warm")],
        acks=[zone_pb2.SnapshotAck(player_id="warm")],
    )
    input_batch(warm)
    one = np.ones(1, np.int64)
    snaps = EncodedBatch(b".", one, one.astype(np.uint32), one, one, one == 0, one, 0, 0)
    snapshot_entries(["warm"], snaps, 1, [0])


def player_event(ev: Event) -> zone_pb2.PlayerEvent:
    return zone_pb2.PlayerEvent(
        player_id=ev.player_id,
        kind=ev.kind,  # type: ignore[arg-type]
        other_entity_id=ev.other,
        amount=ev.amount,
        detail=ev.detail,
    )


def quantization(q: Quantization) -> common_pb2.Quantization:
    return common_pb2.Quantization(
        position_step_m=q.position_step_m,
        yaw_bits=q.yaw_bits,
        velocity_step_mps=q.velocity_step_mps,
        origin=common_pb2.Vec3(x=q.origin[0], y=q.origin[1], z=q.origin[2]),
    )


def game_schema(module: Module) -> common_pb2.GameSchema:
    """What a client needs of ``module`` (JoinResponse.game, then Accepted.game);
    ModuleError when it is larger than SCHEMA_MAX bytes."""
    schema = common_pb2.GameSchema(
        module=module.name,
        actions=[
            common_pb2.ActionSchema(
                id=a.id,
                name=a.name,
                arguments=[
                    common_pb2.ArgumentSchema(
                        name=arg.name, low=arg.low, high=arg.high, integer=arg.integer
                    )
                    for arg in a.arguments
                ],
            )
            for a in module.actions
        ],
        events=module.events,
        components=[
            common_pb2.ComponentSchema(
                name=c.name, dtype=c.dtype, step=c.step, bits=c.bits, tiers=c.tiers, column=e
            )
            for e, c in enumerate(module.replicated)
        ],
    )
    size = schema.ByteSize()
    if size > SCHEMA_MAX:
        raise ModuleError(
            f"game module {module.name!r}: its actions, events and replicated components take"
            f" {size} bytes in the client's Accepted, more than {SCHEMA_MAX}: declare fewer or"
            " shorter names"
        )
    return schema


def source(msg: zone_pb2.HandoffPrepare | zone_pb2.HandoffAck | zone_pb2.HandoffCommit) -> str:
    """The sending zone of a message (its field is named ``from``, a Python keyword)."""
    ref = getattr(msg, "from")
    return str(ref.zone)


def prepare(msg: zone_pb2.HandoffPrepare) -> Prepare:
    return Prepare(record(msg.entity), source(msg), msg.epoch)


def ack(msg: zone_pb2.HandoffAck) -> Ack:
    return Ack(msg.entity_id, msg.epoch, source(msg), msg.accepted)


def topology(zone_map: zone_pb2.ZoneMap) -> Topology:
    """The zone map as a Topology: zones with a non-empty rectangle that are not
    on their way out."""
    areas = tuple(
        ZoneArea(e.zone, e.address, from_bounds(e.bounds))
        for e in zone_map.zones
        if e.bounds.max_x > e.bounds.min_x
        and e.bounds.max_z > e.bounds.min_z
        and e.state not in _LEAVING
    )
    return Topology(zone_map.version, from_bounds(zone_map.world_bounds), areas)
