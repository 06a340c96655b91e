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
    PRESENT,
    EntityTable,
    Replicated,
    SnapshotError,
    SnapshotReceiver,
    decode,
    full_size,
    width,
)
from tessera.zone.snapshot import SnapshotEncoder


def _encode(
    ids: list[int], rows: np.ndarray, enc: SnapshotEncoder, row: int
) -> tuple[int, int, int, bytes]:
    cap = enc.cap
    padded = np.full((1, cap), (1 << 40) - 1, np.uint64)
    padded[0, : len(ids)] = ids
    vals = np.zeros((1, cap, enc.columns), np.int32)
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


# Replicated components: a signed 12-bit (2 bytes), an unsigned 32-bit (4 bytes) and
# a 1-bit flag (1 byte), after the built-in columns (presence bitmask, then values).
SCHEMA = (
    Replicated("heat", "float32", 0.5, 12),
    Replicated("gold", "uint32", 1.0, 32),
    Replicated("armed", "bool", 1.0, 1),
)
WIDTH = width(SCHEMA)


def _component_rows(data: st.DataObject, n: int) -> np.ndarray:
    """Rows of ``n`` entities: built-in columns, a random presence mask and values
    within each component's range (0 where not carried, as a decoder holds them)."""
    rows = np.zeros((n, WIDTH), np.int32)
    rows[:, :COLUMNS] = data.draw(rows_strategy)[:n]
    for i in range(n):
        present = data.draw(st.integers(0, 7))
        rows[i, PRESENT] = present
        for e, comp in enumerate(SCHEMA):
            if present >> e & 1:
                value = data.draw(st.integers(comp.low, comp.high))
                rows[i, PRESENT + 1 + e] = (
                    np.array([value], np.int64).astype(np.uint32).view(np.int32)[0]
                )
    return rows


@settings(max_examples=60, deadline=None)
@given(
    first=st.sets(st.integers(1, 500), max_size=6),
    second=st.sets(st.integers(1, 500), max_size=6),
    data=st.data(),
)
def test_components_round_trip_full_then_delta(
    first: set[int], second: set[int], data: st.DataObject
) -> None:
    """Any presence masks and in-range values decode exactly, in a full snapshot
    and in a delta against it (entities staying, leaving, entering)."""
    enc = SnapshotEncoder(cap=6, components=SCHEMA)
    row = enc.open()
    rec = SnapshotReceiver(schema=SCHEMA)
    ids1, ids2 = sorted(first), sorted(second)
    a, b = _component_rows(data, len(ids1)), _component_rows(data, len(ids2))
    s, q, base, payload = _encode(ids1, a, enc, row)
    got = rec.apply(s, q, base, payload)
    np.testing.assert_array_equal(got.table.rows, a)
    enc.ack(row, s, rec.ack())
    s, q, base, payload = _encode(ids2, b, enc, row)
    assert base == 1
    got = rec.apply(s, q, base, payload)
    assert got.table.ids.tolist() == ids2
    np.testing.assert_array_equal(got.table.rows, b)


def test_unchanged_components_cost_only_their_bitmap() -> None:
    """A delta in which no component changed adds one bitmap to the payload; a
    changed value adds its entry's two masks and the value's bytes."""
    plain, with_comps = SnapshotEncoder(cap=4), SnapshotEncoder(cap=4, components=SCHEMA)
    rows = np.zeros((3, WIDTH), np.int32)
    rows[:, PRESENT] = 0b011
    rows[:, PRESENT + 1] = [-2048, 0, 2047]
    rows[:, PRESENT + 2] = np.array([0, 7, 2**32 - 1], np.int64).astype(np.uint32).view(np.int32)
    sizes = []
    for enc, vals in ((plain, rows[:, :COLUMNS]), (with_comps, rows)):
        r = enc.open()
        s, _, _, _ = _encode([1, 2, 3], vals, enc, r)
        enc.ack(r, s, 1)
        sizes.append(len(_encode([1, 2, 3], vals, enc, r)[3]))
    assert sizes[1] == sizes[0] + 1
    rows[1, PRESENT + 1] = 5
    rec = SnapshotReceiver(schema=SCHEMA)
    enc = SnapshotEncoder(cap=4, components=SCHEMA)
    r = enc.open()
    rec.apply(*_encode([1, 2, 3], rows, enc, r))
    enc.ack(r, int(enc.stream[r]), 1)
    rows[1, PRESENT + 1] = 6
    payload = _encode([1, 2, 3], rows, enc, r)
    assert len(payload[3]) == sizes[0] + 1 + 2 + 2
    table = rec.apply(*payload).table
    assert table.components(1, SCHEMA) == {"heat": 3.0, "gold": 7.0}
    assert table.components(2, SCHEMA) == {"heat": 1023.5, "gold": 2.0**32 - 1}


