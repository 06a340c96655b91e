"""Interpolation of other entities and snapshot bookkeeping of the world view."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.client.world import Frame, WorldView, interpolate
from tessera.v1 import relay_pb2
from tessera.wire.snapshot import COLUMNS, EntityTable, Quantization, X, Z

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
