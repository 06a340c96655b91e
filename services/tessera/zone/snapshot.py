"""Batched snapshot encoding: every attached client's payload in one numpy pass.

Each client has a ring of its last ``history`` snapshots (sorted entity ids and
the quantized rows the client holds after decoding them). A new snapshot is
encoded against the newest snapshot the client acknowledged, or in full when
that baseline is unknown or has fallen out of the ring. The wire layout is
defined in :mod:`tessera.wire.snapshot` and docs/protocol/snapshot.md.

All clients are processed together: per-client rows are combined with the
client's row number into one sorted 64-bit key space (row << 40 | entity id), so
matching current entities against baselines is a single ``searchsorted``, and
every payload is scattered into one byte buffer. Entity ids must stay below
2**40 - 1, which :mod:`tessera.zone.store` guarantees.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.wire.snapshot import (
    COLUMNS,
    FACING,
    FIELDS,
    FLAG_FULL,
    FLAGS,
    FULL_MASK,
    HEADER,
    HEALTH,
    HEIGHT,
    IDENT,
    KIND,
    MOTION,
    POS8,
    POS16,
    POS32,
    TEAM,
    VERSION,
    VITALS,
    VX,
    VY,
    VZ,
    YAW,
    Quantization,
    X,
    Y,
    Z,
)

ID_LIMIT = (1 << 40) - 1
PAD = np.uint64(ID_LIMIT)
_ROW_SHIFT = np.uint64(40)

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


def quantize(
    quant: Quantization,
    *,
    pos: npt.NDArray[np.floating],
    vel: npt.NDArray[np.floating],
    yaw: npt.NDArray[np.floating],
    health: npt.NDArray[np.floating],
    flags: npt.NDArray[np.integer],
    kind: npt.NDArray[np.integer],
    team: npt.NDArray[np.integer],
) -> I32:
    """Quantized rows (n, COLUMNS) of entity states, clipped to their wire widths."""
    n = pos.shape[0]
    out = np.empty((n, COLUMNS), np.int32)
    step = quant.position_step_m
    ox, oy, oz = quant.origin
    out[:, X] = np.rint((pos[:, 0] - ox) / step)
    out[:, Z] = np.rint((pos[:, 2] - oz) / step)
    out[:, Y] = np.clip(np.rint((pos[:, 1] - oy) / step), -32768, 32767)
    turns = 1 << quant.yaw_bits
    out[:, YAW] = (
        np.rint(np.mod(yaw, 2 * math.pi) * (turns / (2 * math.pi))).astype(np.int64) % turns
    )
    out[:, VX : VZ + 1] = np.clip(np.rint(vel / quant.velocity_step_mps), -32768, 32767)
    out[:, HEALTH] = np.clip(np.rint(health), 0, 65535)
    out[:, FLAGS] = np.asarray(flags) & 0xFF
    out[:, KIND] = np.asarray(kind) & 0xFF
    out[:, TEAM] = np.asarray(team) & 0xFFFF
    return out


def row_view(a: npt.NDArray[Any]) -> npt.NDArray[np.void]:
    """A C-contiguous array's rows (first axis) as single opaque elements: moving
    whole rows by fancy index is then one copy per row instead of per value."""
    width = a.itemsize * math.prod(a.shape[1:])
    out: npt.NDArray[np.void] = a.reshape(a.shape[0], -1).view(np.dtype((np.void, width)))
    return out.reshape(a.shape[0])


@dataclass(frozen=True)
class EncodedBatch:
    """Payloads of one tick, aligned with the client rows passed in."""

    payloads: list[bytes]
    stream: npt.NDArray[np.uint32]
    sequence: I64
    baseline: I64
    full: Bools
    entities: I64
    entered: int
    left: int

    @property
    def bytes_total(self) -> int:
        return sum(len(p) for p in self.payloads)


class SnapshotEncoder:
    """Per-client snapshot rings and the batched delta encoder."""

    def __init__(self, cap: int, history: int = 32, rows: int = 16) -> None:
        if history < 2 or cap < 1:
            raise ValueError("need cap >= 1 and history >= 2")
        self.cap = cap
        self.history = history
        self._alloc(rows)
        self._free = list(range(rows - 1, -1, -1))

    def _alloc(self, rows: int) -> None:
        self.ids = np.full((rows, self.history, self.cap), PAD, np.uint64)
        self.valid = np.zeros((rows, self.history, self.cap), np.bool_)
        self.version = np.zeros((rows, self.history), np.int64)
        self.vals = np.zeros((rows, self.history, self.cap, COLUMNS), np.int32)
        self.seq_at = np.zeros((rows, self.history), np.int64)
        self.next_seq = np.ones(rows, np.int64)
        self.acked = np.zeros(rows, np.int64)
        self.stream = np.zeros(rows, np.uint32)

    def _arrays(self) -> list[npt.NDArray[Any]]:
        """Every per-client array, in one order (what _grow copies)."""
        return [
            self.ids,
            self.valid,
            self.version,
            self.vals,
            self.seq_at,
            self.next_seq,
            self.acked,
            self.stream,
        ]

    def _grow(self) -> None:
        old = self.ids.shape[0]
        saved = self._arrays()
        self._alloc(old * 2)
        fresh = self._arrays()
        for new, prev in zip(fresh, saved, strict=True):
            new[:old] = prev
        self._free.extend(range(old * 2 - 1, old - 1, -1))

    def open(self) -> int:
        """A fresh client row with a new random stream id (no baselines)."""
        if not self._free:
            self._grow()
        row = self._free.pop()
        self.ids[row] = PAD
        self.valid[row] = False
        self.seq_at[row] = 0
        self.next_seq[row] = 1
        self.acked[row] = 0
        self.stream[row] = secrets.randbelow(0xFFFFFFFF) + 1
        return row

    def close(self, row: int) -> None:
        """Release a client row."""
        self.stream[row] = 0
        self._free.append(row)

    def ack(self, row: int, stream: int, sequence: int) -> bool:
        """Record a client's acknowledgement; False if it names another stream or the future."""
        if stream != int(self.stream[row]) or not 0 < sequence < int(self.next_seq[row]):
            return False
        self.acked[row] = max(int(self.acked[row]), sequence)
        return True

    def encode(
        self,
        rows: I64,
        ids: U64,
        valid: Bools,
        vals: I32,
        *,
        last_input_seq: I64,
        version: I64 | None = None,
    ) -> EncodedBatch:
        """Encode one snapshot for each client row.

        ``ids`` (C, cap) are each client's visible entity ids, ascending per row
        (PAD-padded), ``valid`` marks the entries to send (an entity that
        vanished keeps its place but is invalid), ``vals`` (C, cap, COLUMNS) the
        quantized rows the client should hold after this snapshot. ``version``
        (C,) numbers each client's membership: while it is unchanged since the
        baseline, entries line up slot by slot and no matching is needed
        (None: always match by id).
        """
        c, k, h = rows.size, self.cap, self.history
        if c == 0:
            empty = np.zeros(0, np.int64)
            return EncodedBatch([], np.zeros(0, np.uint32), empty, empty, empty != 0, empty, 0, 0)
        vals = vals.reshape(c * k, COLUMNS)
        valid = valid.ravel()

        seq = self.next_seq[rows]
        acked = self.acked[rows]
        bslot = acked % h
        has_base = (acked > 0) & (self.seq_at[rows, bslot] == acked) & (seq - acked < h)
        # Flat index of each pair's baseline entry: slot by slot by default (same
        # membership version), re-pointed by id for clients whose members changed.
        bstart = (rows * h + bslot) * k
        bidx = (bstart[:, None] + np.arange(k)).ravel()
        bvalid = np.take(self.valid.reshape(-1), bidx) & np.repeat(has_base, k)
        bm = valid & bvalid
        still = bm.copy()
        moved = has_base.copy()
        if version is not None:
            moved &= self.version[rows, bslot] != version
        if moved.any():
            sub = np.flatnonzero(moved)
            flat = (sub[:, None] * k + np.arange(k)).ravel()
            rowkey = (np.arange(sub.size, dtype=np.uint64) << _ROW_SHIFT)[:, None]
            ck = (rowkey | ids[sub]).ravel()
            bk = (rowkey | np.take(self.ids.reshape(-1), bidx[flat]).reshape(sub.size, k)).ravel()
            cur, base = _merge_match(ck, bk)
            sub_bvalid = bvalid[flat]
            target = bidx[flat]
            target[cur] = target[base]  # read before write: a fresh array
            bidx[flat] = target
            keep = np.zeros(flat.size, np.bool_)
            keep[cur] = valid[flat][cur] & sub_bvalid[base]
            bm[flat] = keep
            stay = np.zeros(flat.size, np.bool_)
            stay[base] = valid[flat][cur]
            still[flat] = stay
        bvals = np.take(self.vals.reshape(-1, COLUMNS), bidx, axis=0)
        removed = bvalid & ~still
        added = valid & ~bm

        d = vals - bvals
        mask = _change_mask(d, added, valid)

        sections = _sections(
            c,
            k,
            ids=ids,
            vals=vals,
            d=d,
            mask=mask,
            removed=removed,
            added=added,
            bvalid=bvalid,
            valid=valid,
        )
        n_base = np.count_nonzero(bvalid.reshape(c, k), axis=1)
        n = np.count_nonzero(valid.reshape(c, k), axis=1)
        n_added = np.count_nonzero(added.reshape(c, k), axis=1)
        n_changed = np.count_nonzero(mask.reshape(c, k), axis=1)
        head = np.zeros(c, HEADER)
        head["version"] = VERSION
        head["flags"] = np.where(has_base, 0, FLAG_FULL)
        head["n_base"] = n_base
        head["n"] = n
        head["n_added"] = n_added
        head["n_changed"] = n_changed
        head["last_input_seq"] = last_input_seq
        sections.insert(
            0, (head.view(np.uint8), np.arange(c) * HEADER.itemsize, np.full(c, HEADER.itemsize))
        )
        payloads = _assemble(sections, c)

        slot = seq % h
        self.ids[rows, slot] = ids
        self.valid[rows, slot] = valid.reshape(c, k)
        self.version[rows, slot] = -1 if version is None else version
        self.vals[rows, slot] = vals.reshape(c, k, COLUMNS)
        self.seq_at[rows, slot] = seq
        self.next_seq[rows] = seq + 1
        return EncodedBatch(
            payloads=payloads,
            stream=self.stream[rows].copy(),
            sequence=seq,
            baseline=np.where(has_base, acked, 0),
            full=~has_base,
            entities=n,
            entered=int(added.sum() - (n * ~has_base).sum()),
            left=int(removed.sum()),
        )


