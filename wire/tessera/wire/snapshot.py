"""Snapshot payload format (docs/protocol/snapshot.md) and its pure decoder.

A zone sends every attached player one ``PlayerSnapshot`` per tick whose
``payload`` lists the entities the player can see, as quantized integers,
delta-encoded against a snapshot the client acknowledged. This module is the
single definition of that byte layout: the zone's encoder imports the constants
below, and the client SDK and the tests decode with :func:`decode`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

VERSION = 1
FLAG_FULL = 1

# Columns of a quantized entity row (int32 each).
X, Z, Y, YAW, VX, VY, VZ, HEALTH, FLAGS, KIND, TEAM = range(11)
COLUMNS = 11

# Field bits of the per-entity change mask, in the order their columns appear.
POS8 = 0x01  # x, z as int8 deltas against the baseline
POS16 = 0x02  # x, z as int16 deltas against the baseline
POS32 = 0x04  # x, z as absolute int32
HEIGHT = 0x08  # y as absolute int16
FACING = 0x10  # yaw as uint16
MOTION = 0x20  # vx, vy, vz as int16
VITALS = 0x40  # health uint16, flags uint8
IDENT = 0x80  # kind uint8, team uint16
FULL_MASK = POS32 | HEIGHT | FACING | MOTION | VITALS | IDENT

HEADER = np.dtype(
    [
        ("version", "u1"),
        ("flags", "u1"),
        ("n_base", "<u2"),
        ("n", "<u2"),
        ("n_added", "<u2"),
        ("n_changed", "<u2"),
        ("last_input_seq", "<u4"),
    ]
)

# (bit, dtype of one value, columns it fills). Vitals and ident mix widths, so
# they are packed structs.
FIELDS: tuple[tuple[int, np.dtype[np.void], tuple[int, ...]], ...] = (
    (POS8, np.dtype([("x", "i1"), ("z", "i1")]), (X, Z)),
    (POS16, np.dtype([("x", "<i2"), ("z", "<i2")]), (X, Z)),
    (POS32, np.dtype([("x", "<i4"), ("z", "<i4")]), (X, Z)),
    (HEIGHT, np.dtype([("y", "<i2")]), (Y,)),
    (FACING, np.dtype([("yaw", "<u2")]), (YAW,)),
    (MOTION, np.dtype([("vx", "<i2"), ("vy", "<i2"), ("vz", "<i2")]), (VX, VY, VZ)),
    (VITALS, np.dtype([("health", "<u2"), ("flags", "u1")]), (HEALTH, FLAGS)),
    (IDENT, np.dtype([("kind", "u1"), ("team", "<u2")]), (KIND, TEAM)),
)
DELTA_BITS = POS8 | POS16

# Replicated components (the world's game module, GameSchema.components) follow
# the built-in columns: a presence bitmask (bit e = component e is carried),
# then one quantized value per component, in declared order.
PRESENT = COLUMNS
COMPONENTS_MAX = 32  # the presence bitmask is one int32 column
TIERS = ("near", "mid", "far")  # the interest tiers a component may replicate at
UNSIGNED = frozenset({"bool", "uint8", "uint16", "uint32"})  # quantized without a sign
DTYPES = UNSIGNED | {"int8", "int16", "int32", "float32", "float64"}

Ids = npt.NDArray[np.uint64]
Rows = npt.NDArray[np.int32]


class SnapshotError(ValueError):
    """A payload that does not decode (truncated, wrong version, bad baseline)."""


@dataclass(frozen=True)
class Replicated:
    """A component the snapshot carries (mirrors tessera.v1.ComponentSchema): each
    value travels as ``round(value / step)``, clamped to ``bits`` bits (unsigned for
    the unsigned and bool dtypes, else two's complement), in :attr:`width` bytes."""

    name: str
    dtype: str
    step: float
    bits: int
    tiers: tuple[str, ...] = TIERS

    @property
    def signed(self) -> bool:
        return self.dtype not in UNSIGNED

    @property
    def low(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def high(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def width(self) -> int:
        """Bytes of one value on the wire: 1, 2 or 4."""
        return 1 if self.bits <= 8 else 2 if self.bits <= 16 else 4

    @property
    def wire(self) -> np.dtype[Any]:
        """The little-endian integer type of one value on the wire."""
        return np.dtype(("<i" if self.signed else "<u") + str(self.width))

    def quantize(self, values: npt.NDArray[Any]) -> tuple[Rows, int]:
        """Quantized values as int32 (an unsigned 32-bit value keeps its bit
        pattern) and how many did not fit (clamped to the range; NaN sent as 0)."""
        q = np.rint(np.asarray(values, np.float64) / self.step)
        fits = (q >= self.low) & (q <= self.high)
        q = np.where(np.isnan(q), 0.0, np.clip(q, self.low, self.high))
        out = (q.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
        return out, int(q.size - np.count_nonzero(fits))

    def dequantize(self, q: npt.NDArray[np.int32]) -> npt.NDArray[np.float64]:
        """Values in the component's unit from quantized int32 values."""
        raw = np.asarray(q, np.int32)
        ints = raw.astype(np.int64) if self.signed else raw.view(np.uint32).astype(np.int64)
        return ints.astype(np.float64) * self.step

    @classmethod
    def from_proto(cls, msg: object) -> Replicated:
        """From a ``tessera.v1.ComponentSchema`` message."""
        return cls(
            name=str(msg.name),  # type: ignore[attr-defined]
            dtype=str(msg.dtype),  # type: ignore[attr-defined]
            step=float(msg.step),  # type: ignore[attr-defined]
            bits=int(msg.bits),  # type: ignore[attr-defined]
            tiers=tuple(msg.tiers),  # type: ignore[attr-defined]
        )


def announced(components: Sequence[object]) -> tuple[Replicated, ...]:
    """The replicated components of a ``GameSchema.components`` list, checked: in
    column order, with valid bits, step, dtype and tiers (SnapshotError if not)."""
    out = []
    for e, msg in enumerate(components):
        comp = Replicated.from_proto(msg)
        column = int(msg.column)  # type: ignore[attr-defined]
        if column != e:
            raise SnapshotError(f"component {comp.name!r} announces column {column}, want {e}")
        if not (1 <= comp.bits <= 32 and math.isfinite(comp.step) and comp.step > 0):
            raise SnapshotError(f"component {comp.name!r}: bits {comp.bits}, step {comp.step}")
        if comp.dtype not in DTYPES or not comp.tiers or set(comp.tiers) - set(TIERS):
            raise SnapshotError(f"component {comp.name!r}: dtype {comp.dtype}, tiers {comp.tiers}")
        out.append(comp)
    if len(out) > COMPONENTS_MAX:
        raise SnapshotError(f"{len(out)} replicated components, at most {COMPONENTS_MAX}")
    return tuple(out)


def width(components: Sequence[Replicated]) -> int:
    """Columns of a table row with ``components`` replicated."""
    return COLUMNS + 1 + len(components) if components else COLUMNS


@dataclass(frozen=True)
class Quantization:
    """How positions, yaw and velocities are quantized (mirrors tessera.v1.Quantization)."""

    position_step_m: float = 0.02
    yaw_bits: int = 12
    velocity_step_mps: float = 0.01
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def from_proto(cls, msg: object) -> Quantization:
        """From a ``tessera.v1.Quantization`` message."""
        origin = msg.origin  # type: ignore[attr-defined]
        return cls(
            position_step_m=float(msg.position_step_m),  # type: ignore[attr-defined]
            yaw_bits=int(msg.yaw_bits),  # type: ignore[attr-defined]
            velocity_step_mps=float(msg.velocity_step_mps),  # type: ignore[attr-defined]
            origin=(float(origin.x), float(origin.y), float(origin.z)),
        )


@dataclass(frozen=True)
class EntityTable:
    """The entities a client knows after a snapshot: ids ascending, quantized rows."""

    ids: Ids = field(default_factory=lambda: np.zeros(0, np.uint64))
    rows: Rows = field(default_factory=lambda: np.zeros((0, COLUMNS), np.int32))

    def __len__(self) -> int:
        return int(self.ids.size)

    def index(self, entity_id: int) -> int:
        """Row of an entity; KeyError if it is not in the table."""
        i = int(np.searchsorted(self.ids, np.uint64(entity_id)))
        if i >= self.ids.size or int(self.ids[i]) != entity_id:
            raise KeyError(entity_id)
        return i

    def positions(self, quant: Quantization) -> npt.NDArray[np.float64]:
        """World positions (n, 3) as x, y, z in metres."""
        out = np.empty((len(self), 3))
        out[:, 0] = self.rows[:, X] * quant.position_step_m + quant.origin[0]
        out[:, 1] = self.rows[:, Y] * quant.position_step_m + quant.origin[1]
        out[:, 2] = self.rows[:, Z] * quant.position_step_m + quant.origin[2]
        return out

    def yaws(self, quant: Quantization) -> npt.NDArray[np.float64]:
        """Facing in radians, [0, 2*pi)."""
        return self.rows[:, YAW].astype(np.float64) * (2 * math.pi / (1 << quant.yaw_bits))

    def velocities(self, quant: Quantization) -> npt.NDArray[np.float64]:
        """Velocities (n, 3) as vx, vy, vz in metres per second."""
        return self.rows[:, [VX, VY, VZ]].astype(np.float64) * quant.velocity_step_mps

    def components(self, i: int, schema: Sequence[Replicated]) -> dict[str, float]:
        """Entry ``i``'s replicated components the snapshot carries, in their unit."""
        row = self.rows[i]
        present = int(row[PRESENT]) & 0xFFFFFFFF if schema else 0
        return {
            c.name: float(c.dequantize(row[PRESENT + 1 + e : PRESENT + 2 + e])[0])
            for e, c in enumerate(schema)
            if present >> e & 1
        }


@dataclass(frozen=True)
class Decoded:
    """One decoded payload: the new table and what changed against the baseline."""

    table: EntityTable
    full: bool
    last_input_seq: int
    entered: Ids
    left: Ids


def _take(
    buf: memoryview, offset: int, dtype: np.dtype[Any], count: int
) -> tuple[npt.NDArray[Any], int]:
    end = offset + dtype.itemsize * count
    if end > len(buf):
        raise SnapshotError(f"payload truncated at byte {offset} (need {end}, have {len(buf)})")
    return np.frombuffer(buf, dtype, count, offset), end


def _bits(buf: memoryview, offset: int, count: int) -> tuple[npt.NDArray[np.bool_], int]:
    raw, end = _take(buf, offset, np.dtype("u1"), (count + 7) // 8)
    return np.unpackbits(raw.view(np.uint8), count=count, bitorder="little").astype(bool), end


def _masks(raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Little-endian unsigned integers from rows of bytes."""
    shifts = 8 * np.arange(raw.shape[1], dtype=np.int64)
    out: npt.NDArray[np.int64] = (raw.astype(np.int64) << shifts).sum(axis=1)
    return out


def _components(buf: memoryview, off: int, rows: Rows, schema: Sequence[Replicated]) -> int:
    """Apply the component section at ``off`` to ``rows``; the offset after it."""
    n, e_count = rows.shape[0], len(schema)
    listed_bits, off = _bits(buf, off, n)
    listed = np.flatnonzero(listed_bits)
    m = (e_count + 7) // 8
    raw, off = _take(buf, off, np.dtype("u1"), 2 * m * listed.size)
    pairs = raw.view(np.uint8).reshape(listed.size, 2, m)
    present, changed = _masks(pairs[:, 0]), _masks(pairs[:, 1])
    if bool(np.any(present >> e_count)):
        raise SnapshotError(f"presence mask names a component beyond the {e_count} declared")
    if bool(np.any(changed & ~present)):
        raise SnapshotError("component value sent for a component the entity does not carry")
    rows[listed, PRESENT] = present.astype(np.uint32).view(np.int32)
    for e, comp in enumerate(schema):
        col = PRESENT + 1 + e
        rows[listed[(present >> e & 1) == 0], col] = 0
        sel = listed[(changed >> e & 1) != 0]
        values, off = _take(buf, off, comp.wire, sel.size)
        rows[sel, col] = values.astype(np.int64).astype(np.uint32).view(np.int32)
    return off


def decode(
    payload: bytes, baseline: EntityTable | None, schema: Sequence[Replicated] = ()
) -> Decoded:
    """Apply one payload to its baseline (None or empty for a full snapshot);
    ``schema``: the replicated components (GameSchema.components), in order."""
    buf = memoryview(payload)
    head_arr, off = _take(buf, 0, HEADER, 1)
    head = head_arr[0]
    if int(head["version"]) != VERSION:
        raise SnapshotError(f"unknown payload version {int(head['version'])}")
    full = bool(int(head["flags"]) & FLAG_FULL)
    columns = width(schema)
    empty = EntityTable(rows=np.zeros((0, columns), np.int32))
    base = empty if full or baseline is None else baseline
    if base.rows.shape[1] != columns:
        raise SnapshotError(f"baseline rows have {base.rows.shape[1]} columns, want {columns}")
    n_base, n, n_added, n_changed = (int(head[k]) for k in ("n_base", "n", "n_added", "n_changed"))
    if n_base != len(base):
        raise SnapshotError(f"payload expects a baseline of {n_base} entities, got {len(base)}")

    removed, off = _bits(buf, off, n_base)
    added_arr, off = _take(buf, off, np.dtype("<u8"), n_added)
    keep = ~removed
    ids = np.concatenate([base.ids[keep], added_arr.view(np.uint64).astype(np.uint64)])
    rows = np.concatenate([base.rows[keep], np.zeros((n_added, columns), np.int32)])
    if ids.size != n:
        raise SnapshotError(f"entity count mismatch: header says {n}, lists give {ids.size}")
    order = np.argsort(ids, kind="stable")
    ids, rows = ids[order], rows[order]
    if n > 1 and bool(np.any(ids[1:] == ids[:-1])):
        raise SnapshotError("duplicate entity id")

    changed, off = _bits(buf, off, n)
    if int(changed.sum()) != n_changed:
        raise SnapshotError("changed bitmap disagrees with the header")
    masks_arr, off = _take(buf, off, np.dtype("u1"), n_changed)
    masks = masks_arr.view(np.uint8)
    where = np.flatnonzero(changed)
    for bit, dtype, cols in FIELDS:
        sel = where[(masks & bit) != 0]
        values, off = _take(buf, off, dtype, sel.size)
        for name, col in zip(dtype.names or (), cols, strict=True):
            v = values[name].astype(np.int32)
            if bit & DELTA_BITS:
                rows[sel, col] += v
            else:
                rows[sel, col] = v
    if schema:
        off = _components(buf, off, rows, schema)
    if off != len(buf):
        raise SnapshotError(f"{len(buf) - off} trailing bytes")

    is_new = np.isin(ids, added_arr.view(np.uint64))
    return Decoded(
        table=EntityTable(ids, rows),
        full=full,
        last_input_seq=int(head["last_input_seq"]),
        entered=ids[is_new],
        left=base.ids[removed],
    )


def full_size(n: int) -> int:
    """Bytes of a full snapshot of ``n`` entities (every field of every entity)."""
    per_entity = 8 + 1 + sum(d.itemsize for bit, d, _ in FIELDS if bit & FULL_MASK)
    return HEADER.itemsize + (n + 7) // 8 + per_entity * n


class SnapshotReceiver:
    """Client-side bookkeeping: keeps recent tables per sequence, decodes, says what to ack.

    Snapshots reference a baseline by sequence within a stream; when the stream
    changes (zone restart, re-attach) all baselines are dropped.
    """

    def __init__(self, keep: int = 64, schema: Sequence[Replicated] = ()) -> None:
        self.keep = keep
        self.schema = tuple(schema)
        self.stream = -1
        self.tables: dict[int, EntityTable] = {}
        self.latest = 0

    def apply(self, stream: int, sequence: int, baseline: int, payload: bytes) -> Decoded:
        """Decode one PlayerSnapshot's fields; raise SnapshotError if its baseline is gone."""
        if stream != self.stream:
            self.stream, self.tables, self.latest = stream, {}, 0
        if baseline and baseline not in self.tables:
            raise SnapshotError(f"baseline {baseline} of stream {stream} is not held")
        decoded = decode(payload, self.tables.get(baseline) if baseline else None, self.schema)
        self.tables[sequence] = decoded.table
        self.latest = max(self.latest, sequence)
        for old in [s for s in self.tables if s <= self.latest - self.keep]:
            del self.tables[old]
        return decoded

    def table(self) -> EntityTable:
        """The newest decoded table (empty before the first snapshot)."""
        empty = EntityTable(rows=np.zeros((0, width(self.schema)), np.int32))
        return self.tables.get(self.latest, empty)

    def ack(self) -> int:
        """The sequence to acknowledge (the newest decoded)."""
        return self.latest
