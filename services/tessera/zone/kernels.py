"""Compiled tick kernels (numba, nopython): the per-pair loops of interest, encode,
aim and NPC chase, and the per-entity input buffer and movement step.

Each kernel is the one implementation of its rule; the callers in
:mod:`tessera.zone.interest`, :mod:`tessera.zone.snapshot`,
:mod:`tessera.zone.combat`, :mod:`tessera.zone.npc`, :mod:`tessera.zone.inputs` and
:mod:`tessera.zone.movement` pass plain numpy arrays in and out. Compiled code
is cached on disk (``NUMBA_CACHE_DIR``, docs/ZONE.md "Compiled kernels");
``simulation.warm_up`` compiles or loads every kernel with the argument types
a tick uses before the zone reports ready, so no tick waits for the JIT.

Inputs are finite by construction (inputs.py drops NaN/inf before they reach
entity state). Entity rows read from views are checked against the entity table
(a row outside it is an empty slot); every other index comes from the encoder's
own ring and the view width.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from tessera.wire.snapshot import (
    COMPONENTS_MAX,
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
    PRESENT,
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

# The index of a one-bit uint64 by a de Bruijn sequence: (bit * _DE_BRUIJN) >> 58 is
# distinct for each of the 64 bits.
_DE_BRUIJN = np.uint64(0x022FDD63CC95386D)
_BIT_AT = np.zeros(64, np.int64)
_BIT_AT[[((1 << b) * int(_DE_BRUIJN) & (2**64 - 1)) >> 58 for b in range(64)]] = range(64)


def payload_bound(clients: int, cap: int, widths: np.ndarray) -> int:
    """Bytes that always hold ``clients`` payloads of at most ``cap`` entities,
    with replicated components of ``widths`` bytes each."""
    bitmaps, per_entity = 2, ENTITY_BYTES_MAX
    if widths.size:
        bitmaps, per_entity = 3, per_entity + 2 * ((widths.size + 7) // 8) + int(widths.sum())
    return clients * (HEADER_BYTES + bitmaps * ((cap + 7) // 8) + per_entity * cap)


@njit(cache=True, nogil=True)
def _put(buf: np.ndarray, at: int, value: int | np.integer[Any], nbytes: int) -> int:
    """Write ``value``'s low ``nbytes`` bytes little-endian at ``at``; the next offset."""
    for b in range(nbytes):
        buf[at + b] = (value >> (8 * b)) & 0xFF
    return at + nbytes


@njit(cache=True, nogil=True)
def _varint(buf: np.ndarray, at: int, value: np.uint64) -> int:
    """Write ``value`` as a protobuf base-128 varint at ``at``; the next offset."""
    while value >= 0x80:
        buf[at] = (value & 0x7F) | 0x80
        value >>= 7
        at += 1
    buf[at] = value
    return at + 1


@njit(cache=True, nogil=True)
def proto_rows(  # noqa: PLR0917 (numba kernels take positional arguments)
    varints: np.ndarray,
    varint_tags: np.ndarray,
    floats: np.ndarray,
    float_tags: np.ndarray,
    vectors: np.ndarray,
    vector_tags: np.ndarray,
    coordinate_tags: np.ndarray,
    entries: np.ndarray,
    entry_heads: np.ndarray,
    entry_at: np.ndarray,
    out: np.ndarray,
    ends: np.ndarray,
) -> None:
    """Serialise row ``i`` of numeric columns as protobuf fields into ``out``, one
    row after another, ending at ``ends[i]``: ``varints`` (n, a, uint64) under
    one-byte ``varint_tags``, ``floats`` (n, b, the bits of float32s) under
    ``float_tags``, ``vectors`` (n, c, 3, the bits of doubles) as sub-messages of
    three doubles (``coordinate_tags``), and ``entries`` (n, m, the bits of
    doubles) as map entries, each after its head bytes
    ``entry_heads[entry_at[k]:entry_at[k + 1]]`` (tag, length, key, value tag).
    As protobuf does, a scalar whose bits are all zero is left out, and
    sub-messages and map entries are always written. ``out`` holds
    :func:`proto_rows_bound` bytes per row."""
    at = 0
    for i in range(varints.shape[0]):
        for k in range(varints.shape[1]):
            if varints[i, k] != 0:
                out[at] = varint_tags[k]
                at = _varint(out, at + 1, varints[i, k])
        for k in range(vectors.shape[1]):
            size = 0
            for d in range(3):
                if vectors[i, k, d] != 0:
                    size += 9
            out[at] = vector_tags[k]
            out[at + 1] = size  # at most 27: one byte
            at += 2
            for d in range(3):
                if vectors[i, k, d] != 0:
                    out[at] = coordinate_tags[d]
                    at = _put(out, at + 1, vectors[i, k, d], 8)
        for k in range(floats.shape[1]):
            if floats[i, k] != 0:
                out[at] = float_tags[k]
                at = _put(out, at + 1, floats[i, k], 4)
        for k in range(entries.shape[1]):
            for b in range(entry_at[k], entry_at[k + 1]):
                out[at] = entry_heads[b]
                at += 1
            at = _put(out, at, entries[i, k], 8)
        ends[i] = at


def proto_rows_bound(columns: int, vectors: int, floats: int, heads: int, entries: int) -> int:
    """Bytes :func:`proto_rows` writes for one row at most."""
    return columns * 11 + vectors * (2 + 3 * 9) + floats * 5 + heads + entries * 8


@njit(cache=True, nogil=True)
def _get_varint(data: np.ndarray, at: int, end: int) -> tuple[np.uint64, int]:
    """The protobuf varint at ``at`` (its low 64 bits) and the next offset, -1 if
    it does not end before ``end`` or within ten bytes."""
    value = np.uint64(0)
    for k in range(10):
        if at >= end:
            break
        b = np.uint64(data[at])
        at += 1
        value |= (b & np.uint64(0x7F)) << np.uint64(7 * k)
        if b < np.uint64(0x80):
            return value, at
    return value, -1


