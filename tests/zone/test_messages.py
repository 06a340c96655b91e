"""The zone's edge: tessera.v1 messages to the core's plain data and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.game import (
    Action,
    Argument,
    Component,
    Events,
    Module,
    ModuleError,
    Replication,
    View,
)
from tessera.v1 import common_pb2, relay_pb2, zone_pb2
from tessera.wire.bounds import to_bounds
from tessera.wire.geometry import Rect
from tessera.wire.packet import MAX_RELIABLE
from tessera.wire.snapshot import Quantization, announced
from tessera.zone import inputs, kernels, messages
from tessera.zone.entities import DEAD, PLAYER, Entities, Record, export_state, spawn_state
from tessera.zone.handoff import Ack, Prepare
from tessera.zone.snapshot import EncodedBatch
from tessera.zone.topology import ZoneArea

WORLD = Rect(-100, -100, 100, 100)


def _inputs(batch: zone_pb2.InputBatch) -> inputs.Inputs:
    return messages.input_batch(batch)[0]


def test_player_inputs_become_columns() -> None:
    batch = zone_pb2.InputBatch(
        inputs=[
            zone_pb2.PlayerInput(
                player_id="a", sequence=3, move_x=0.5, actions=4, interp_delay_ms=80
            ),
            zone_pb2.PlayerInput(
                player_id="b", sequence=9, yaw=-1.0, rtt_ms=40, client_time_ms=7.5
            ),
        ],
        acks=[zone_pb2.SnapshotAck(player_id="a", stream=1, sequence=2)],
    )
    cols, acks = messages.input_batch(batch)
    assert acks.players == ["a"] and acks.stream.tolist() == [1] and acks.sequence.tolist() == [2]
    assert cols.players == ["a", "b"] and len(cols) == 2
    assert cols.sequence.tolist() == [3, 9] and cols.actions.tolist() == [4, 0]
    assert cols.move_x.tolist() == [0.5, 0.0] and cols.yaw.tolist() == [0.0, -1.0]
    assert cols.interp_ms.tolist() == [80.0, 0.0] and cols.rtt_ms.tolist() == [0.0, 40.0]
    assert cols.client_time_ms.tolist() == [0.0, 7.5]
    assert len(_inputs(zone_pb2.InputBatch())) == 0
    assert cols.take(np.array([1], np.int64)).players == ["b"]
    assert cols.take(np.array([1], np.int64)).sequence.tolist() == [9]


def _oracle(batch: zone_pb2.InputBatch) -> dict[str, list[object]]:
    """The inputs' columns read field by field from protobuf's own objects."""
    fields = {
        "players": "player_id", "sequence": "sequence", "move_x": "move_x",
        "move_z": "move_z", "yaw": "yaw", "pitch": "pitch", "actions": "actions",
        "rtt_ms": "rtt_ms", "interp_ms": "interp_delay_ms", "client_time_ms": "client_time_ms",
    }  # fmt: skip
    return {col: [getattr(i, name) for i in batch.inputs] for col, name in fields.items()}


def _assert_columns(cols: inputs.Inputs, want: dict[str, list[object]]) -> None:
    assert cols.players == want["players"]
    for name, values in want.items():
        if name != "players":
            got = getattr(cols, name)
            assert got.dtype == (np.int64 if name in ("sequence", "actions") else np.float64)
            np.testing.assert_array_equal(got, np.array(values, got.dtype), err_msg=name)


_FLOAT32 = st.floats(width=32)  # any float32, NaN, infinities and -0.0 included
_UINT32 = st.integers(0, 2**32 - 1)
_INPUT = st.builds(
    zone_pb2.PlayerInput,
    player_id=st.text(max_size=12),
    sequence=_UINT32,
    move_x=_FLOAT32,
    move_z=_FLOAT32,
    yaw=_FLOAT32,
    pitch=_FLOAT32,
    actions=_UINT32,
    client_time_ms=st.floats(),
    rtt_ms=_FLOAT32,
    interp_delay_ms=_FLOAT32,
)
_ACK = st.builds(
    zone_pb2.SnapshotAck, player_id=st.text(max_size=4), stream=_UINT32, sequence=_UINT32
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_INPUT, max_size=40), st.lists(_ACK, max_size=5))
def test_inputs_read_from_the_serialised_batch_are_protobufs_own(
    batch: list[zone_pb2.PlayerInput], acks: list[zone_pb2.SnapshotAck]
) -> None:
    message = zone_pb2.InputBatch(inputs=batch, acks=acks)
    cols, read = messages.input_batch(message)
    _assert_columns(cols, _oracle(message))
    assert read.players == [a.player_id for a in acks]
    assert read.stream.tolist() == [a.stream for a in acks]
    assert read.sequence.tolist() == [a.sequence for a in acks]


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return bytes([number << 3 | wire]) + payload


def test_unknown_groups_are_skipped_as_protobuf_keeps_them() -> None:
    """A group (wire types 3 and 4, nested) is an unknown field protobuf keeps and
    serialises again; the reader skips it, in the batch and in an input."""
    group = _field(
        11, 3, _field(12, 3, _field(1, 0, b"\x05") + _field(12, 4, b"")) + _field(11, 4, b"")
    )
    one = zone_pb2.PlayerInput(player_id="g", sequence=4).SerializeToString() + group
    raw = _field(1, 2, bytes([len(one)]) + one) + group + _field(1, 2, b"\x02\x10\x07")
    batch = zone_pb2.InputBatch.FromString(raw)
    assert group in batch.SerializeToString()  # kept
    cols = _inputs(batch)
    _assert_columns(cols, _oracle(batch))
    assert cols.players == ["g", ""] and cols.sequence.tolist() == [4, 7]
    assert _read(raw + _field(11, 3, b""), 3) == -1  # a group that never ends is malformed


def test_unknown_repeated_and_mistyped_fields_are_read_as_protobuf_reads_them() -> None:
    one = zone_pb2.PlayerInput(player_id="p", sequence=5, yaw=1.5).SerializeToString()
    extra = b"".join([
        _field(15, 0, b"\x96\x01"),  # unknown varint
        _field(14, 2, b"\x03abc"),  # unknown bytes
        _field(13, 5, b"\x00\x00\x80\x3f"),  # unknown I32
        _field(12, 1, bytes(8)),  # unknown I64
        _field(2, 5, b"\x07\x00\x00\x00"),  # sequence with a wrong wire type: unknown
        _field(7, 0, b"\x80\x80\x80\x80\x10"),  # actions 2**32: read as its low 32 bits
        _field(3, 5, b"\x00\x00\x00\xc0"),  # move_x -2.0
        _field(3, 5, b"\x00\x00\x80\x3f"),  # move_x again: the last one wins
    ])  # fmt: skip
    body = one + extra
    raw = b"".join([
        _field(1, 2, bytes([len(body)]) + body),
        _field(9, 0, b"\x01"),  # an unknown field of the batch
        _field(1, 2, b"\x00"),  # an empty input
    ])  # fmt: skip
    batch = zone_pb2.InputBatch.FromString(raw)
    cols = _inputs(batch)
    _assert_columns(cols, _oracle(batch))
    assert cols.players == ["p", ""] and cols.sequence.tolist() == [5, 0]
    assert cols.move_x.tolist() == [1.0, 0.0] and cols.actions.tolist() == [0, 0]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(max_size=8), st.binary(max_size=300), _UINT32, _UINT32, _UINT32),
        max_size=30,
    ),
    st.integers(0, 2**63 - 1),
    st.floats(allow_nan=False),
    st.floats(allow_nan=False),
    st.data(),
)
def test_snapshot_entries_are_the_messages_protobuf_writes(
    snaps: list[tuple[str, bytes, int, int, int]],
    tick: int,
    now_ms: float,
    next_ms: float,
    data: st.DataObject,
) -> None:
    """Any subset of a tick's snapshots, serialised by the kernel and sent as one
    chunk, is byte for byte the ZoneLinkDown built of PlayerSnapshot messages."""
    n = len(snaps)
    players = [p for p, *_ in snaps]
    batch = EncodedBatch.of(
        [b for _, b, *_ in snaps],
        stream=np.array([s[2] for s in snaps], np.uint32),
        sequence=np.array([s[3] for s in snaps], np.int64),
        baseline=np.array([s[4] for s in snaps], np.int64),
        full=np.zeros(n, np.bool_),
        entities=np.zeros(n, np.int64),
        entered=0,
        left=0,
    )
    rows = data.draw(st.lists(st.integers(0, n - 1), max_size=n) if n else st.just([]))
    entries, ends = messages.snapshot_entries(players, batch, tick, rows)
    want = zone_pb2.SnapshotBatch(tick=tick, server_time_ms=now_ms, next_tick_ms=next_ms)
    for i in rows:
        p, payload, stream, seq, base = snaps[i]
        want.snapshots.add(
            player_id=p, stream=stream, sequence=seq, baseline=base, tick=tick, payload=payload
        )
    sent = messages.snapshot_chunk(tick, now_ms, next_ms, entries)
    assert sent == zone_pb2.ZoneLinkDown(snapshots=want).SerializeToString()
    assert (
        len(ends) == len(rows) and ends == sorted(ends) and (not ends or ends[-1] == len(entries))
    )


class _Strict(np.ndarray):
    """Bytes that refuse any index outside them, negative ones included."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)) and not 0 <= key < self.size:
            raise IndexError(f"byte {key} of {self.size}")
        return super().__getitem__(key)


