"""Snapshot encoding: every attached client's payload in one compiled pass.

Each client has a ring of its last ``history`` snapshots (sorted entity ids and
the quantized rows the client holds after decoding them). A new snapshot is
encoded against the newest snapshot the client acknowledged, or in full when
that baseline is unknown or has fallen out of the ring. The wire layout is
defined in :mod:`tessera.wire.snapshot` and docs/protocol/snapshot.md; the
per-entity loop (baseline matching, change masks, bit packing) is compiled:
a tick runs :func:`tessera.zone.kernels.encode_due` (each client's tier
schedule, then its snapshot, in one pass), :meth:`SnapshotEncoder.encode`
encodes explicit values; both write all payloads into one buffer. Entity ids
must stay below 2**40 - 1 (the padding id), which :mod:`tessera.zone.store`
guarantees.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from tessera.wire.snapshot import (
    COLUMNS,
    FLAGS,
    HEALTH,
    KIND,
    TEAM,
    TIERS,
    VX,
    VZ,
    YAW,
    Quantization,
    Replicated,
    X,
    Y,
    Z,
    width,
)
from tessera.zone import kernels
from tessera.zone.interest import Due, Views

ID_LIMIT = (1 << 40) - 1
PAD = np.uint64(ID_LIMIT)
_NO_VERSION = np.zeros(0, np.int64)

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


class Acks(NamedTuple):
    """Snapshot acknowledgements (a relay's batch), one array per field."""

    players: list[str]
    stream: I64
    sequence: I64

    def take(self, index: I64) -> Acks:
        """The acknowledgements at ``index``, in that order."""
        players = [self.players[i] for i in index.tolist()]
        return Acks(players, self.stream[index], self.sequence[index])


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


def quantize_components(
    components: Sequence[Replicated], columns: Mapping[str, npt.NDArray[Any]], carried: Bools
) -> tuple[I32, dict[str, int]]:
    """The table columns of the replicated ``components`` of the first
    ``carried.size`` entities (the presence bitmask: every component where
    ``carried``, none elsewhere; then each quantized value) and, per component,
    how many values were clamped to fit its bits."""
    n = carried.size
    out = np.empty((n, 1 + len(components)), np.int32)
    out[:, 0] = np.where(carried, np.uint32((1 << len(components)) - 1).view(np.int32), 0)
    clamped: dict[str, int] = {}
    for e, comp in enumerate(components):
        out[:, 1 + e], clamped[comp.name] = comp.quantize(columns[comp.name][:n])
    return out, clamped


def tier_bits(components: Sequence[Replicated]) -> I64:
    """Per interest tier (near, mid, far), the bitmask of the components it carries."""
    return np.array(
        [sum(1 << e for e, c in enumerate(components) if tier in c.tiers) for tier in TIERS],
        np.int64,
    )


@dataclass(frozen=True)
class EncodedBatch:
    """Payloads of one tick, aligned with the client rows passed in: payload i
    is ``raw[ends[i-1]:ends[i]]`` (``payloads`` slices them on first use; the
    link fan-out reads ``raw`` itself)."""

    raw: bytes
    ends: I64
    stream: npt.NDArray[np.uint32]
    sequence: I64
    baseline: I64
    full: Bools
    entities: I64
    entered: int
    left: int

    @classmethod
    def of(cls, payloads: Sequence[bytes], **fields: Any) -> EncodedBatch:
        """A batch of separate ``payloads``."""
        ends = np.cumsum([len(p) for p in payloads], dtype=np.int64)
        return cls(b"".join(payloads), ends, **fields)

    @cached_property
    def payloads(self) -> list[bytes]:
        raw, ends = self.raw, self.ends.tolist()
        return [raw[a:b] for a, b in zip([0, *ends], ends, strict=False)]

    @property
    def sizes(self) -> I64:
        """Each payload's length."""
        return np.diff(self.ends, prepend=0)

    @property
    def bytes_total(self) -> int:
        return len(self.raw)


def _empty() -> EncodedBatch:
    """The batch of a tick with no snapshot to send."""
    none = np.zeros(0, np.int64)
    return EncodedBatch(b"", none, np.zeros(0, np.uint32), none, none, none != 0, none, 0, 0)


# The per-client arrays (first axis: client row), in one order.
_CLIENT_ARRAYS = ("ids", "valid", "version", "vals", "seq_at", "next_seq", "acked", "stream")


class SnapshotEncoder:
    """Per-client snapshot rings and the batched delta encoder; ``components``
    are the replicated components that follow the built-in columns."""

    # Per client row: its ring of the last ``history`` snapshots (ids, valid,
    # version, vals, seq_at) and its stream state (0: the row is free).
    ids: U64  # (rows, history, cap)
    valid: Bools  # (rows, history, cap)
    version: I64  # (rows, history)
    vals: npt.NDArray[np.int32]  # (rows, history, cap, columns)
    seq_at: I64  # (rows, history)
    next_seq: I64  # (rows,)
    acked: I64  # (rows,)
    stream: npt.NDArray[np.uint32]  # (rows,)

    def __init__(
        self, cap: int, history: int = 32, rows: int = 16, components: Sequence[Replicated] = ()
    ) -> None:
        if history < 2 or cap < 1:
            raise ValueError("need cap >= 1 and history >= 2")
        self.cap = cap
        self.history = history
        self.columns = width(components)
        self.widths = np.array([c.width for c in components], np.int64)
        self._buf = np.empty(0, np.uint8)  # payload scratch, reused across ticks
        self._set(self._fresh(rows))
        self._free = list(range(rows - 1, -1, -1))

    def _fresh(self, rows: int) -> list[npt.NDArray[Any]]:
        """New per-client arrays, in ``_CLIENT_ARRAYS`` order. np.full, not np.zeros:
        every page is written (faulted in) here, not by the first tick that sends
        full snapshots to the clients of these rows (huge-page faults took 25-60 ms
        of that tick: docs/BENCHMARKS.md)."""
        shape = (rows, self.history, self.cap)
        return [
            np.full(shape, PAD, np.uint64),
            np.full(shape, False),
            np.full((rows, self.history), 0, np.int64),
            np.full((*shape, self.columns), 0, np.int32),
            np.full((rows, self.history), 0, np.int64),
            np.ones(rows, np.int64),
            np.zeros(rows, np.int64),
            np.zeros(rows, np.uint32),
        ]

    def _arrays(self) -> list[npt.NDArray[Any]]:
        """Every per-client array, in one order."""
        return [getattr(self, name) for name in _CLIENT_ARRAYS]

    def _set(self, arrays: list[npt.NDArray[Any]]) -> None:
        for name, array in zip(_CLIENT_ARRAYS, arrays, strict=True):
            setattr(self, name, array)

    @property
    def rows(self) -> int:
        """Client rows held (in use or free)."""
        return int(self.ids.shape[0])

    @property
    def spare(self) -> int:
        """Client rows free."""
        return len(self._free)

    def allocate(self, clients: int) -> list[npt.NDArray[Any]] | None:
        """Arrays for at least ``clients`` client rows (at least twice the rows
        held), every page faulted in; None if there is room. It reads nothing but
        :attr:`rows`, so it can run on a worker thread while the encoder is in use:
        the first touch of tens of MB is what growing costs (docs/ZONE.md)."""
        if clients <= self.rows:
            return None
        return self._fresh(max(clients, self.rows * 2))

    def install(self, grown: list[npt.NDArray[Any]] | None) -> None:
        """Take arrays from :meth:`allocate`: the rows held are copied in, the rest
        become free. Nothing happens if the encoder holds as many rows already."""
        old = self.rows
        if grown is None or grown[0].shape[0] <= old:
            return
        for new, prev in zip(grown, self._arrays(), strict=True):
            new[:old] = prev
        self._set(grown)
        self._free[:0] = range(self.rows - 1, old - 1, -1)  # popped last: lowest row first

    def reserve(self, clients: int) -> None:
        """Room for at least ``clients`` client rows, in one allocation. Each growth
        copies every row's ring (tens of MB at a few hundred clients), so a zone
        about to receive many clients at once grows once, before they attach,
        rather than by doubling while they do."""
        self.install(self.allocate(clients))

    def open(self) -> int:
        """A fresh client row with a new random stream id (no baselines)."""
        if not self._free:
            self.reserve(self.rows * 2)
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

    def ack_many(self, rows: I64, sequence: I64) -> None:
        """Acknowledge the snapshots just encoded for ``rows`` (their own, so valid)."""
        self.acked[rows] = np.maximum(self.acked[rows], sequence)

    def ack_received(self, rows: I64, stream: I64, sequence: I64) -> int:
        """Record clients' acknowledgements (a row may repeat), as :meth:`ack` does
        one by one; those naming another stream or the future are ignored. The
        count recorded."""
        ok = (self.stream[rows] == stream) & (sequence > 0) & (sequence < self.next_seq[rows])
        np.maximum.at(self.acked, rows[ok], sequence[ok])
        return int(ok.sum())

    def encode(
        self,
        rows: I64,
        ids: U64,
        valid: Bools,
        vals: I32,
        *,
        last_input_seq: I64,
        version: I64 | None = None,
        at: I64 | None = None,
    ) -> EncodedBatch:
        """Encode one snapshot for each client row.

        ``ids`` (C, cap) are each client's visible entity ids, ascending per row
        (PAD-padded), ``valid`` marks the entries to send (an entity that
        vanished keeps its place but is invalid), ``vals`` (C, cap, columns) the
        quantized rows the client should hold after this snapshot. ``version``
        (C,) numbers each client's membership: while it is unchanged since the
        baseline, entries line up slot by slot and no matching is needed
        (None: always match by id). With ``at`` (C,), client i's ids and values
        are read in place from ``ids[at[i]]`` and ``vals[at[i]]`` (all view rows:
        uint64 and int32, C-contiguous).
        """
        c, k = rows.size, self.cap
        if c == 0:
            return _empty()
        rows = np.ascontiguousarray(rows, np.int64)
        seq, acked, buf, ends, has_base, counts = self._scratch(rows)
        if at is None:
            at = np.arange(c, dtype=np.int64)
            ids = np.ascontiguousarray(ids, np.uint64).reshape(c, k)
            vals = np.ascontiguousarray(vals, np.int32).reshape(c, k, self.columns)
        kernels.encode_batch(
            rows,
            np.ascontiguousarray(at, np.int64),
            ids,
            np.ascontiguousarray(valid, np.bool_).reshape(c, k),
            vals,
            np.ascontiguousarray(last_input_seq, np.int64),
            _NO_VERSION if version is None else np.ascontiguousarray(version, np.int64),
            version is not None,
            *self._ring(),
            buf,
            ends,
            has_base,
            counts,
            self.widths,
        )
        return self._batch(rows, seq=seq, acked=acked, ends=ends, has_base=has_base, counts=counts)

    def encode_due(self, views: Views, due: Due, *, last_input_seq: I64) -> EncodedBatch:
        """Refresh each client's due view slots (the tier schedule ``due``, from
        :func:`tessera.zone.interest.due`) and encode its snapshot in the same
        pass. ``due.clients`` are both view and encoder rows; ``due.valid`` is
        filled with the slots that hold an entity."""
        rows = due.clients
        if rows.size == 0:
            return _empty()
        seq, acked, buf, ends, has_base, counts = self._scratch(rows)
        kernels.encode_due(
            rows,
            due.viewers,
            views.rows,
            views.known,
            views.sent,
            views.ids,
            views.version,
            due.pos,
            due.entity_ids,
            due.table,
            due.beat,
            due.near2,
            due.mid2,
            due.mid_every,
            due.far_every,
            due.tier_bits,
            np.ascontiguousarray(last_input_seq, np.int64),
            *self._ring(),
            buf,
            ends,
            has_base,
            counts,
            self.widths,
            due.valid,
        )
        return self._batch(rows, seq=seq, acked=acked, ends=ends, has_base=has_base, counts=counts)

    def _ring(self) -> tuple[U64, Bools, I64, I32, I64, I64, I64]:
        """The ring arrays in the kernels' argument order."""
        return (
            self.ids,
            self.valid,
            self.version,
            self.vals,
            self.seq_at,
            self.next_seq,
            self.acked,
        )

    def _scratch(self, rows: I64) -> tuple[I64, I64, npt.NDArray[np.uint8], I64, Bools, I64]:
        """Sequence numbers and acks before encoding, the reused payload buffer, and
        fresh end offsets, delta flags and counts for ``rows``."""
        c = rows.size
        need = kernels.payload_bound(c, self.cap, self.widths)
        if self._buf.size < need:
            self._buf = np.empty(need, np.uint8)
        return (
            self.next_seq[rows],
            self.acked[rows],
            self._buf,
            np.empty(c, np.int64),
            np.empty(c, np.bool_),
            np.empty((c, 3), np.int64),
        )

    def _batch(
        self, rows: I64, *, seq: I64, acked: I64, ends: I64, has_base: Bools, counts: I64
    ) -> EncodedBatch:
        """The batch the kernel wrote into the payload buffer."""
        n = counts[:, 0].copy()
        return EncodedBatch(
            raw=self._buf[: int(ends[-1])].tobytes(),
            ends=ends,
            stream=self.stream[rows].copy(),
            sequence=seq,
            baseline=np.where(has_base, acked, 0),
            full=~has_base,
            entities=n,
            entered=int(counts[:, 1].sum() - n[~has_base].sum()),
            left=int(counts[:, 2].sum()),
        )