@njit(cache=True, nogil=True)
def _get_tag(data: np.ndarray, at: int, end: int) -> tuple[int, int, int]:
    """The field number and wire type of the tag at ``at`` and the next offset, -1
    if malformed (or a field number beyond protobuf's 2**29 - 1)."""
    tag, at = _get_varint(data, at, end)
    if at < 0 or tag > np.uint64(0xFFFFFFFF):
        return 0, 0, -1
    t = int(np.int64(tag))
    return t >> 3, t & 7, at


@njit(cache=True, nogil=True)
def _get_span(data: np.ndarray, at: int, end: int) -> tuple[int, int]:
    """Where the length-prefixed bytes at ``at`` start and stop; -1, -1 if they
    run past ``end``."""
    size, at = _get_varint(data, at, end)
    if at < 0 or size > np.uint64(end - at):
        return -1, -1
    return at, at + int(np.int64(size))


@njit(cache=True, nogil=True)
def _skip_value(data: np.ndarray, at: int, end: int, wire: int) -> int:
    """The offset after a VARINT, I64, LEN or I32 value at ``at``; -1 if malformed."""
    if wire == 0:
        return _get_varint(data, at, end)[1]
    if wire == 2:
        return _get_span(data, at, end)[1]
    width = 8 if wire == 1 else 4 if wire == 5 else -1
    return at + width if 0 <= width <= end - at else -1


@njit(cache=True, nogil=True)
def _skip_field(data: np.ndarray, at: int, end: int, wire: int) -> int:
    """The offset after a field's value of ``wire`` type at ``at``; -1 if malformed.
    A group (an unknown field of the old kind, which protobuf keeps and writes
    back) is skipped to its end, nested groups included."""
    if wire != 3:
        return _skip_value(data, at, end, wire)
    depth = 1
    while depth:
        _f, w, at = _get_tag(data, at, end)
        if at < 0:
            return -1
        if w == 3:
            depth += 1
        elif w == 4:
            depth -= 1
        else:
            at = _skip_value(data, at, end, w)
            if at < 0:
                return -1
    return at


@njit(cache=True, nogil=True)
def proto_columns(  # noqa: PLR0917 (numba kernels take positional arguments)
    data: np.ndarray,
    field: int,
    spec: np.ndarray,
    spans: np.ndarray,
    ints: np.ndarray,
    floats: np.ndarray,
) -> int:
    """Read the repeated sub-message ``field`` of the serialised message ``data``
    into columns, sub-message i into index i of each array (all have the same
    number of columns, the most sub-messages read). Field f of a sub-message, if
    its wire type is ``spec[0, f]``, goes to row ``spec[1, f]`` of ``spans``
    (LEN: where its bytes start and stop in ``data``, rows 2r and 2r+1), ``ints``
    (VARINT, a uint32 field: its low 32 bits, as protobuf reads it) or
    ``floats`` (I32, a float; I64, a double). Other fields, and fields of
    another wire type, are skipped, as protobuf skips unknown fields; a field
    seen twice keeps its last value; an absent one leaves the arrays as they
    were. The sub-messages read, or -1 if ``data`` is malformed or holds more
    than the arrays have room for."""
    f32 = np.zeros(1, np.float32)
    f64 = np.zeros(1, np.float64)
    b32, b64 = f32.view(np.uint32), f64.view(np.uint64)
    end = data.size
    at = 0
    i = 0
    while at < end:
        f, w, at = _get_tag(data, at, end)
        if at >= 0 and (f != field or w != 2):
            at = _skip_field(data, at, end, w)
            if at < 0:
                return -1
            continue
        if at < 0 or i >= spans.shape[1]:
            return -1
        at, stop = _get_span(data, at, end)
        if at < 0:
            return -1
        while at < stop:
            f, w, at = _get_tag(data, at, stop)
            if at < 0:
                return -1
            if f >= spec.shape[1] or spec[0, f] != w:
                at = _skip_field(data, at, stop, w)
            elif w == 0:
                value, at = _get_varint(data, at, stop)
                ints[spec[1, f], i] = np.int64(value & np.uint64(0xFFFFFFFF))
            elif w == 2:
                start, at = _get_span(data, at, stop)
                spans[2 * spec[1, f], i] = start
                spans[2 * spec[1, f] + 1, i] = at
            else:
                width = 4 if w == 5 else 8
                if width > stop - at:
                    return -1
                bits = np.uint64(0)
                for b in range(width):
                    bits |= np.uint64(data[at + b]) << np.uint64(8 * b)
                at += width
                if w == 5:
                    b32[0] = np.uint32(bits)
                    floats[spec[1, f], i] = f32[0]
                else:
                    b64[0] = bits
                    floats[spec[1, f], i] = f64[0]
            if at < 0:
                return -1
        i += 1
    return i


@njit(cache=True, nogil=True)
def _varint_size(value: int) -> int:
    """Bytes of ``value`` (>= 0) as a protobuf varint."""
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


@njit(cache=True, nogil=True)
def _len_field(out: np.ndarray, at: int, tag: int, data: np.ndarray) -> int:
    """Write ``data`` as a length-delimited field at ``at``; the next offset."""
    out[at] = tag
    at = _varint(out, at + 1, np.uint64(data.size))
    out[at : at + data.size] = data
    return at + data.size