_READERS = ("_get_varint", "_get_tag", "_get_span", "_skip_value", "_skip_field")


def _read(data: bytes, room: int) -> int:
    """``proto_columns`` and its helpers run as Python on ``data`` (so every read
    is checked), and compiled: the two must agree."""
    arrays = (np.zeros((2, room), np.int64), np.zeros((2, room), np.int64), np.zeros((7, room)))
    field, spec = messages._INPUTS.field, messages._INPUTS.spec
    with pytest.MonkeyPatch.context() as patch:
        for name in _READERS:
            patch.setattr(kernels, name, getattr(kernels, name).py_func)
        strict = np.frombuffer(data, np.uint8).view(_Strict)
        read: int = kernels.proto_columns.py_func(strict, field, spec, *arrays)
    assert read == kernels.proto_columns(np.frombuffer(data, np.uint8), field, spec, *arrays)
    return read


def test_proto_columns_refuses_truncated_batches() -> None:
    batch = zone_pb2.InputBatch(
        inputs=[zone_pb2.PlayerInput(player_id=f"p{i}", sequence=i + 1, yaw=0.5, client_time_ms=3.0)
                for i in range(3)]
    )  # fmt: skip
    raw = batch.SerializeToString()
    ends = {len(zone_pb2.InputBatch(inputs=batch.inputs[:k]).SerializeToString()): k
            for k in range(4)}  # fmt: skip
    for cut in range(len(raw) + 1):
        assert _read(raw[:cut], 3) == ends.get(cut, -1)
    assert _read(raw, 2) == -1  # more inputs than room


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_proto_columns_never_reads_out_of_bounds(data: bytes) -> None:
    assert -1 <= _read(data, 4) <= 4


