"""Batched snapshot encoder: round trips through the SDK decoder, deltas, baselines."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.client.snapshot import (
    COLUMNS,
    FULL_MASK,
    HEADER,
    HEALTH,
    YAW,
    EntityTable,
    Quantization,
    SnapshotReceiver,
    X,
    Z,
    decode,
    full_size,
)
from tessera.zone.snapshot import PAD, SnapshotEncoder, quantize

CAP = 8


def _frame(rng: np.random.Generator, universe: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((c, CAP), PAD, np.uint64)
    vals = np.zeros((c, CAP, COLUMNS), np.int32)
    for i in range(c):
        n = int(rng.integers(0, CAP + 1))
        ids[i, :n] = rng.choice(universe, n, replace=False)
    vals[:] = rng.integers(-40000, 40000, (c, CAP, COLUMNS))
    vals[:, :, 2:] = np.abs(vals[:, :, 2:]) % 200
    return ids, vals


def _expected(ids: np.ndarray, vals: np.ndarray) -> EntityTable:
    keep = ids != PAD
    order = np.argsort(ids[keep])
    return EntityTable(ids[keep][order], vals[keep][order])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ticks=st.integers(1, 12), lag=st.integers(0, 4))
def test_round_trip_over_many_ticks_with_lagging_acks(seed: int, ticks: int, lag: int) -> None:
    rng = np.random.default_rng(seed)
    universe = rng.choice(np.arange(1, 10_000, dtype=np.uint64), 20, replace=False)
    enc = SnapshotEncoder(cap=CAP, history=4, rows=2)
    rows = np.array([enc.open() for _ in range(3)], np.int64)
    receivers = [SnapshotReceiver() for _ in rows]
    for tick in range(ticks):
        ids, vals = _frame(rng, universe, rows.size)
        due = np.ones(ids.shape, bool)
        batch = enc.encode(rows, ids, vals, due, np.full(rows.size, tick, np.int64))
        for i, rec in enumerate(receivers):
            got = rec.apply(
                int(batch.stream[i]),
                int(batch.sequence[i]),
                int(batch.baseline[i]),
                batch.payloads[i],
            )
            want = _expected(ids[i], vals[i])
            np.testing.assert_array_equal(got.table.ids, want.ids)
            np.testing.assert_array_equal(got.table.rows, want.rows)
            assert got.last_input_seq == tick
            if tick >= lag:
                enc.ack(int(rows[i]), int(batch.stream[i]), int(batch.sequence[i]) - lag)


def test_unchanged_entities_cost_almost_nothing_and_full_size_is_exact() -> None:
    enc = SnapshotEncoder(cap=100)
    row = np.array([enc.open()], np.int64)
    ids = np.arange(1, 101, dtype=np.uint64)[None, :]
    vals = np.tile(np.arange(COLUMNS, dtype=np.int32), (1, 100, 1))
    due = np.ones((1, 100), bool)
    first = enc.encode(row, ids, vals, due, np.zeros(1, np.int64))
    assert first.full[0] and first.baseline[0] == 0
    assert len(first.payloads[0]) == full_size(100)
    enc.ack(int(row[0]), int(first.stream[0]), 1)
    vals2 = vals.copy()
    vals2[0, :10, X] += 5  # ten entities moved a little
    second = enc.encode(row, ids, vals2, due, np.zeros(1, np.int64))
    assert second.baseline[0] == 1 and not second.full[0]
    # header + 2 bitmaps of 13 bytes + 10 masks + 10 * (int8 x, int8 z)
    assert len(second.payloads[0]) == HEADER.itemsize + 13 + 13 + 10 + 20
    table = decode(second.payloads[0], decode(first.payloads[0], None).table).table
    np.testing.assert_array_equal(table.rows, vals2[0])


def test_not_due_entities_keep_the_last_sent_value() -> None:
    enc = SnapshotEncoder(cap=2)
    row = np.array([enc.open()], np.int64)
    ids = np.array([[5, 9]], np.uint64)
    vals = np.zeros((1, 2, COLUMNS), np.int32)
    rec = SnapshotReceiver()
    b = enc.encode(row, ids, vals, np.ones((1, 2), bool), np.zeros(1, np.int64))
    rec.apply(int(b.stream[0]), 1, 0, b.payloads[0])
    moved = vals.copy()
    moved[0, :, X] = 50
    b = enc.encode(row, ids, moved, np.array([[True, False]]), np.zeros(1, np.int64))
    got = rec.apply(int(b.stream[0]), 2, int(b.baseline[0]), b.payloads[0]).table
    assert got.rows[0, X] == 50 and got.rows[1, X] == 0
    b = enc.encode(row, ids, moved, np.array([[False, True]]), np.zeros(1, np.int64))
    got = rec.apply(int(b.stream[0]), 3, int(b.baseline[0]), b.payloads[0]).table
    assert got.rows[0, X] == 50 and got.rows[1, X] == 50


def test_baseline_too_old_or_wrong_stream_falls_back_to_full() -> None:
    enc = SnapshotEncoder(cap=4, history=4)
    row = np.array([enc.open()], np.int64)
    ids = np.array([[1, 2, PAD, PAD]], np.uint64)
    vals = np.zeros((1, 4, COLUMNS), np.int32)
    due = np.ones((1, 4), bool)
    first = enc.encode(row, ids, vals, due, np.zeros(1, np.int64))
    assert not enc.ack(int(row[0]), int(first.stream[0]) ^ 1, 1)
    assert not enc.ack(int(row[0]), int(first.stream[0]), 7)
    assert enc.ack(int(row[0]), int(first.stream[0]), 1)
    for _ in range(4):
        last = enc.encode(row, ids, vals, due, np.zeros(1, np.int64))
    assert last.full[0] and last.baseline[0] == 0
    first_mask = np.frombuffer(last.payloads[0], np.uint8)[HEADER.itemsize + 16 + 1]
    assert first_mask == FULL_MASK


def test_quantize_errors_within_limits() -> None:
    quant = Quantization(origin=(-500.0, 0.0, -500.0))
    rng = np.random.default_rng(3)
    pos = rng.uniform(-500, 500, (200, 3))
    pos[:, 1] = rng.uniform(0, 10, 200)
    yaw = rng.uniform(-2 * math.pi, 2 * math.pi, 200)
    rows = quantize(
        quant,
        pos=pos,
        vel=rng.uniform(-7, 7, (200, 3)),
        yaw=yaw,
        health=rng.uniform(0, 100, 200),
        flags=np.zeros(200, np.int32),
        kind=np.ones(200, np.int32),
        team=np.zeros(200, np.int32),
    )
    table = EntityTable(np.arange(200, dtype=np.uint64), rows)
    assert np.abs(table.positions(quant) - pos).max() <= 0.0100001
    err = np.abs(np.angle(np.exp(1j * (table.yaws(quant) - yaw))))
    assert err.max() <= math.pi / 4096 + 1e-9
    assert rows[:, HEALTH].max() <= 100
    assert rows[:, YAW].max() < 4096 and rows[:, Z].min() >= 0