@njit(cache=True, nogil=True)
def proto_entries(  # noqa: PLR0917 (numba kernels take positional arguments)
    tags: np.ndarray,
    texts: np.ndarray,
    text_spans: np.ndarray,
    numbers: np.ndarray,
    blobs: np.ndarray,
    blob_spans: np.ndarray,
    out: np.ndarray,
    ends: np.ndarray,
) -> None:
    """Serialise the entries of a repeated message field into ``out``, one after
    another, entry i ending at ``ends[i]``: the field's tag ``tags[0]``,
    the entry's length, then a string field (``tags[1]``; entry i's bytes are
    ``texts[text_spans[0, i]:text_spans[1, i]]``), the varint fields
    ``numbers[i]`` (``tags[2:-1]``, each >= 0) and a bytes field (``tags[-1]``,
    from ``blobs`` and ``blob_spans`` likewise). As protobuf does, an empty
    string or bytes and a zero number are left out. ``out`` holds
    :func:`proto_entries_bound` bytes."""
    at = 0
    for i in range(ends.size):
        t0, t1 = text_spans[0, i], text_spans[1, i]
        b0, b1 = blob_spans[0, i], blob_spans[1, i]
        texts_n = t1 - t0
        blobs_n = b1 - b0
        size = 0
        if texts_n:
            size += 1 + _varint_size(texts_n) + texts_n
        for f in range(numbers.shape[1]):
            if numbers[i, f]:
                size += 1 + _varint_size(numbers[i, f])
        if blobs_n:
            size += 1 + _varint_size(blobs_n) + blobs_n
        out[at] = tags[0]
        at = _varint(out, at + 1, np.uint64(size))
        if texts_n:
            at = _len_field(out, at, tags[1], texts[t0:t1])
        for f in range(numbers.shape[1]):
            if numbers[i, f]:
                out[at] = tags[2 + f]
                at = _varint(out, at + 1, np.uint64(numbers[i, f]))
        if blobs_n:
            at = _len_field(out, at, tags[tags.size - 1], blobs[b0:b1])
        ends[i] = at


def proto_entries_bound(entries: int, numbers: int, texts: int, blobs: int) -> int:
    """Bytes :func:`proto_entries` writes at most for ``entries`` entries of
    ``numbers`` varints each and at most ``texts`` and ``blobs`` bytes of strings
    and bytes in all."""
    return entries * (1 + 10 + 2 * (1 + 10) + numbers * 11) + texts + blobs


# Bytes of each field group (mask bits 0..7, in wire order): POS8, POS16, POS32,
# HEIGHT, FACING, MOTION, VITALS, IDENT.
GROUP_BYTES = (2, 4, 8, 2, 2, 6, 3, 3)


