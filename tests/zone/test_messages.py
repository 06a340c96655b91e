"""The zone's edge: tessera.v1 messages to the core's plain data and back."""

from __future__ import annotations

from collections.abc import Mapping

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
from tessera.zone import kernels, messages
from tessera.zone.entities import DEAD, PLAYER, Entities, Record, export_state, spawn_state
from tessera.zone.handoff import Ack, Prepare
from tessera.zone.topology import ZoneArea

WORLD = Rect(-100, -100, 100, 100)


def test_player_inputs_become_columns() -> None:
    batch = [
        zone_pb2.PlayerInput(player_id="a", sequence=3, move_x=0.5, actions=4, interp_delay_ms=80),
        zone_pb2.PlayerInput(player_id="b", sequence=9, yaw=-1.0, rtt_ms=40, client_time_ms=7.5),
    ]
    cols = messages.inputs(batch)
    assert cols.players == ["a", "b"] and len(cols) == 2
    assert cols.sequence.tolist() == [3, 9] and cols.actions.tolist() == [4, 0]
    assert cols.move_x.tolist() == [0.5, 0.0] and cols.yaw.tolist() == [0.0, -1.0]
    assert cols.interp_ms.tolist() == [80.0, 0.0] and cols.rtt_ms.tolist() == [0.0, 40.0]
    assert cols.client_time_ms.tolist() == [0.0, 7.5]
    assert len(messages.inputs([])) == 0


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


def test_warm_up_compiles_the_checkpoint_kernel() -> None:
    """After warm_up (which the zone runs before it reports ready), a checkpoint of
    players with a game module's components compiles nothing new."""
    messages.warm_up()
    before = list(kernels.proto_rows.signatures)
    assert before
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