def _merge_match(a: U64, b: U64) -> tuple[I64, I64]:
    """Index pairs (i, j) with ``a[i] == b[j]`` of two ascending key arrays whose
    keys are unique except for repeats of one padding key (matched at most once).

    A stable sort of the concatenation is a single merge of two runs (timsort),
    cheaper than two binary searches."""
    n = a.size
    both = np.concatenate((a, b))
    order = np.argsort(both, kind="stable")
    s = both[order]
    first, second = order[:-1], order[1:]
    hit = (s[1:] == s[:-1]) & (first < n) & (second >= n)
    return first[hit], second[hit] - n


def _change_mask(d: I32, added: Bools, valid: Bools) -> npt.NDArray[np.uint8]:
    nz = d != 0
    big = np.maximum(np.abs(d[:, X]), np.abs(d[:, Z]))
    mask = (nz[:, X] | nz[:, Z]).astype(np.uint8) * np.uint8(POS8)
    mask[big > 127] = POS16
    mask[big > 32767] = POS32
    mask |= nz[:, Y].astype(np.uint8) * np.uint8(HEIGHT)
    mask |= nz[:, YAW].astype(np.uint8) * np.uint8(FACING)
    mask |= (nz[:, VX] | nz[:, VY] | nz[:, VZ]).astype(np.uint8) * np.uint8(MOTION)
    mask |= (nz[:, HEALTH] | nz[:, FLAGS]).astype(np.uint8) * np.uint8(VITALS)
    mask |= (nz[:, KIND] | nz[:, TEAM]).astype(np.uint8) * np.uint8(IDENT)
    mask[added] = FULL_MASK
    mask[~valid] = 0
    out: npt.NDArray[np.uint8] = mask
    return out