@njit(cache=True, nogil=True)
def _encode_one(  # noqa: PLR0917 (numba kernels take positional arguments)
    r: int,
    cur: np.ndarray,
    valid: np.ndarray,
    v: np.ndarray,
    last_input_seq: int,
    version: int,
    has_version: bool,
    e_ids: np.ndarray,
    e_valid: np.ndarray,
    e_version: np.ndarray,
    e_vals: np.ndarray,
    seq_at: np.ndarray,
    next_seq: np.ndarray,
    acked: np.ndarray,
    buf: np.ndarray,
    out: int,
    ends: np.ndarray,
    has_base: np.ndarray,
    counts: np.ndarray,
    widths: np.ndarray,
    scratch: tuple[np.ndarray, ...],
) -> None:
    """Delta-encode one snapshot of client row ``r`` (ids ``cur``, values ``v``
    where ``valid``) into ``buf`` after the payload ``out - 1`` and store it in
    the ring; ``ends[out]``, ``has_base[out]`` and ``counts[out]`` (entities,
    added, removed) describe it. ``widths`` are the wire bytes of each replicated
    component (none: the payload ends after the built-in field groups).
    ``scratch`` is :func:`_scratch` of the view width.

    Baseline entries are matched slot by slot while the membership version is
    unchanged, else by id (a merge of two ascending id lists; in a run of equal
    ids only the last current and first baseline entry pair up). Every field
    group's section is sized first, so one pass over the entities writes them all.
    """
    bptr, still, mask, group, cmask, cgroup = scratch
    n_comp = widths.size
    at = ends[out - 1] if out > 0 else 0
    k = valid.shape[0]
    h = seq_at.shape[1]
    seq = next_seq[r]
    ack = acked[r]
    bslot = ack % h
    base = ack > 0 and seq_at[r, bslot] == ack and seq - ack < h
    bids = e_ids[r, bslot]
    bvalid = e_valid[r, bslot]
    bvals = e_vals[r, bslot]
    same = base and has_version and e_version[r, bslot] == version
    for j in range(k):
        bptr[j] = j if same and valid[j] and bvalid[j] else -1
        still[j] = bptr[j] >= 0
    if base and not same:
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
                bptr[a] = b if valid[a] and bvalid[b] else -1
                still[b] = valid[a]
                a += 1
                while b < k and bids[b] == key:
                    b += 1
    n_base = 0
    n_removed = 0
    if base:
        for j in range(k):
            if bvalid[j]:
                n_base += 1
                if not still[j]:
                    n_removed += 1
    n = 0
    n_added = 0
    n_changed = 0
    n_listed = 0  # entities with component changes
    for g in range(8):
        group[g] = 0  # entities in each field group, then (8:) each section's write offset
    for e in range(n_comp):
        cgroup[e] = 0  # values of each component, then (32:) each column's write offset
    for j in range(k):
        if not valid[j]:
            mask[j] = 0
            continue
        n += 1
        b = bptr[j]
        if b < 0:
            m = FULL_MASK
            n_added += 1
        else:
            # deltas wrap to int32, as the wire's delta fields do
            ddx = np.int64(np.int32(v[j, X] - bvals[b, X]))
            ddz = np.int64(np.int32(v[j, Z] - bvals[b, Z]))
            big = max(abs(ddx), abs(ddz))
            m = 0
            if big > 32767:
                m = POS32
            elif big > 127:
                m = POS16
            elif big != 0:
                m = POS8
            if v[j, Y] != bvals[b, Y]:
                m |= HEIGHT
            if v[j, YAW] != bvals[b, YAW]:
                m |= FACING
            if v[j, VX] != bvals[b, VX] or v[j, VY] != bvals[b, VY] or v[j, VZ] != bvals[b, VZ]:
                m |= MOTION
            if v[j, HEALTH] != bvals[b, HEALTH] or v[j, FLAGS] != bvals[b, FLAGS]:
                m |= VITALS
            if v[j, KIND] != bvals[b, KIND] or v[j, TEAM] != bvals[b, TEAM]:
                m |= IDENT
        mask[j] = m
        if m != 0:
            n_changed += 1
            for g in range(8):
                if m & (1 << g):
                    group[g] += 1
        if n_comp:
            n_listed += _component_mask(v, bvals, j, b, n_comp, cmask, cgroup)

    at = _put(buf, at, VERSION, 1)
    at = _put(buf, at, 0 if base else FLAG_FULL, 1)
    at = _put(buf, at, n_base, 2)
    at = _put(buf, at, n, 2)
    at = _put(buf, at, n_added, 2)
    at = _put(buf, at, n_changed, 2)
    at = _put(buf, at, last_input_seq, 4)
    # removed bitmap, over the baseline's present entries
    nbytes = (n_base + 7) // 8
    for b in range(at, at + nbytes):
        buf[b] = 0
    if base:
        bit = 0
        for j in range(k):
            if bvalid[j]:
                if not still[j]:
                    buf[at + (bit >> 3)] |= 1 << (bit & 7)
                bit += 1
    at += nbytes
    # sections: added ids, changed bitmap (over present entities), masks, field groups
    id_at = at
    bits_at = id_at + 8 * n_added
    mask_at = bits_at + (n + 7) // 8
    for b in range(bits_at, mask_at):
        buf[b] = 0
    off = group[8:]
    end = mask_at + n_changed
    for g in range(8):
        off[g] = end
        end += group[g] * GROUP_BYTES[g]
    # the component section: its bitmap (over present entities), mask pairs, columns
    nm = (n_comp + 7) // 8
    cbits_at = end
    cmask_at = cbits_at + (n + 7) // 8
    coff = cgroup[COMPONENTS_MAX:]
    if n_comp:
        for b in range(cbits_at, cmask_at):
            buf[b] = 0
        end = cmask_at + 2 * nm * n_listed
        for e in range(n_comp):
            coff[e] = end
            end += cgroup[e] * widths[e]
    bit = 0
    for j in range(k):
        if not valid[j]:
            continue
        if bptr[j] < 0:
            id_at = _put(buf, id_at, np.int64(cur[j]), 8)
        m = mask[j]
        if m != 0:
            buf[bits_at + (bit >> 3)] |= 1 << (bit & 7)
            buf[mask_at] = m
            mask_at += 1
            if m & POS8:
                off[0] = _put(buf, off[0], v[j, X] - bvals[bptr[j], X], 1)
                off[0] = _put(buf, off[0], v[j, Z] - bvals[bptr[j], Z], 1)
            if m & POS16:
                off[1] = _put(buf, off[1], v[j, X] - bvals[bptr[j], X], 2)
                off[1] = _put(buf, off[1], v[j, Z] - bvals[bptr[j], Z], 2)
            if m & POS32:
                off[2] = _put(buf, off[2], v[j, X], 4)
                off[2] = _put(buf, off[2], v[j, Z], 4)
            if m & HEIGHT:
                off[3] = _put(buf, off[3], v[j, Y], 2)
            if m & FACING:
                off[4] = _put(buf, off[4], v[j, YAW], 2)
            if m & MOTION:
                off[5] = _put(buf, off[5], v[j, VX], 2)
                off[5] = _put(buf, off[5], v[j, VY], 2)
                off[5] = _put(buf, off[5], v[j, VZ], 2)
            if m & VITALS:
                off[6] = _put(buf, off[6], v[j, HEALTH], 2)
                off[6] = _put(buf, off[6], v[j, FLAGS], 1)
            if m & IDENT:
                off[7] = _put(buf, off[7], v[j, KIND], 1)
                off[7] = _put(buf, off[7], v[j, TEAM], 2)
        if n_comp and cmask[j, 2]:
            buf[cbits_at + (bit >> 3)] |= 1 << (bit & 7)
            cmask_at = _put(buf, cmask_at, cmask[j, 0], nm)
            cmask_at = _put(buf, cmask_at, cmask[j, 1], nm)
            for e in range(n_comp):
                if cmask[j, 1] >> e & 1:
                    coff[e] = _put(buf, coff[e], v[j, PRESENT + 1 + e], widths[e])
        bit += 1

    slot = seq % h
    for j in range(k):  # explicit loops: numba's slice assignment costs more here
        e_ids[r, slot, j] = cur[j]
        e_valid[r, slot, j] = valid[j]
        for col in range(v.shape[1]):
            e_vals[r, slot, j, col] = v[j, col]
    e_version[r, slot] = version if has_version else -1
    seq_at[r, slot] = seq
    next_seq[r] = seq + 1
    ends[out] = end
    has_base[out] = base
    counts[out, 0] = n
    counts[out, 1] = n_added
    counts[out, 2] = n_removed


@njit(cache=True, nogil=True)
def _component_mask(  # noqa: PLR0917 (numba kernels take positional arguments)
    v: np.ndarray,
    bvals: np.ndarray,
    j: int,
    b: int,
    n_comp: int,
    cmask: np.ndarray,
    cgroup: np.ndarray,
) -> int:
    """Slot ``j``'s component masks into ``cmask[j]``: the components it carries,
    those whose value is sent (newly carried, or changed from its baseline row
    ``b``, -1 for none), and whether it is listed at all (1 when either differs
    from the baseline); counts each sent value in ``cgroup``. Returns the listed flag."""
    present = np.int64(v[j, PRESENT]) & 0xFFFFFFFF
    before = np.int64(bvals[b, PRESENT]) & 0xFFFFFFFF if b >= 0 else np.int64(0)
    sent = np.int64(0)
    for e in range(n_comp):
        col = PRESENT + 1 + e
        if present >> e & 1 and (not before >> e & 1 or v[j, col] != bvals[b, col]):
            sent |= np.int64(1) << e
            cgroup[e] += 1
    listed = 1 if present != before or sent != 0 else 0
    cmask[j, 0] = present
    cmask[j, 1] = sent
    cmask[j, 2] = listed
    return listed


