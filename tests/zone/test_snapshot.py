"""Batched snapshot encoder: round trips through the SDK decoder, deltas, baselines."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.wire.snapshot import (
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
from tessera.zone.snapshot import PAD, EncodedBatch, SnapshotEncoder, quantize

CAP = 8


class Driver:
    """Feeds the encoder as the simulation does: ids sorted per row, a membership
    version bumped whenever a row's ids change, vanished entities kept invalid."""

    def __init__(self, enc: SnapshotEncoder) -> None:
        self.enc = enc
        self.last: dict[int, np.ndarray] = {}
        self.version: dict[int, int] = {}

    def encode(
        self,
        rows: np.ndarray,
        ids: np.ndarray,
        vals: np.ndarray,
        last_seq: np.ndarray,
        invalid: np.ndarray | None = None,
    ) -> EncodedBatch:
        order = np.argsort(ids, axis=1)
        ids = np.take_along_axis(ids, order, axis=1)
        vals = np.take_along_axis(vals, order[:, :, None], axis=1)
        valid = ids != PAD
        if invalid is not None:
            valid &= ~np.take_along_axis(invalid, order, axis=1)
        versions = []
        for i, row in enumerate(rows.tolist()):
            if row not in self.last or not np.array_equal(self.last[row], ids[i]):
                self.version[row] = self.version.get(row, 0) + 1
                self.last[row] = ids[i].copy()
            versions.append(self.version[row])
        return self.enc.encode(
            rows, ids, valid, vals, last_input_seq=last_seq, version=np.array(versions)
        )


def _frame(rng: np.random.Generator, universe: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((c, CAP), PAD, np.uint64)
    vals = np.zeros((c, CAP, COLUMNS), np.int32)
    for i in range(c):
        n = int(rng.integers(0, CAP + 1))
        ids[i, :n] = rng.choice(universe, n, replace=False)
    vals[:] = rng.integers(-40000, 40000, (c, CAP, COLUMNS))
    vals[:, :, 2:] = np.abs(vals[:, :, 2:]) % 200
    return ids, vals


def _expected(ids: np.ndarray, vals: np.ndarray, invalid: np.ndarray) -> EntityTable:
    keep = (ids != PAD) & ~invalid
    order = np.argsort(ids[keep])
    return EntityTable(ids[keep][order], vals[keep][order])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ticks=st.integers(1, 12), lag=st.integers(0, 4))
def test_round_trip_over_many_ticks_with_lagging_acks(seed: int, ticks: int, lag: int) -> None:
    rng = np.random.default_rng(seed)
    universe = rng.choice(np.arange(1, 10_000, dtype=np.uint64), 20, replace=False)
    enc = SnapshotEncoder(cap=CAP, history=4, rows=2)
    rows = np.array([enc.open() for _ in range(3)], np.int64)
    driver = Driver(enc)
    receivers = [SnapshotReceiver() for _ in rows]
    ids, vals = _frame(rng, universe, rows.size)
    for tick in range(ticks):
        if rng.random() < 0.5:  # new members; otherwise same members, new values
            ids, vals = _frame(rng, universe, rows.size)
        else:
            vals = vals + rng.integers(-300, 300, vals.shape).astype(np.int32) * (
                rng.random(vals.shape) < 0.3
            )
            vals[:, :, 2:] = np.abs(vals[:, :, 2:]) % 200
        invalid = rng.random(ids.shape) < 0.15
        batch = driver.encode(rows, ids, vals, np.full(rows.size, tick, np.int64), invalid)
        for i, rec in enumerate(receivers):
            got = rec.apply(
                int(batch.stream[i]),
                int(batch.sequence[i]),
                int(batch.baseline[i]),
                batch.payloads[i],
            )
            want = _expected(ids[i], vals[i], invalid[i])
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
    driver = Driver(enc)
    first = driver.encode(row, ids, vals, np.zeros(1, np.int64))
    assert first.full[0] and first.baseline[0] == 0
    assert len(first.payloads[0]) == full_size(100)
    enc.ack(int(row[0]), int(first.stream[0]), 1)
    vals2 = vals.copy()
    vals2[0, :10, X] += 5  # ten entities moved a little
    second = driver.encode(row, ids, vals2, np.zeros(1, np.int64))
    assert second.baseline[0] == 1 and not second.full[0]
    # header + 2 bitmaps of 13 bytes + 10 masks + 10 * (int8 x, int8 z)
    assert len(second.payloads[0]) == HEADER.itemsize + 13 + 13 + 10 + 20
    table = decode(second.payloads[0], decode(first.payloads[0], None).table).table
    np.testing.assert_array_equal(table.rows, vals2[0])


