"""The SDK's snapshot decoder: malformed payloads, receiver bookkeeping, round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tessera.wire.snapshot import (
    COLUMNS,
    HEADER,
    EntityTable,
    SnapshotError,
    SnapshotReceiver,
    decode,
    full_size,
)
from tessera.zone.snapshot import SnapshotEncoder


def _encode(
    ids: list[int], rows: np.ndarray, enc: SnapshotEncoder, row: int
) -> tuple[int, int, int, bytes]:
    cap = enc.cap
    padded = np.full((1, cap), (1 << 40) - 1, np.uint64)
    padded[0, : len(ids)] = ids
    vals = np.zeros((1, cap, COLUMNS), np.int32)
    vals[0, : len(ids)] = rows
    valid = padded != (1 << 40) - 1
    b = enc.encode(np.array([row]), padded, valid, vals, last_input_seq=np.zeros(1, np.int64))
    return int(b.stream[0]), int(b.sequence[0]), int(b.baseline[0]), b.payloads[0]


# Every column fits its narrowest wire width (uint8); x and z are scaled up so
# all three position encodings (int8/int16 deltas, int32 absolute) occur.
rows_strategy = hnp.arrays(np.int32, (6, COLUMNS), elements=st.integers(0, 255)).map(
    lambda a: a * np.array([997, 131] + [1] * (COLUMNS - 2), np.int32)
)


@settings(max_examples=60, deadline=None)
@given(
    first=st.sets(st.integers(1, 500), max_size=6),
    second=st.sets(st.integers(1, 500), max_size=6),
    a=rows_strategy,
    b=rows_strategy,
)
def test_delta_round_trip(first: set[int], second: set[int], a: np.ndarray, b: np.ndarray) -> None:
    enc = SnapshotEncoder(cap=6)
    row = enc.open()
    rec = SnapshotReceiver()
    ids1, ids2 = sorted(first), sorted(second)
    s, q, base, payload = _encode(ids1, a[: len(ids1)], enc, row)
    assert base == 0 and len(payload) == full_size(len(ids1))
    rec.apply(s, q, base, payload)
    enc.ack(row, s, rec.ack())
    s, q, base, payload = _encode(ids2, b[: len(ids2)], enc, row)
    assert base == 1
    got = rec.apply(s, q, base, payload)
    assert got.table.ids.tolist() == ids2
    np.testing.assert_array_equal(got.table.rows, b[: len(ids2)])
    assert sorted(got.entered.tolist()) == sorted(second - first)
    assert sorted(got.left.tolist()) == sorted(first - second)


def test_malformed_payloads_raise_snapshot_error() -> None:
    enc = SnapshotEncoder(cap=4)
    row = enc.open()
    _, _, _, payload = _encode([3, 4], np.ones((2, COLUMNS), np.int32), enc, row)
    assert len(decode(payload, None).table) == 2
    with pytest.raises(SnapshotError, match="truncated"):
        decode(payload[:-1], None)
    with pytest.raises(SnapshotError, match="trailing"):
        decode(payload + b"\0", None)
    with pytest.raises(SnapshotError, match="version"):
        decode(b"\x07" + payload[1:], None)
    with pytest.raises(SnapshotError, match="truncated"):
        decode(b"", None)
    header = np.zeros(1, HEADER)
    header["version"] = 1
    header["n_base"] = 3
    with pytest.raises(SnapshotError, match="baseline of 3"):
        decode(header.tobytes(), None)


def test_receiver_drops_baselines_on_new_stream_and_rejects_unknown_baseline() -> None:
    enc = SnapshotEncoder(cap=4)
    row = enc.open()
    rec = SnapshotReceiver(keep=2)
    s, q, base, payload = _encode([1], np.ones((1, COLUMNS), np.int32), enc, row)
    rec.apply(s, q, base, payload)
    with pytest.raises(SnapshotError, match="not held"):
        rec.apply(s, 5, 4, payload)
    for _ in range(3):
        s, q, base, payload = _encode([1], np.ones((1, COLUMNS), np.int32), enc, row)
        rec.apply(s, q, base, payload)
    assert sorted(rec.tables) == [3, 4] and rec.ack() == 4
    fresh = SnapshotEncoder(cap=4)
    _, _, _, full = _encode([1], np.ones((1, COLUMNS), np.int32), fresh, fresh.open())
    rec.apply(s + 1, 1, 0, full)
    assert list(rec.tables) == [1] and len(rec.table()) == 1


def test_the_worked_example_of_the_protocol_document() -> None:
    base = EntityTable(np.array([5, 9], np.uint64), np.zeros((2, COLUMNS), np.int32))
    payload = (
        bytes([1, 0, 2, 0, 2, 0, 1, 0, 2, 0])
        + (7).to_bytes(4, "little")  # header
        + bytes([0x02])  # removed: entry 1 (id 9)
        + (12).to_bytes(8, "little")  # added id 12
        + bytes([0x03])  # changed: both entries of [5, 12]
        + bytes([0x01, 0xFC])  # masks
        + bytes([0x03, 0xFE])  # POS8 for 5: +3, -2
        + (1000).to_bytes(4, "little", signed=True)
        + (-5).to_bytes(4, "little", signed=True)
        + (50).to_bytes(2, "little", signed=True)  # HEIGHT
        + (1024).to_bytes(2, "little")  # FACING
        + bytes(6)  # MOTION
        + (100).to_bytes(2, "little")
        + bytes([0])  # VITALS
        + bytes([2])
        + (3).to_bytes(2, "little")  # IDENT
    )
    out = decode(payload, base)
    assert out.table.ids.tolist() == [5, 12] and out.last_input_seq == 7
    assert out.table.rows[0, :2].tolist() == [3, -2]
    assert out.table.rows[1].tolist() == [1000, -5, 50, 1024, 0, 0, 0, 100, 0, 2, 3]
    assert out.entered.tolist() == [12] and out.left.tolist() == [9]