@njit(cache=True, nogil=True)
def _scratch(
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The encoder's per-client work arrays for views of width ``k``, reused
    across clients: each slot's baseline entry (-1 for none), which baseline
    entries are still present, change masks, field-group counts and offsets,
    component masks (carried, sent, listed) and per-component counts and (from
    COMPONENTS_MAX on) write offsets."""
    return (
        np.empty(k, np.int64),
        np.empty(k, np.bool_),
        np.empty(k, np.int64),
        np.empty(16, np.int64),
        np.empty((k, 3), np.int64),
        np.empty(2 * COMPONENTS_MAX, np.int64),
    )


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
    widths: np.ndarray,
) -> None:
    """Delta-encode one snapshot per client row into ``buf`` and store it in the ring.

    Client i sees ``ids[src[i]]`` with values ``vals[src[i]]`` where ``valid[i]``.
    Its payload is ``buf[ends[i-1]:ends[i]]``; ``has_base[i]`` says it is a
    delta; ``counts[i]`` holds (entities, added, removed). Rows must be distinct.
    ``widths``: the wire bytes of each replicated component (:func:`_encode_one`).
    """
    scratch = _scratch(valid.shape[1])
    for i in range(rows.size):
        s = src[i]
        _encode_one(
            rows[i], ids[s], valid[i], vals[s], last_input_seq[i],
            version[i] if has_version else -1, has_version,
            e_ids, e_valid, e_version, e_vals, seq_at, next_seq, acked,
            buf, i, ends, has_base, counts, widths, scratch,
        )  # fmt: skip


@njit(cache=True, nogil=True)
def encode_due(  # noqa: PLR0917 (numba kernels take positional arguments)
    clients: np.ndarray,
    viewers: np.ndarray,
    view_rows: np.ndarray,
    known: np.ndarray,
    sent: np.ndarray,
    view_ids: np.ndarray,
    view_version: np.ndarray,
    pos: np.ndarray,
    entity_ids: np.ndarray,
    table: np.ndarray,
    beat: int,
    near2: float,
    mid2: float,
    mid_every: int,
    far_every: int,
    tier_bits: np.ndarray,
    last_input_seq: np.ndarray,
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
    widths: np.ndarray,
    valid: np.ndarray,
) -> None:
    """The tier schedule and :func:`encode_batch` in one pass per client: client
    (view and encoder row) ``clients[i]`` takes its due slots from ``table``
    (:func:`_due_one`) and its snapshot is encoded against its view while those
    values are in cache."""
    scratch = _scratch(valid.shape[1])
    codes = _beats(entity_ids, beat, mid_every, far_every)
    for i in range(clients.size):
        cl = clients[i]
        _due_one(
            view_rows[cl], known[cl], sent[cl], viewers[i, 0], viewers[i, 1],
            pos, codes, table, near2, mid2, tier_bits, valid[i],
        )  # fmt: skip
        _encode_one(
            cl, view_ids[cl], valid[i], sent[cl], last_input_seq[i], view_version[cl], True,
            e_ids, e_valid, e_version, e_vals, seq_at, next_seq, acked,
            buf, i, ends, has_base, counts, widths, scratch,
        )  # fmt: skip


MID_BEAT = 1
FAR_BEAT = 2


@njit(cache=True, nogil=True)
def _beats(entity_ids: np.ndarray, beat: int, mid_every: int, far_every: int) -> np.ndarray:
    """Per entity row, whether ``beat`` is a mid (MID_BEAT) and a far (FAR_BEAT)
    tick for it: tier ticks are staggered by entity id."""
    codes = np.empty(entity_ids.size, np.uint8)
    for row in range(entity_ids.size):
        phase = np.int64(entity_ids[row] + np.uint64(beat))
        codes[row] = (MID_BEAT if phase % mid_every == 0 else 0) | (
            FAR_BEAT if phase % far_every == 0 else 0
        )
    return codes


@njit(cache=True, nogil=True)
def _due_one(  # noqa: PLR0917 (numba kernels take positional arguments)
    view_rows: np.ndarray,
    known: np.ndarray,
    sent: np.ndarray,
    vx: float,
    vz: float,
    pos: np.ndarray,
    codes: np.ndarray,
    table: np.ndarray,
    near2: float,
    mid2: float,
    tier_bits: np.ndarray,
    valid: np.ndarray,
) -> None:
    """Refresh the due slots of one client's view (its ``view_rows``, ``known``
    and ``sent`` slots, standing at ``vx``, ``vz``) from the quantized ``table``.

    A slot is due when its entity is within the near radius, within the mid
    radius on a mid tick, on a far tick (``codes``) or not yet known to the
    client. ``valid`` marks the slots holding an entity (row >= 0). A due slot
    carries the replicated components (table columns from PRESENT on) whose
    tiers include its entity's tier: ``tier_bits`` holds the near, mid and far
    component bitmasks; the others are cleared."""
    n = pos.shape[0]
    for j in range(view_rows.size):
        row = view_rows[j]
        ok = 0 <= row < n
        valid[j] = ok
        if ok:
            dx = pos[row, 0] - vx
            dz = pos[row, 2] - vz
            d2 = dx * dx + dz * dz
            due = d2 <= near2 or codes[row] & FAR_BEAT or not known[j]
            due = due or (d2 <= mid2 and codes[row] & MID_BEAT)
            if due and table.shape[1] == PRESENT:
                for col in range(PRESENT):  # an explicit loop: no slice views
                    sent[j, col] = table[row, col]
            elif due:
                for col in range(PRESENT):
                    sent[j, col] = table[row, col]
                tier = 0 if d2 <= near2 else 1 if d2 <= mid2 else 2
                carried = np.int64(table[row, PRESENT]) & tier_bits[tier]
                sent[j, PRESENT] = np.int32(np.uint32(carried))
                for e in range(table.shape[1] - PRESENT - 1):
                    col = PRESENT + 1 + e
                    sent[j, col] = table[row, col] if carried >> e & 1 else 0
        known[j] = ok


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
        for j in range(k):  # explicit loops: numba's slice assignment costs more here
            old_known[j] = known[cl, j]
            old_ids[j] = ids[cl, j]
            for col in range(sent.shape[2]):
                old_sent[j, col] = sent[cl, j, col]
        b = 0  # both id lists ascend: one merge pass finds each carried-over member
        for j in range(k):
            key = new_ids[j]
            while b < k and old_ids[b] < key:
                b += 1
            found = b < k and old_ids[b] == key and old_known[b]
            if found:
                for col in range(sent.shape[2]):
                    sent[cl, j, col] = old_sent[b, col]
            known[cl, j] = found and key != pad
            ids[cl, j] = key
            rows[cl, j] = new[j]
        version[cl] += 1


@njit(cache=True, nogil=True)
def swap_removed(rows: np.ndarray, row: int, last: int) -> None:
    """Entity ``row`` was swap-removed (the last row moved into its place): in the
    1-d int64 ``rows``, one pass turns ``row`` into -1 and ``last`` into ``row``."""
    for i in range(rows.size):
        r = rows[i]
        if r == row:
            rows[i] = -1
        elif r == last:
            rows[i] = row


@njit(cache=True, nogil=True)
def _bit_index(bit: np.uint64) -> int:
    """Which bit of a uint64 ``bit`` (exactly one bit set) is."""
    return int(_BIT_AT[(bit * _DE_BRUIJN) >> np.uint64(58)])


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
    marked = np.zeros((n + 63) >> 6, np.uint64)  # a bit per id rank
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
        lo, hi = marked.size, -1  # id order: mark the ranks, then take the marks in order
        for t in range(m):
            at = rank[cand[t]]
            marked[at >> 6] |= np.uint64(1) << np.uint64(at & 63)
            lo = min(lo, at >> 6)
            hi = max(hi, at >> 6)
        w = 0
        for k in range(lo, hi + 1):
            bits = marked[k]
            marked[k] = 0
            while bits:
                low = bits & (~bits + np.uint64(1))
                out[i, w] = by_id[(k << 6) + _bit_index(low)]
                bits ^= low
                w += 1


@njit(cache=True, nogil=True)
def nearest(
    xz: np.ndarray, queries: np.ndarray, radius: float, row: np.ndarray, dist: np.ndarray
) -> None:
    """For each query point (x, z), the row of the closest entity at ``xz`` strictly
    closer than ``radius`` into ``row`` (the lowest row on equal distance) and its
    distance into ``dist``; -1 and inf when there is none. A grid of cells at least
    ``radius`` wide holds every candidate in the 3 x 3 cells around the query."""
    row[:] = -1
    dist[:] = np.inf
    if xz.shape[0] == 0 or not radius > 0.0:
        return
    x0, z0, size, nx, nz, start, order = _grid(xz, radius * (1.0 + 1e-6))
    for i in range(queries.shape[0]):
        qx = queries[i, 0]
        qz = queries[i, 1]
        cx = int(min(max(np.floor((qx - x0) / size), -2.0), float(nx + 1)))
        cz = int(min(max(np.floor((qz - z0) / size), -2.0), float(nz + 1)))
        best, best_d2 = -1, np.inf
        for ci in range(max(cx - 1, 0), min(cx + 1, nx - 1) + 1):
            for cj in range(max(cz - 1, 0), min(cz + 1, nz - 1) + 1):
                cellno = ci * nz + cj
                for t in range(start[cellno], start[cellno + 1]):
                    r = order[t]
                    dx = xz[r, 0] - qx
                    dz = xz[r, 1] - qz
                    d2 = dx * dx + dz * dz
                    if d2 < best_d2 or (d2 == best_d2 and r < best):
                        best, best_d2 = r, d2
        d = np.sqrt(best_d2)
        if best >= 0 and d < radius:
            row[i] = best
            dist[i] = d


@njit(cache=True, nogil=True)
def aim(  # noqa: PLR0917 (numba kernels take positional arguments)
    melee: bool,
    origin: np.ndarray,
    yaw: float,
    pitch: float,
    targets: np.ndarray,
    eligible: np.ndarray,
    reach: float,
    melee_cos: float,
    radius: float,
    eye: float,
    body: float,
) -> int:
    """The index of the target (rows of ``targets``, positions) one attack from
    ``origin`` hits, or -1: the nearest ``eligible`` one, the first on equal distance.

    Melee (``melee``): within ``reach`` in x, z and inside the cone (cosine of the
    angle off the facing at least ``melee_cos``, or closer than 0.3 m). Ranged:
    the first sphere of ``radius`` around a body centre (``body`` above the
    feet) the aim ray from the eye (``eye`` above ``origin``) enters, at most
    ``reach`` along the ray (0 for a sphere the eye is in)."""
    best, best_d = -1, np.inf
    sy, cy = np.sin(yaw), np.cos(yaw)
    dx_ray, dy_ray, dz_ray = sy * np.cos(pitch), np.sin(pitch), cy * np.cos(pitch)
    for i in range(targets.shape[0]):
        if not eligible[i]:
            continue
        if melee:
            dx = targets[i, 0] - origin[0]
            dz = targets[i, 2] - origin[2]
            d = np.sqrt(dx * dx + dz * dz)
            cone = (dx * sy + dz * cy) / max(d, 1e-9) >= melee_cos or d < 0.3
            if d <= reach and cone and d < best_d:
                best, best_d = i, d
            continue
        ox = targets[i, 0] - origin[0]
        oy = (targets[i, 1] + body) - (origin[1] + eye)
        oz = targets[i, 2] - origin[2]
        along = ox * dx_ray + oy * dy_ray + oz * dz_ray
        inside = radius * radius - (ox * ox + oy * oy + oz * oz - along * along)
        if inside < 0 or along < 0:
            continue
        t = max(along - np.sqrt(inside), 0.0)
        if t <= reach and t < best_d:
            best, best_d = i, t
    return best


@njit(cache=True, nogil=True)
def _guard_one(
    ox: float, oz: float, nx: float, nz: float, max_step: float
) -> tuple[float, float, float]:
    """A horizontal step from ``ox, oz`` to ``nx, nz`` longer than ``max_step``
    clamped back onto the allowed circle: the end point and the metres cut (0 if none)."""
    sx = nx - ox
    sz = nz - oz
    length = np.sqrt(sx * sx + sz * sz)
    if length > max_step * (1 + 1e-9):
        k = max_step / length
        return ox + sx * k, oz + sz * k, length - max_step
    return nx, nz, 0.0


@njit(cache=True, nogil=True)
def guard(old: np.ndarray, new: np.ndarray, max_step: float, excess: np.ndarray) -> None:
    """:func:`_guard_one` over rows of positions (x, y, z): ``new`` clamped in place."""
    for i in range(old.shape[0]):
        new[i, 0], new[i, 2], excess[i] = _guard_one(
            old[i, 0], old[i, 2], new[i, 0], new[i, 2], max_step
        )


@njit(cache=True, nogil=True)
def integrate(  # noqa: PLR0917 (numba kernels take positional arguments)
    pos: np.ndarray,
    vel: np.ndarray,
    desired: np.ndarray,
    jump: np.ndarray,
    max_speed: float,
    accel: float,
    jump_speed: float,
    gravity: float,
    dt: float,
    box: np.ndarray,
    new: np.ndarray,
    excess: np.ndarray,
) -> None:
    """One movement step of each entity row into ``new`` (positions) and ``vel``
    (in place), ``excess`` the metres the teleport guard cut (docs in
    :func:`tessera.zone.movement.integrate`). ``box`` is min x, the last x
    inside, min z, the last z inside."""
    max_dv = accel * dt
    fall = gravity * dt
    step = max_speed * dt
    for i in range(pos.shape[0]):
        gx = vel[i, 0]
        gz = vel[i, 2]
        dvx = desired[i, 0] - gx
        dvz = desired[i, 1] - gz
        dv_len = np.sqrt(dvx * dvx + dvz * dvz)
        scale = max_dv / max(dv_len, 1e-12) if dv_len > max_dv else 1.0
        gx = gx + dvx * scale
        gz = gz + dvz * scale
        speed = np.sqrt(gx * gx + gz * gz)
        if speed > max_speed:
            cut = max_speed / speed
            gx *= cut
            gz *= cut
        vy = jump_speed if jump[i] and pos[i, 1] <= 0.0 else vel[i, 1]
        vy -= fall
        x = pos[i, 0] + gx * dt
        y = pos[i, 1] + vy * dt
        z = pos[i, 2] + gz * dt
        if y <= 0.0:
            y = 0.0
            vy = 0.0
        # kept on the half-open area, grown to hold the old position
        x = min(max(x, min(box[0], pos[i, 0])), max(box[1], pos[i, 0]))
        z = min(max(z, min(box[2], pos[i, 2])), max(box[3], pos[i, 2]))
        new[i, 0], new[i, 2], excess[i] = _guard_one(pos[i, 0], pos[i, 2], x, z, step)
        new[i, 1] = y
        vel[i, 0] = gx
        vel[i, 1] = vy
        vel[i, 2] = gz


@njit(cache=True, nogil=True)
def consume(  # noqa: PLR0917 (numba kernels take positional arguments)
    queued: np.ndarray,
    held: np.ndarray,
    q_seq: np.ndarray,
    q_values: np.ndarray,
    q_actions: np.ndarray,
    q_wait: np.ndarray,
    last_seq: np.ndarray,
    waited: np.ndarray,
    move: np.ndarray,
    yaw: np.ndarray,
    pitch: np.ndarray,
    rtt_ms: np.ndarray,
    interp_ms: np.ndarray,
    actions: np.ndarray,
    hold: int,
    drain_ticks: float,
) -> None:
    """Apply each row's buffered inputs for one tick, into the intent columns (the
    rule is documented in :func:`tessera.zone.inputs.consume`)."""
    size = q_seq.shape[1]
    for r in range(queued.shape[0]):
        q = min(queued[r], size)
        if q <= 0:
            continue
        take = max(1, q - hold)
        drain = take == 1 and q > 1 and held[r] >= drain_ticks
        if drain:
            take = 2
        k = take - 1
        last_seq[r] = q_seq[r, k]
        waited[r] = q_wait[r, k]
        move[r, 0] = q_values[r, k, 0]
        move[r, 1] = q_values[r, k, 1]
        yaw[r] = q_values[r, k, 2]
        pitch[r] = q_values[r, k, 3]
        rtt_ms[r] = q_values[r, k, 4]
        interp_ms[r] = q_values[r, k, 5]
        acted = 0
        for j in range(take):
            acted |= q_actions[r, j]
        actions[r] |= acted
        left = q - take
        for j in range(left):
            q_seq[r, j] = q_seq[r, j + take]
            q_actions[r, j] = q_actions[r, j + take]
            q_wait[r, j] = q_wait[r, j + take] + 1
            for f in range(q_values.shape[2]):
                q_values[r, j, f] = q_values[r, j + take, f]
        queued[r] = left
        held[r] = held[r] + 1 if left > 0 and not drain else 0


# The outcome of each input in :func:`admit` (tessera.zone.inputs names them).
ACCEPTED, UNKNOWN, NONFINITE, OUT_OF_RANGE, LEAVING, REPEATED, OLDER, STARVED = range(8)
# The input rules' limits, in the order of :func:`admit`'s ``limits`` array.
LIM_YAW, LIM_PITCH, LIM_RTT, LIM_INTERP, LIM_MOVE, LIM_DEFAULT_INTERP, LIM_ACTIONS = range(7)
TURN = 2 * np.pi


@njit(cache=True, nogil=True)
def screen(  # noqa: PLR0917 (numba kernels take positional arguments)
    sequence: int,
    move_x: float,
    move_z: float,
    yaw: float,
    pitch: float,
    actions: int,
    rtt_ms: float,
    interp_ms: float,
    client_time_ms: float,
    limits: np.ndarray,
) -> int:
    """One input's values: NONFINITE if any is NaN or infinite, OUT_OF_RANGE if one
    is outside its range, else ACCEPTED."""
    for v in (move_x, move_z, yaw, pitch, rtt_ms, interp_ms, client_time_ms):
        if not np.isfinite(v):
            return NONFINITE
    if (
        abs(yaw) > limits[LIM_YAW]
        or abs(pitch) > limits[LIM_PITCH]
        or (actions & ~int(limits[LIM_ACTIONS])) != 0
        or not 0.0 <= rtt_ms <= limits[LIM_RTT]
        or not 0.0 <= interp_ms <= limits[LIM_INTERP]
        or sequence <= 0
    ):
        return OUT_OF_RANGE
    return ACCEPTED


@njit(cache=True, nogil=True)
def clamp(
    move_x: float, move_z: float, yaw: float, interp_ms: float, limits: np.ndarray
) -> tuple[float, float, float, float, float]:
    """What an accepted input writes: the move vector scaled to length 1 when longer,
    yaw normalized into [-pi, pi], an interpolation delay of 0 as the default; and
    how far the move exceeded length 1 (0 if it did not)."""
    length = math.hypot(move_x, move_z)
    excess = 0.0
    if length > limits[LIM_MOVE]:
        move_x, move_z, excess = move_x / length, move_z / length, length - 1.0
    if interp_ms == 0.0:
        interp_ms = limits[LIM_DEFAULT_INTERP]
    return move_x, move_z, yaw - TURN * np.rint(yaw / TURN), interp_ms, excess


@njit(cache=True, nogil=True)
def refill(tokens: float, since_s: float, now_s: float, rate: float, burst: float) -> float:
    """Token bucket: ``rate`` a second sustained, at most ``burst`` saved up."""
    return min(burst, tokens + max(0.0, now_s - since_s) * rate)


@njit(cache=True, nogil=True)
def admit(  # noqa: PLR0917 (numba kernels take positional arguments)
    rows: np.ndarray,
    sequence: np.ndarray,
    move_x: np.ndarray,
    move_z: np.ndarray,
    yaw: np.ndarray,
    pitch: np.ndarray,
    actions: np.ndarray,
    rtt_ms: np.ndarray,
    interp_ms: np.ndarray,
    client_time_ms: np.ndarray,
    leaving: np.ndarray,
    seen_seq: np.ndarray,
    tokens: np.ndarray,
    tokens_at: np.ndarray,
    queued: np.ndarray,
    q_seq: np.ndarray,
    q_values: np.ndarray,
    q_actions: np.ndarray,
    q_wait: np.ndarray,
    now_s: float,
    rate: float,
    burst: float,
    limits: np.ndarray,
    outcome: np.ndarray,
    excess: np.ndarray,
) -> None:
    """Check a batch of inputs one at a time in order and buffer those that pass
    (the rules are documented in :func:`tessera.zone.inputs.apply`); ``rows`` are
    their players' entity rows (-1: unknown). Writes each input's ``outcome`` and,
    for an accepted one, its move's ``excess`` over length 1."""
    size = q_seq.shape[1]
    for i in range(rows.size):
        excess[i] = 0.0
        r = rows[i]
        if r < 0:
            outcome[i] = UNKNOWN
            continue
        s = sequence[i]
        why = screen(
            s, move_x[i], move_z[i], yaw[i], pitch[i], actions[i], rtt_ms[i],
            interp_ms[i], client_time_ms[i], limits,
        )  # fmt: skip
        if why == ACCEPTED and leaving[r]:
            why = LEAVING
        elif why == ACCEPTED and s <= seen_seq[r]:
            why = REPEATED if s == seen_seq[r] else OLDER
        if why != ACCEPTED:
            outcome[i] = why
            continue
        t = refill(tokens[r], tokens_at[r], now_s, rate, burst)
        tokens_at[r] = now_s
        if t < 1.0:
            tokens[r] = t
            outcome[i] = STARVED
            continue
        tokens[r] = t - 1.0
        seen_seq[r] = s
        q = queued[r]
        if q >= size:  # full: the oldest folds into the next (its actions kept)
            q_actions[r, 1] |= q_actions[r, 0]
            for j in range(size - 1):
                q_seq[r, j] = q_seq[r, j + 1]
                q_actions[r, j] = q_actions[r, j + 1]
                q_wait[r, j] = q_wait[r, j + 1]
                for f in range(q_values.shape[2]):
                    q_values[r, j, f] = q_values[r, j + 1, f]
            q = size - 1
        mx, mz, yw, interp, over = clamp(move_x[i], move_z[i], yaw[i], interp_ms[i], limits)
        q_seq[r, q] = s
        q_values[r, q, 0] = mx
        q_values[r, q, 1] = mz
        q_values[r, q, 2] = yw
        q_values[r, q, 3] = pitch[i]
        q_values[r, q, 4] = rtt_ms[i]
        q_values[r, q, 5] = interp
        q_actions[r, q] = actions[i]
        q_wait[r, q] = 0
        queued[r] = q + 1
        outcome[i] = ACCEPTED
        excess[i] = over
