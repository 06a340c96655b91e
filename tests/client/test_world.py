"""Interpolation of other entities and snapshot bookkeeping of the world view."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.client.world import Frame, WorldView, interpolate
from tessera.v1 import common_pb2, relay_pb2
from tessera.wire.snapshot import (
    COLUMNS,
    HEALTH,
    KIND,
    PRESENT,
    TEAM,
    EntityTable,
    Quantization,
    Replicated,
    SnapshotError,
    X,
    Z,
    announced,
    width,
)
from tessera.zone.snapshot import PAD, SnapshotEncoder

QUANT = Quantization(position_step_m=0.5)


def table(entries: dict[int, tuple[int, int]]) -> EntityTable:
    ids = np.array(sorted(entries), dtype=np.uint64)
    rows = np.zeros((len(entries), COLUMNS), np.int32)
    for i, eid in enumerate(sorted(entries)):
        rows[i, X], rows[i, Z] = entries[eid]
    return EntityTable(ids, rows)


def test_interpolates_between_bracketing_frames() -> None:
    frames = [
        Frame(1000.0, 1, table({1: (0, 0), 2: (10, 10), 3: (0, 0)})),
        Frame(1050.0, 2, table({1: (20, 0), 2: (10, 30)})),
    ]
    at = interpolate(frames, 1025.0, QUANT, skip=3)
    assert at[1].tolist() == pytest.approx([5.0, 0.0, 0.0])
    assert at[2].tolist() == pytest.approx([5.0, 0.0, 10.0])
    assert 3 not in at
    # Before the first frame / after the last: clamp to that frame.
    assert interpolate(frames, 900.0, QUANT)[3].tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert interpolate(frames, 2000.0, QUANT)[1].tolist() == pytest.approx([10.0, 0.0, 0.0])
    assert interpolate([], 0.0, QUANT) == {}


def test_missing_baseline_and_garbage_are_counted() -> None:
    world = WorldView(QUANT, entity_id=1)
    assert world.apply(relay_pb2.Snapshot(stream=1, sequence=5, baseline=4, payload=b"")) is None
    assert world.missing_baselines == 1
    assert world.apply(relay_pb2.Snapshot(stream=1, sequence=6, payload=b"\x09")) is None
    assert world.decode_errors == 1
    assert world.ack().ack.sequence == 0


def test_entities_carry_their_replicated_components_dequantized() -> None:
    """The entity view of a snapshot encoded with two replicated components: each
    entity's built-in state in world units, and the components it carries."""
    schema = (
        Replicated("carried", "uint16", 1.0, 16, ("near",)),
        Replicated("heat", "float32", 0.25, 8),
    )
    encoder = SnapshotEncoder(cap=4, components=schema)
    ids = np.full((1, 4), PAD, np.uint64)
    ids[0, :2] = [3, 8]
    vals = np.zeros((1, 4, width(schema)), np.int32)
    vals[0, 0, [X, Z, HEALTH, KIND, TEAM]] = [4, -2, 90, 1, 2]
    vals[0, 0, PRESENT:] = [0b11, 12, -6]
    vals[0, 1, PRESENT:] = [0b10, 0, 40]
    batch = encoder.encode(
        np.array([encoder.open()]), ids, ids != PAD, vals, last_input_seq=np.zeros(1, np.int64)
    )
    world = WorldView(QUANT, entity_id=3, schema=schema)
    snap = relay_pb2.Snapshot(stream=1, sequence=1, payload=batch.payloads[0])
    assert world.apply(snap) is not None
    own = world.entity(3)
    assert own is not None
    assert own.position.tolist() == [2.0, 0.0, -1.0]
    assert (own.health, own.kind, own.team) == (90, 1, 2)
    assert own.components == {"carried": 12.0, "heat": -1.5}
    assert world.entities()[8].components == {"heat": 10.0}
    assert world.entity(99) is None


def test_a_malformed_announced_schema_is_refused() -> None:
    good = common_pb2.ComponentSchema(name="a", dtype="uint8", step=1, bits=8, tiers=["near"])
    assert announced([good]) == (Replicated("a", "uint8", 1.0, 8, ("near",)),)
    wrong = [
        (common_pb2.ComponentSchema(name="b", dtype="uint8", step=1, bits=8, column=1), "column"),
        (
            common_pb2.ComponentSchema(name="c", dtype="uint8", step=0, bits=8, tiers=["far"]),
            "step",
        ),
        (common_pb2.ComponentSchema(name="d", dtype="str", step=1, bits=8, tiers=["far"]), "dtype"),
        (
            common_pb2.ComponentSchema(name="e", dtype="int8", step=1, bits=33, tiers=["far"]),
            "bits",
        ),
        (common_pb2.ComponentSchema(name="f", dtype="int8", step=1, bits=8, tiers=["x"]), "tiers"),
    ]
    for msg, what in wrong:
        with pytest.raises(SnapshotError, match=what):
            announced([msg])


def test_a_new_schema_decodes_the_next_zones_snapshots_and_drops_the_old_state() -> None:
    """The session moved into a zone whose module replicates a component: its
    snapshots fail by the old schema (skipped, unacknowledged) and decode by the new."""
    schema = (Replicated("ore", "uint8", 1.0, 8),)
    encoder = SnapshotEncoder(cap=2, components=schema)
    ids = np.full((1, 2), PAD, np.uint64)
    ids[0, 0] = 3
    vals = np.zeros((1, 2, width(schema)), np.int32)
    vals[0, 0, PRESENT:] = [0b1, 7]
    batch = encoder.encode(
        np.array([encoder.open()]), ids, ids != PAD, vals, last_input_seq=np.zeros(1, np.int64)
    )
    world = WorldView(QUANT, entity_id=3)
    first = relay_pb2.Snapshot(stream=1, sequence=1, payload=plain_payload())
    assert world.apply(first) is not None and len(world.frames) == 1
    moved = relay_pb2.Snapshot(stream=2, sequence=1, payload=batch.payloads[0])
    assert world.apply(moved) is None and world.decode_errors == 1
    world.rescheme(schema)
    assert not world.frames and not world.baselines
    assert world.apply(moved) is not None
    own = world.entity(3)
    assert own is not None and own.components == {"ore": 7.0}


def plain_payload() -> bytes:
    """A full snapshot of one entity with no component section."""
    encoder = SnapshotEncoder(cap=1)
    ids = np.full((1, 1), 3, np.uint64)
    vals = np.zeros((1, 1, COLUMNS), np.int32)
    batch = encoder.encode(
        np.array([encoder.open()]), ids, ids != PAD, vals, last_input_seq=np.zeros(1, np.int64)
    )
    return bytes(batch.payloads[0])