def test_growing_the_client_rows_keeps_existing_baselines() -> None:
    enc = SnapshotEncoder(cap=4, history=4, rows=1)
    row = np.array([enc.open()], np.int64)
    ids = np.array([[3, 7, PAD, PAD]], np.uint64)
    vals = np.ones((1, 4, COLUMNS), np.int32)
    driver = Driver(enc)
    receiver = SnapshotReceiver()
    first = driver.encode(row, ids, vals, np.zeros(1, np.int64))
    receiver.apply(int(first.stream[0]), 1, 0, first.payloads[0])
    assert enc.ack(int(row[0]), int(first.stream[0]), 1)
    enc.open()  # no free row left: the arrays double
    vals[0, 0, X] += 2
    second = driver.encode(row, ids, vals, np.zeros(1, np.int64))
    assert second.baseline[0] == 1
    got = receiver.apply(int(second.stream[0]), 2, 1, second.payloads[0])
    np.testing.assert_array_equal(got.table.rows, vals[0, :2])


def test_reserve_grows_once_keeps_baselines_and_hands_out_lowest_rows_first() -> None:
    enc = SnapshotEncoder(cap=4, history=4, rows=2)
    row = np.array([enc.open()], np.int64)
    ids = np.array([[3, 7, PAD, PAD]], np.uint64)
    vals = np.ones((1, 4, COLUMNS), np.int32)
    driver = Driver(enc)
    receiver = SnapshotReceiver()
    first = driver.encode(row, ids, vals, np.zeros(1, np.int64))
    receiver.apply(int(first.stream[0]), 1, 0, first.payloads[0])
    assert enc.ack(int(row[0]), int(first.stream[0]), 1)
    enc.reserve(2)  # already room: nothing changes
    assert enc.ids.shape[0] == 2
    enc.reserve(40)
    grown = enc.ids
    assert grown.shape[0] == 40
    assert [enc.open() for _ in range(39)] == list(range(1, 40))  # the free row, then new ones
    assert enc.ids is grown  # the reserved rows needed no further growth
    vals[0, 0, X] += 2
    second = driver.encode(row, ids, vals, np.zeros(1, np.int64))
    assert second.baseline[0] == 1
    got = receiver.apply(int(second.stream[0]), 2, 1, second.payloads[0])
    np.testing.assert_array_equal(got.table.rows, vals[0, :2])


def test_baseline_too_old_or_wrong_stream_falls_back_to_full() -> None:
    enc = SnapshotEncoder(cap=4, history=4)
    row = np.array([enc.open()], np.int64)
    ids = np.array([[1, 2, PAD, PAD]], np.uint64)
    vals = np.zeros((1, 4, COLUMNS), np.int32)
    driver = Driver(enc)
    first = driver.encode(row, ids, vals, np.zeros(1, np.int64))
    assert not enc.ack(int(row[0]), int(first.stream[0]) ^ 1, 1)
    assert not enc.ack(int(row[0]), int(first.stream[0]), 7)
    assert enc.ack(int(row[0]), int(first.stream[0]), 1)
    for _ in range(4):
        last = driver.encode(row, ids, vals, np.zeros(1, np.int64))
    assert last.full[0] and last.baseline[0] == 0
    first_mask = np.frombuffer(last.payloads[0], np.uint8)[HEADER.itemsize + 16 + 1]
    assert first_mask == FULL_MASK


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.integers(-1, 6)), max_size=20))
def test_acks_in_a_batch_are_recorded_as_one_by_one(acks: list[tuple[int, bool, int]]) -> None:
    """ack_received (a relay's batch, rows repeating) leaves the same baselines as
    ack per acknowledgement: another stream, 0 and the future are ignored."""
    one, many = SnapshotEncoder(cap=2, history=8), SnapshotEncoder(cap=2, history=8)
    rows = np.array([one.open() for _ in range(3)], np.int64)
    assert [many.open() for _ in range(3)] == rows.tolist()
    many.stream[:] = one.stream
    ids = np.array([[1, PAD]] * 3, np.uint64)
    vals = np.zeros((3, 2, COLUMNS), np.int32)
    for enc in (one, many):
        for _ in range(4):  # sequences 1..4 sent, 5 next
            Driver(enc).encode(rows, ids, vals, np.zeros(3, np.int64))
    streams = [int(one.stream[r]) ^ (0 if same else 1) for r, same, _ in acks]
    recorded = sum(one.ack(r, s, q) for (r, _, q), s in zip(acks, streams, strict=True))
    at = np.array([a[0] for a in acks], np.int64)
    sequence = np.array([a[2] for a in acks], np.int64)
    assert many.ack_received(at, np.array(streams, np.int64), sequence) == recorded
    np.testing.assert_array_equal(many.acked, one.acked)


def test_a_batch_holds_its_payloads_in_one_buffer() -> None:
    none = np.zeros(0, np.int64)
    fields = {"stream": none.astype(np.uint32), "sequence": none, "baseline": none}
    fields |= {"full": none == 0, "entities": none, "entered": 0, "left": 0}
    assert EncodedBatch.of([], **fields).payloads == []
    three = EncodedBatch.of([b"a", b"", b"bc"], **fields)
    assert three.payloads == [b"a", b"", b"bc"] and three.sizes.tolist() == [1, 0, 2]
    assert three.raw == b"abc" and three.bytes_total == 3


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
