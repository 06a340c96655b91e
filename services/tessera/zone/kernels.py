"""Compiled tick kernels (numba, nopython): the per-pair loops of interest and encode.

Each kernel is the one implementation of its rule; the callers in
:mod:`tessera.zone.interest` and :mod:`tessera.zone.snapshot` pass plain numpy
arrays in and out. Compiled code is cached on disk (``NUMBA_CACHE_DIR``,
docs/ZONE.md "Compiled kernels"); ``simulation.warm_up`` compiles or loads every
kernel with the argument types a tick uses before the zone reports ready, so no
tick waits for the JIT.

Inputs are finite by construction (inputs.py drops NaN/inf before they reach
entity state). Entity rows read from views are checked against the entity table
(a row outside it is an empty slot); every other index comes from the encoder's
own ring and the view width.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tessera.wire.snapshot import (
    FACING,
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
    X,
    Y,
    Z,
)

HEADER_BYTES = HEADER.itemsize
# Most bytes one entity can take: id, mask, and every field group at its widest.
ENTITY_BYTES_MAX = 8 + 1 + 8 + 2 + 2 + 6 + 3 + 3


GRID_MAX = 256  # cells a side of the interest grid at most (far-flung entities widen cells)


def payload_bound(clients: int, cap: int) -> int:
    """Bytes that always hold ``clients`` payloads of at most ``cap`` entities."""
    return clients * (HEADER_BYTES + 2 * ((cap + 7) // 8) + ENTITY_BYTES_MAX * cap)


@njit(cache=True, nogil=True)
def _put(buf: np.ndarray, at: int, value: int, nbytes: int) -> int:
    """Write ``value``'s low ``nbytes`` bytes little-endian at ``at``; the next offset."""
    for b in range(nbytes):
        buf[at + b] = (value >> (8 * b)) & 0xFF
    return at + nbytes