def test_a_component_that_stops_being_carried_is_cleared() -> None:
    enc = SnapshotEncoder(cap=4, components=SCHEMA)
    r = enc.open()
    rec = SnapshotReceiver(schema=SCHEMA)
    rows = np.zeros((1, WIDTH), np.int32)
    rows[0, PRESENT], rows[0, PRESENT + 3] = 0b100, 1
    rec.apply(*_encode([9], rows, enc, r))
    assert rec.table().components(0, SCHEMA) == {"armed": 1.0}
    enc.ack(r, int(enc.stream[r]), 1)
    rows[0, PRESENT], rows[0, PRESENT + 3] = 0, 0
    rec.apply(*_encode([9], rows, enc, r))
    assert rec.table().components(0, SCHEMA) == {}
    assert rec.table().rows[0, PRESENT:].tolist() == [0, 0, 0, 0]


def test_component_sections_that_lie_are_rejected() -> None:
    enc = SnapshotEncoder(cap=4, components=SCHEMA[:1])
    rows = np.zeros((1, width(SCHEMA[:1])), np.int32)
    rows[0, PRESENT], rows[0, PRESENT + 1] = 1, 9
    r = enc.open()
    payload = _encode([4], rows, enc, r)[3]
    # ... | bitmap 01 | present 01 | sent 01 | value 09 00
    assert payload[-5:] == bytes([1, 1, 1, 9, 0])
    assert decode(payload, None, SCHEMA[:1]).table.rows[0, PRESENT:].tolist() == [1, 9]
    with pytest.raises(SnapshotError, match="beyond the 1 declared"):
        decode(payload[:-4] + bytes([3, 1, 9, 0]), None, SCHEMA[:1])
    with pytest.raises(SnapshotError, match="does not carry"):
        decode(payload[:-4] + bytes([0, 1, 9, 0]), None, SCHEMA[:1])
    with pytest.raises(SnapshotError, match="trailing"):
        decode(payload, None)  # decoded without the schema: the section is left over
    enc.ack(r, int(enc.stream[r]), 1)
    delta = _encode([4], rows, enc, r)[3]
    narrow = EntityTable(np.array([4], np.uint64), np.zeros((1, COLUMNS), np.int32))
    with pytest.raises(SnapshotError, match="baseline rows have 11 columns, want 13"):
        decode(delta, narrow, SCHEMA[:1])


@pytest.mark.parametrize(
    ("comp", "values", "want", "clamped"),
    [
        (Replicated("a", "float32", 0.25, 4), [0.3, -2.0, 1.9, -9.0], [1, -8, 7, -8], 2),
        (Replicated("b", "uint16", 1.0, 8), [3, 255, 256, -1], [3, 255, 255, 0], 2),
        (Replicated("c", "float64", 1.0, 8), [np.nan, np.inf, 2.5, 3.5], [0, 127, 2, 4], 2),
        (Replicated("d", "uint32", 1.0, 32), [4294967295.0, 1.0], [4294967295, 1], 0),
        (Replicated("e", "int32", 2.0, 32), [-(2.0**32), 2.0**32], [-(2**31), 2**31 - 1], 1),
    ],
)
def test_quantize_rounds_clamps_and_counts(
    comp: Replicated, values: list[float], want: list[int], clamped: int
) -> None:
    q, count = comp.quantize(np.array(values))
    assert q.dtype == np.int32 and count == clamped
    back = comp.dequantize(q)
    assert (back / comp.step).tolist() == [float(w) for w in want]
    assert comp.width == {4: 1, 8: 1, 32: 4}[comp.bits]