def test_entity_state_round_trips_through_the_record() -> None:
    state = zone_pb2.EntityState(
        entity_id=42,
        kind=zone_pb2.ENTITY_KIND_PLAYER,
        player_id="bo",
        position=common_pb2.Vec3(x=3.25, y=1.0, z=-4.1),
        velocity=common_pb2.Vec3(x=0.5, y=0.0, z=-2.0),
        yaw=1.5,
        health=55.5,
        team=2,
        flags=DEAD,
        last_input_seq=9,
        blob=b"inv",
        relay_id="r1",
        zone="z",
        epoch=3,
        data_version=7,
        speed_clamps=4,
        teleports=2,
        kills=5,
        deaths=6,
        hits_dealt=70,
        hits_taken=80,
        match_id="0123456789abcdef",
        role="healer",
    )
    rec = messages.record(state)
    assert (rec.team, rec.match_id, rec.role) == (2, "0123456789abcdef", "healer")
    assert rec.kind == PLAYER and rec.position == (3.25, 1.0, -4.1) and rec.blob == b"inv"
    assert (rec.data_version, rec.speed_clamps, rec.teleports) == (7, 4, 2)
    assert (rec.kills, rec.deaths, rec.hits_dealt, rec.hits_taken) == (5, 6, 70, 80)
    assert messages.entity_state(rec) == state
    ents = Entities()
    row = spawn_state(ents, rec, now_s=0.0)
    assert messages.entity_state(export_state(ents, row, zone="z", epoch=3)) == state
    assert messages.record(zone_pb2.EntityState(entity_id=5)) == Record(entity_id=5)