Section = tuple[npt.NDArray[np.uint8], npt.NDArray[np.integer], npt.NDArray[np.integer]]


def _grouped(data: npt.NDArray[Any], counts: I64) -> Section:
    """A section whose values are contiguous per client, in client order."""
    lengths = counts * (data.dtype.itemsize * math.prod(data.shape[1:]))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return np.ascontiguousarray(data).view(np.uint8).ravel(), starts, lengths


def _sections(
    c: int,
    k: int,
    *,
    ids: U64,
    vals: I32,
    d: I32,
    mask: npt.NDArray[np.uint8],
    removed: Bools,
    added: Bools,
    bvalid: Bools,
    valid: Bools,
) -> list[Section]:
    out: list[Section] = [_bitmap(removed, bvalid, c, k)]
    out.append(
        _grouped(ids.ravel()[added].astype("<u8"), np.count_nonzero(added.reshape(c, k), axis=1))
    )
    changed = mask != 0
    out.append(_bitmap(changed, valid, c, k))
    where = np.flatnonzero(changed)
    masks = mask[where]
    owner = where // k
    out.append(_grouped(masks, np.bincount(owner, minlength=c)))
    present = int(np.bitwise_or.reduce(masks)) if masks.size else 0
    none = np.zeros(c, np.int64)
    for bit, dtype, cols in FIELDS:
        if not present & bit:  # no client has this field group this tick
            out.append((np.zeros(0, np.uint8), none, none))
            continue
        hit = np.flatnonzero(masks & bit)
        source = d if bit in (POS8, POS16) else vals
        counts = np.bincount(owner[hit], minlength=c)
        out.append(_grouped(_pack(source, where[hit], dtype, cols), counts))
    return out