@njit(cache=True, nogil=True)
def encode_batch(  # noqa: PLR0917 (numba kernels take positional arguments)
    rows: np.ndarray,
    src: np.ndarray,
    ids: np.ndarray,
    valid: np.ndarray,
    vals: np.ndarray,
    last_input_seq: np.ndarray,
    version: np.ndarray,
    has_version: bool,
    e_ids: np.ndarray,
    e_valid: np.ndarray,
    e_version: np.ndarray,
    e_vals: np.ndarray,
    seq_at: np.ndarray,
    next_seq: np.ndarray,
    acked: np.ndarray,
    buf: np.ndarray,
    ends: np.ndarray,
    has_base: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Delta-encode one snapshot per client row into ``buf`` and store it in the ring.

    Client i sees ``ids[src[i]]`` with values ``vals[src[i]]`` where ``valid[i]``.
    Its payload is ``buf[ends[i-1]:ends[i]]``; ``has_base[i]`` says it is a
    delta; ``counts[i]`` holds (entities, added, removed). Rows must be distinct.
    Baseline entries are matched slot by slot while the membership version is
    unchanged, else by id (a merge of two ascending id lists; in a run of equal
    ids only the last current and first baseline entry pair up).
    """
    c, k = valid.shape
    h = seq_at.shape[1]
    bptr = np.empty(k, np.int64)  # each slot's baseline entry, -1 for none
    still = np.empty(k, np.bool_)  # baseline entries still present
    mask = np.empty(k, np.int64)
    dx = np.empty(k, np.int64)
    dz = np.empty(k, np.int64)
    at = 0
    for i in range(c):
        r = rows[i]
        s = src[i]
        cur = ids[s]
        seq = next_seq[r]
        ack = acked[r]
        bslot = ack % h
        base = ack > 0 and seq_at[r, bslot] == ack and seq - ack < h
        has_base[i] = base
        bids = e_ids[r, bslot]
        bvalid = e_valid[r, bslot]
        if base and has_version and e_version[r, bslot] == version[i]:
            for j in range(k):
                bptr[j] = j if valid[i, j] and bvalid[j] else -1
                still[j] = bptr[j] >= 0
        else:
            bptr[:] = -1
            still[:] = False
        if base and (not has_version or e_version[r, bslot] != version[i]):
            a = 0
            b = 0
            while a < k and b < k:
                if cur[a] < bids[b]:
                    a += 1
                elif cur[a] > bids[b]:
                    b += 1
                else:
                    key = cur[a]
                    while a + 1 < k and cur[a + 1] == key:
                        a += 1
                    bptr[a] = b if valid[i, a] and bvalid[b] else -1
                    still[b] = valid[i, a]
                    a += 1
                    while b < k and bids[b] == key:
                        b += 1
        n = 0
        n_base = 0
        n_removed = 0
        if base:
            for j in range(k):
                if bvalid[j]:
                    n_base += 1
                    if not still[j]:
                        n_removed += 1
        n_added = 0
        n_changed = 0
        for j in range(k):
            if not valid[i, j]:
                mask[j] = 0
                continue
            n += 1
            b = bptr[j]
            if b < 0:
                mask[j] = FULL_MASK
                n_added += 1
                n_changed += 1
                continue
            # deltas wrap to int32, as the wire's delta fields do
            ddx = np.int64(np.int32(vals[s, j, X] - e_vals[r, bslot, b, X]))
            ddz = np.int64(np.int32(vals[s, j, Z] - e_vals[r, bslot, b, Z]))
            dx[j] = ddx
            dz[j] = ddz
            big = max(abs(ddx), abs(ddz))
            m = 0
            if big > 32767:
                m = POS32
            elif big > 127:
                m = POS16
            elif big != 0:
                m = POS8
            if vals[s, j, Y] != e_vals[r, bslot, b, Y]:
                m |= HEIGHT
            if vals[s, j, YAW] != e_vals[r, bslot, b, YAW]:
                m |= FACING
            if (
                vals[s, j, VX] != e_vals[r, bslot, b, VX]
                or vals[s, j, VY] != e_vals[r, bslot, b, VY]
                or vals[s, j, VZ] != e_vals[r, bslot, b, VZ]
            ):
                m |= MOTION
            if (
                vals[s, j, HEALTH] != e_vals[r, bslot, b, HEALTH]
                or vals[s, j, FLAGS] != e_vals[r, bslot, b, FLAGS]
            ):
                m |= VITALS
            if (
                vals[s, j, KIND] != e_vals[r, bslot, b, KIND]
                or vals[s, j, TEAM] != e_vals[r, bslot, b, TEAM]
            ):
                m |= IDENT
            mask[j] = m
            if m != 0:
                n_changed += 1
        counts[i, 0] = n
        counts[i, 1] = n_added
        counts[i, 2] = n_removed
        v = vals[s]

        at = _put(buf, at, VERSION, 1)
        at = _put(buf, at, 0 if base else FLAG_FULL, 1)
        at = _put(buf, at, n_base, 2)
        at = _put(buf, at, n, 2)
        at = _put(buf, at, n_added, 2)
        at = _put(buf, at, n_changed, 2)
        at = _put(buf, at, last_input_seq[i], 4)
        # removed bitmap, over the baseline's present entries
        nbytes = (n_base + 7) // 8
        buf[at : at + nbytes] = 0
        bit = 0
        for j in range(k):
            if base and bvalid[j]:
                if not still[j]:
                    buf[at + (bit >> 3)] |= 1 << (bit & 7)
                bit += 1
        at += nbytes
        for j in range(k):
            if valid[i, j] and bptr[j] < 0:
                eid = cur[j]
                for b in range(8):
                    buf[at + b] = (eid >> np.uint64(8 * b)) & np.uint64(0xFF)
                at += 8
        # changed bitmap, over the present entities
        nbytes = (n + 7) // 8
        buf[at : at + nbytes] = 0
        bit = 0
        for j in range(k):
            if valid[i, j]:
                if mask[j] != 0:
                    buf[at + (bit >> 3)] |= 1 << (bit & 7)
                bit += 1
        at += nbytes
        for j in range(k):
            if mask[j] != 0:
                buf[at] = mask[j]
                at += 1
        for j in range(k):
            if mask[j] & POS8:
                at = _put(buf, at, dx[j], 1)
                at = _put(buf, at, dz[j], 1)
        for j in range(k):
            if mask[j] & POS16:
                at = _put(buf, at, dx[j], 2)
                at = _put(buf, at, dz[j], 2)
        for j in range(k):
            if mask[j] & POS32:
                at = _put(buf, at, v[j, X], 4)
                at = _put(buf, at, v[j, Z], 4)
        for j in range(k):
            if mask[j] & HEIGHT:
                at = _put(buf, at, v[j, Y], 2)
        for j in range(k):
            if mask[j] & FACING:
                at = _put(buf, at, v[j, YAW], 2)
        for j in range(k):
            if mask[j] & MOTION:
                at = _put(buf, at, v[j, VX], 2)
                at = _put(buf, at, v[j, VY], 2)
                at = _put(buf, at, v[j, VZ], 2)
        for j in range(k):
            if mask[j] & VITALS:
                at = _put(buf, at, v[j, HEALTH], 2)
                at = _put(buf, at, v[j, FLAGS], 1)
        for j in range(k):
            if mask[j] & IDENT:
                at = _put(buf, at, v[j, KIND], 1)
                at = _put(buf, at, v[j, TEAM], 2)
        ends[i] = at

        slot = seq % h
        e_ids[r, slot] = cur
        e_valid[r, slot] = valid[i]
        e_version[r, slot] = version[i] if has_version else -1
        e_vals[r, slot] = v
        seq_at[r, slot] = seq
        next_seq[r] = seq + 1


@njit(cache=True, nogil=True)
def take_due(  # noqa: PLR0917 (numba kernels take positional arguments)
    clients: np.ndarray,
    viewers: np.ndarray,
    view_rows: np.ndarray,
    known: np.ndarray,
    sent: np.ndarray,
    pos: np.ndarray,
    entity_ids: np.ndarray,
    table: np.ndarray,
    beat: int,
    near2: float,
    mid2: float,
    mid_every: int,
    far_every: int,
    valid: np.ndarray,
) -> None:
    """Refresh the due view slots (``sent``) of each client from the quantized ``table``.

    A slot is due when its entity is within the near radius, within the mid
    radius on a mid tick, on a far tick (ticks staggered by entity id) or not yet
    known to the client. ``valid`` marks the slots holding an entity (row >= 0).
    """
    k = view_rows.shape[1]
    n = pos.shape[0]
    for i in range(clients.size):
        cl = clients[i]
        vx = viewers[i, 0]
        vz = viewers[i, 1]
        for j in range(k):
            row = view_rows[cl, j]
            ok = 0 <= row < n
            valid[i, j] = ok
            if ok:
                dx = pos[row, 0] - vx
                dz = pos[row, 2] - vz
                d2 = dx * dx + dz * dz
                phase = np.int64(entity_ids[row] + np.uint64(beat))
                due = d2 <= near2 or phase % far_every == 0 or not known[cl, j]
                due = due or (d2 <= mid2 and phase % mid_every == 0)
                if due:
                    sent[cl, j] = table[row]
            known[cl, j] = ok


@njit(cache=True, nogil=True)
def refresh_views(  # noqa: PLR0917 (numba kernels take positional arguments)
    clients: np.ndarray,
    new_rows: np.ndarray,
    entity_ids: np.ndarray,
    pad: np.uint64,
    ids: np.ndarray,
    rows: np.ndarray,
    sent: np.ndarray,
    known: np.ndarray,
    version: np.ndarray,
) -> None:
    """Give each client (view row ``clients[i]``) the members at entity rows
    ``new_rows[i]``, which must be in ascending id order (empty slots, any row
    outside the entity table, last). A client whose ids and rows are unchanged
    keeps its view as is; otherwise members it had already been sent keep their
    sent values (and stay known), new ones are unknown, and its version moves on."""
    c, k = new_rows.shape
    n = entity_ids.size
    new_ids = np.empty(k, np.uint64)
    new = np.empty(k, np.int64)
    old_sent = np.empty((k, sent.shape[2]), sent.dtype)
    old_known = np.empty(k, np.bool_)
    old_ids = np.empty(k, np.uint64)
    for i in range(c):
        cl = clients[i]
        changed = False
        for j in range(k):
            r = new_rows[i, j]
            if 0 <= r < n:
                new[j] = r
                new_ids[j] = entity_ids[r]
            else:
                new[j] = -1
                new_ids[j] = pad
            changed = changed or new_ids[j] != ids[cl, j] or new[j] != rows[cl, j]
        if not changed:
            continue
        old_sent[:] = sent[cl]
        old_known[:] = known[cl]
        old_ids[:] = ids[cl]
        b = 0  # both id lists ascend: one merge pass finds each carried-over member
        for j in range(k):
            key = new_ids[j]
            while b < k and old_ids[b] < key:
                b += 1
            found = b < k and old_ids[b] == key and old_known[b]
            if found:
                sent[cl, j] = old_sent[b]
            known[cl, j] = found and key != pad
            ids[cl, j] = key
            rows[cl, j] = new[j]
        version[cl] += 1


@njit(cache=True, nogil=True)
def _before(key_a: float, row_a: int, key_b: float, row_b: int) -> bool:
    """(key, row) order: equal keys go to the lower row."""
    return key_a < key_b or (key_a == key_b and row_a < row_b)


@njit(cache=True, nogil=True)
def _keep_smallest(key: np.ndarray, rows: np.ndarray, m: int, want: int) -> int:
    """Reorder ``key[:m]``/``rows[:m]`` in place (quickselect) so the first
    ``want`` entries are those of smallest (key, row); the count kept."""
    if m <= want:
        return m
    lo, hi, kth = 0, m - 1, want - 1
    while lo < hi:
        mid = (lo + hi) >> 1  # median of three as the pivot
        a, b, c = lo, mid, hi
        if _before(key[b], rows[b], key[a], rows[a]):
            a, b = b, a
        if _before(key[c], rows[c], key[b], rows[b]):
            b = c
            if _before(key[b], rows[b], key[a], rows[a]):
                b = a
        pk, pr = key[b], rows[b]
        i, j = lo, hi
        while i <= j:
            while _before(key[i], rows[i], pk, pr):
                i += 1
            while _before(pk, pr, key[j], rows[j]):
                j -= 1
            if i <= j:
                key[i], key[j] = key[j], key[i]
                rows[i], rows[j] = rows[j], rows[i]
                i += 1
                j -= 1
        if kth <= j:
            hi = j
        elif kth >= i:
            lo = i
        else:
            break
    return want


@njit(cache=True, nogil=True)
def _grid(
    xz: np.ndarray, cell: float
) -> tuple[float, float, float, int, int, np.ndarray, np.ndarray]:
    """Bucket entity rows into a uniform grid over their bounding box (at most
    GRID_MAX cells a side): origin x, z, cell size, cells along x and z, the
    start of each cell's rows in ``order`` (cells row-major, rows ascending)."""
    n = xz.shape[0]
    x0 = x1 = xz[0, 0]
    z0 = z1 = xz[0, 1]
    for r in range(1, n):
        x0 = min(x0, xz[r, 0])
        x1 = max(x1, xz[r, 0])
        z0 = min(z0, xz[r, 1])
        z1 = max(z1, xz[r, 1])
    size = max(cell, (x1 - x0) / GRID_MAX, (z1 - z0) / GRID_MAX)
    nx = min(int((x1 - x0) / size), GRID_MAX) + 1
    nz = min(int((z1 - z0) / size), GRID_MAX) + 1
    start = np.zeros(nx * nz + 1, np.int64)
    of = np.empty(n, np.int64)
    for r in range(n):
        ci = min(int((xz[r, 0] - x0) / size), nx - 1)
        cj = min(int((xz[r, 1] - z0) / size), nz - 1)
        of[r] = ci * nz + cj
        start[of[r] + 1] += 1
    for t in range(nx * nz):
        start[t + 1] += start[t]
    fill = start[:-1].copy()
    order = np.empty(n, np.int64)
    for r in range(n):
        order[fill[of[r]]] = r
        fill[of[r]] += 1
    return x0, z0, size, nx, nz, start, order


@njit(cache=True, nogil=True)
def visible(  # noqa: PLR0917 (numba kernels take positional arguments)
    xz: np.ndarray,
    viewers: np.ndarray,
    boost: np.ndarray,
    entity_ids: np.ndarray,
    far: float,
    nearest: int,
    cap: int,
    cell: float,
    out: np.ndarray,
) -> None:
    """The entity rows each viewer sees, in ascending id order, into ``out`` (-1 pads).

    Of the entities closer than ``far`` (x, z distance), the ``nearest`` closest
    are candidates and the ``cap`` of them with the lowest distance minus
    ``boost`` are seen; equal keys go to the lower entity row. Candidates come
    from a uniform grid searched ring by ring outwards until the rings left can
    hold nothing closer than the ``nearest``-th candidate, or nothing within ``far``.
    """
    n = xz.shape[0]
    out[:] = -1
    if n == 0 or cap <= 0:
        return
    x0, z0, size, nx, nz, start, order = _grid(xz, cell)
    far2 = far * far
    cand = np.empty(n, np.int64)
    dist = np.empty(n, np.float64)
    score = np.empty(n, np.float64)
    width = min(cap, out.shape[1])
    by_id = np.argsort(entity_ids)
    rank = np.empty(n, np.int64)
    for t in range(n):
        rank[by_id[t]] = t
    marked = np.zeros(n, np.bool_)
    for i in range(viewers.shape[0]):
        vx = viewers[i, 0]
        vz = viewers[i, 1]
        cx = int(min(max(np.floor((vx - x0) / size), -1.0), float(nx)))
        cz = int(min(max(np.floor((vz - z0) / size), -1.0), float(nz)))
        m = 0
        r = 0
        while True:
            ilo, ihi, jlo, jhi = cx - r, cx + r, cz - r, cz + r
            for ci in range(max(ilo, 0), min(ihi, nx - 1) + 1):
                step = 1 if ci in (ilo, ihi) else max(jhi - jlo, 1)  # ring cells only
                for cj in range(jlo, jhi + 1, step):
                    if cj < 0 or cj >= nz:
                        continue
                    cellno = ci * nz + cj
                    for t in range(start[cellno], start[cellno + 1]):
                        row = order[t]
                        dx = xz[row, 0] - vx
                        dz = xz[row, 1] - vz
                        d2 = dx * dx + dz * dz
                        if d2 < far2:
                            cand[m] = row
                            dist[m] = np.sqrt(d2)
                            m += 1
            # nothing outside these rings is closer than `bound`
            bound = np.inf
            if ilo > 0:
                bound = min(bound, vx - (x0 + ilo * size))
            if ihi < nx - 1:
                bound = min(bound, x0 + (ihi + 1) * size - vx)
            if jlo > 0:
                bound = min(bound, vz - (z0 + jlo * size))
            if jhi < nz - 1:
                bound = min(bound, z0 + (jhi + 1) * size - vz)
            if bound >= far:
                break
            if m >= nearest:
                safe = bound * (1.0 - 1e-9) - 1e-9  # cell bucketing rounds
                inside = 0
                for t in range(m):
                    if dist[t] < safe:
                        inside += 1
                if inside >= nearest:
                    break
            r += 1
        m = _keep_smallest(dist, cand, m, nearest)
        for t in range(m):
            score[t] = dist[t] - boost[cand[t]]
        m = _keep_smallest(score, cand, m, width)
        lo, hi = n, -1  # id order: mark the ranks, then scan the marked span
        for t in range(m):
            at = rank[cand[t]]
            marked[at] = True
            lo = min(lo, at)
            hi = max(hi, at)
        w = 0
        for at in range(lo, hi + 1):
            if marked[at]:
                out[i, w] = by_id[at]
                marked[at] = False
                w += 1