KIT = (Component("hidden", "float32"), Component("carried", "uint16"), Component("heat", "float64"))
U32, U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
ANY_FLOAT = st.floats(allow_nan=False) | st.sampled_from([0.0, -0.0, 1e-45, 3.4e38, 1e300])
VEC = st.tuples(ANY_FLOAT, ANY_FLOAT, ANY_FLOAT)
TEXT = st.text(max_size=12)
RECORDS = st.lists(
    st.builds(
        Record,
        entity_id=U64.filter(bool),
        kind=st.just(PLAYER),
        player_id=st.text(min_size=1, max_size=12),
        position=VEC,
        velocity=VEC,
        yaw=ANY_FLOAT,
        health=st.floats(0.0, 100.0),
        team=st.integers(0, 2**31 - 1),
        flags=st.sampled_from([0, DEAD, 0x100, 0x101]),
        last_input_seq=U32,
        blob=st.binary(max_size=20) | st.just(bytes(range(256)) * 8),  # over KEEP_MAX
        relay_id=TEXT,
        epoch=U64,
        data_version=U64,
        speed_clamps=U64,
        teleports=U64,
        kills=U64,
        deaths=U64,
        hits_dealt=U64,
        hits_taken=U64,
        match_id=TEXT,
        role=TEXT,
        components=st.fixed_dictionaries(
            {"hidden": ANY_FLOAT, "carried": st.integers(0, 65535), "heat": ANY_FLOAT}
        ),
    ),
    max_size=12,
    unique_by=(lambda r: r.entity_id, lambda r: r.player_id),
)


@settings(max_examples=150, deadline=None)
@given(records=RECORDS, changed=st.integers(0, 11))
def test_checkpoint_payloads_parse_as_the_players_entity_states(
    records: list[Record], changed: int
) -> None:
    """Every field, over the values a zone's columns hold (-0.0, subnormals, huge
    and float32-overflowing floats, 64-bit tallies, any text, a blob too large to
    keep), reads back as entity_state builds it, and a player's kept part is
    rebuilt when it changes."""
    ents = Entities(components=KIT)
    for r in records:
        spawn_state(ents, r, now_s=0.0)
        ents.extra[r.entity_id].epoch = r.epoch
    checkpoints = messages.Checkpoints("z7")

    def expected(player: str) -> zone_pb2.EntityState:
        eid = ents.players[player]
        return messages.entity_state(
            export_state(ents, ents.index[eid], zone="z7", epoch=ents.extra[eid].epoch)
        )

    def check() -> None:
        payloads = checkpoints.payloads(ents, list(ents.players))
        assert list(payloads) == list(ents.players)
        for player, payload in payloads.items():
            assert zone_pb2.EntityState.FromString(payload) == expected(player)

    check()
    if records:
        r = records[changed % len(records)]
        extra = ents.extra[r.entity_id]
        extra.relay_id, extra.teleports, extra.epoch = "moved", extra.teleports ^ 1, 99
        ents.pos[ents.index[r.entity_id]] = (1.0, 2.0, 3.0)
        check()
        ents.remove(r.entity_id)
        check()
    assert checkpoints.payloads(ents, []) == {}


def test_warm_up_compiles_the_checkpoint_input_and_snapshot_kernels() -> None:
    """After warm_up (which the zone runs before it reports ready), a checkpoint of
    players with a game module's components, a relay's input batch and a tick's
    snapshots for a link compile nothing new."""
    messages.warm_up()
    before = list(kernels.proto_rows.signatures)
    read = list(kernels.proto_columns.signatures)
    assert before and read
    batch = zone_pb2.InputBatch(
        inputs=[zone_pb2.PlayerInput(player_id="a", sequence=2, yaw=1.0, client_time_ms=4.0)],
        acks=[zone_pb2.SnapshotAck(player_id="a", stream=3, sequence=1)],
    )
    cols, acks = messages.input_batch(batch)
    assert cols.sequence.tolist() == [2] and acks.sequence.tolist() == [1]
    assert list(kernels.proto_columns.signatures) == read
    written = list(kernels.proto_entries.signatures)
    assert written
    ones = np.ones(2, np.int64)
    snaps = EncodedBatch.of(
        [b"ab", b""],
        stream=np.array([5, 6], np.uint32),
        sequence=ones,
        baseline=ones,
        full=ones == 0,
        entities=ones,
        entered=0,
        left=0,
    )
    assert len(messages.snapshot_entries(["a", "b"], snaps, 9, [1, 0])[1]) == 2
    assert list(kernels.proto_entries.signatures) == written
    ents = Entities(components=KIT)
    for i in range(3):
        ents.add_player(i + 1, f"p{i}", (1.0, 0.0, float(i)))
    assert len(messages.Checkpoints("z").payloads(ents, list(ents.players))) == 3
    assert list(kernels.proto_rows.signatures) == before