def _pack(source: I32, sel: I64, dtype: np.dtype[np.void], cols: tuple[int, ...]) -> Any:
    """Wire structs of rows ``sel``: the adjacent columns of each row gathered as
    one opaque element (a strided void view), then cast (or copied per field
    when the struct mixes widths)."""
    first, width = cols[0], cols[-1] - cols[0] + 1
    source = np.ascontiguousarray(source)
    view: npt.NDArray[np.void] = np.ndarray(
        (source.shape[0],),
        dtype=np.dtype((np.void, width * source.itemsize)),
        buffer=source,
        offset=first * source.itemsize,
        strides=(source.strides[0],),
    )
    block = np.take(view, sel).view(source.dtype).reshape(sel.size, width)
    widths = {dtype.fields[name][0] for name in dtype.names or ()} if dtype.fields else set()
    if len(widths) == 1 and len(cols) == width:
        return block.astype(widths.pop())
    packed = np.empty(sel.size, dtype)
    for name, col in zip(dtype.names or (), cols, strict=True):
        packed[name] = block[:, col - first]
    return packed


def _bitmap(flags: Bools, present: Bools, c: int, k: int) -> Section:
    """Per client, ``flags`` of its present entries as an LSB-first bitmap padded
    to whole bytes; all clients' bitmaps back to back."""
    grid = present.reshape(c, k)
    if grid.all():
        packed = np.packbits(flags.reshape(c, k), axis=1, bitorder="little")
        return packed.ravel(), np.arange(c) * packed.shape[1], np.full(c, packed.shape[1])
    counts = np.count_nonzero(grid, axis=1)
    nbytes = (counts + 7) // 8
    starts = np.concatenate(([0], np.cumsum(nbytes)[:-1]))
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    bits = np.zeros(int(nbytes.sum()) * 8, np.bool_)
    at = np.repeat(starts * 8 - first, counts) + np.arange(int(counts.sum()))
    bits[at] = flags[present]
    return np.packbits(bits, bitorder="little"), starts, nbytes


def _assemble(sections: list[Section], c: int) -> list[bytes]:
    """Scatter every section's per-client slices into one buffer; split per client."""
    lengths = np.stack([s[2] for s in sections]).astype(np.int64)  # (S, C)
    totals = lengths.sum(0)
    client_off = np.concatenate(([0], np.cumsum(totals)[:-1]))
    within = np.cumsum(lengths, axis=0) - lengths
    buf = np.empty(int(totals.sum()), np.uint8)
    for (data, src_start, raw_length), dst_rel in zip(sections, within, strict=True):
        length = raw_length.astype(np.int64)
        count = int(length.sum())
        if count == 0:
            continue
        run_start = np.concatenate(([0], np.cumsum(length)[:-1]))
        dst = np.repeat(client_off + dst_rel - run_start, length) + np.arange(count)
        if np.array_equal(src_start, run_start):  # packed back to back: copy as is
            buf[dst] = data[:count]
        else:
            buf[dst] = data[
                np.repeat(np.asarray(src_start, np.int64) - run_start, length) + np.arange(count)
            ]
    raw = buf.tobytes()
    ends = client_off + totals
    return [raw[a:b] for a, b in zip(client_off.tolist(), ends.tolist(), strict=True)]