def prepare(frm: str) -> zone_pb2.HandoffPrepare:
    msg = zone_pb2.HandoffPrepare(entity=zone_pb2.EntityState(entity_id=5, player_id="p5"), epoch=2)
    getattr(msg, "from").CopyFrom(common_pb2.ZoneRef(world="w", zone=frm))
    return msg


def test_handoff_messages_name_their_sender() -> None:
    assert messages.source(prepare("zz")) == "zz"
    assert messages.prepare(prepare("a")) == Prepare(Record(entity_id=5, player_id="p5"), "a", 2)
    ack = zone_pb2.HandoffAck(entity_id=7, epoch=3, accepted=False, reason="present")
    getattr(ack, "from").CopyFrom(common_pb2.ZoneRef(world="w", zone="b"))
    assert messages.ack(ack) == Ack(7, 3, "b", False)


def zmap(version: int, zones: dict[str, Rect]) -> zone_pb2.ZoneMap:
    m = zone_pb2.ZoneMap(world="w", version=version, world_bounds=to_bounds(WORLD))
    for name, r in zones.items():
        m.zones.append(zone_pb2.ZoneMapEntry(zone=name, bounds=to_bounds(r), address=name + ":1"))
    return m


def test_empty_rectangles_and_draining_zones_own_nothing() -> None:
    m = zmap(1, {"a": Rect(0, 0, 0, 10), "b": WORLD, "c": Rect(-100, -100, 0, 0)})
    m.zones[2].state = zone_pb2.ZONE_STATE_DRAINING
    t = messages.topology(m)
    assert [a.zone for a in t.zones] == ["b"] and t.version == 1
    assert t.world == WORLD and t.zones[0] == ZoneArea("b", "b:1", WORLD)
    assert t.owner(-50.0, -50.0) == "b"


def _nothing(view: View, row: int, args: Mapping[str, float], events: Events) -> None:
    """A handler never run here."""


def test_a_game_schema_too_large_for_the_clients_accepted_is_refused() -> None:
    def module(n: int) -> Module:
        args = tuple(Argument(f"argument_{i}", 0, 1) for i in range(4))
        actions = tuple(Action(i + 1, f"action_{i:03d}", _nothing, args) for i in range(n))
        return Module(name="big", actions=actions)

    fits = messages.game_schema(module(4))
    assert [a.name for a in fits.actions] == [f"action_{i:03d}" for i in range(4)]
    assert len(fits.actions[0].arguments) == 4
    with pytest.raises(
        ModuleError,
        match=r"game module 'big': its actions, events and replicated components take \d+ bytes",
    ):
        messages.game_schema(module(40))
    # What a relay adds around it still fits one reliable message.
    accepted = relay_pb2.ServerMessage(
        accepted=relay_pb2.Accepted(
            player_id="p" * 64,
            entity_id=2**40,
            world="w" * 63,
            quantization=messages.quantization(Quantization()),
            tick_hz=60,
            timeout_s=30,
            game=common_pb2.GameSchema(module="m" * (messages.SCHEMA_MAX - 3)),
        )
    )
    assert accepted.ByteSize() <= MAX_RELIABLE


def test_the_game_schema_announces_the_replicated_components_in_column_order() -> None:
    module = Module(
        name="kit",
        components=(
            Component("hidden", "float32"),
            Component("carried", "uint16", replicate=Replication(1.0, 10, ("near", "mid"))),
            Component("heat", "float32", replicate=Replication(0.5, 8)),
        ),
    )
    schema = messages.game_schema(module)
    assert [
        (c.name, c.dtype, c.step, c.bits, list(c.tiers), c.column) for c in schema.components
    ] == [
        ("carried", "uint16", 1.0, 10, ["near", "mid"], 0),
        ("heat", "float32", 0.5, 8, ["near", "mid", "far"], 1),
    ]
    assert announced(schema.components) == module.replicated
