"""Fragmentation and reassembly: splits, bad, duplicate, missing and late chunks."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.wire import fragment
from tessera.wire.fragment import Reassembler


def test_split_and_reassemble_in_any_order() -> None:
    message = os.urandom(2500)
    chunks = fragment.split(message, 1000)
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    reassembler = Reassembler()
    assert reassembler.add(7, 2, 3, chunks[2], 0.0) is None
    assert reassembler.add(7, 0, 3, chunks[0], 0.0) is None
    assert reassembler.add(7, 1, 3, chunks[1], 0.0) == message
    assert reassembler.groups == {} and not reassembler.drops


def test_split_refuses_more_than_max_fragments() -> None:
    assert len(fragment.split(bytes(64 * 10), 10)) == fragment.MAX_FRAGMENTS
    with pytest.raises(ValueError, match="more than"):
        fragment.split(bytes(64 * 10 + 1), 10)


@pytest.mark.parametrize(
    ("index", "count", "reason"),
    [
        (0, 1, "fragment_count"),
        (0, fragment.MAX_FRAGMENTS + 1, "fragment_count"),
        (3, 3, "fragment_index"),
    ],
)
def test_bad_chunks_are_counted_and_kept_out(index: int, count: int, reason: str) -> None:
    reassembler = Reassembler()
    assert reassembler.add(1, index, count, b"x", 0.0) is None
    assert reassembler.drops == {reason: 1} and reassembler.groups == {}


def test_duplicate_and_mismatched_chunks_are_counted() -> None:
    reassembler = Reassembler()
    reassembler.add(1, 0, 2, b"a", 0.0)
    assert reassembler.add(1, 0, 2, b"a", 0.0) is None
    assert reassembler.add(1, 1, 3, b"b", 0.0) is None
    assert reassembler.drops == {"fragment_duplicate": 1, "fragment_mismatch": 1}
    assert reassembler.add(1, 1, 2, b"b", 0.0) == b"ab"


def test_a_group_missing_a_chunk_times_out() -> None:
    reassembler = Reassembler()
    reassembler.add(1, 0, 2, b"a", 0.0)
    reassembler.expire(fragment.REASSEMBLY_TIMEOUT_S)
    assert 1 in reassembler.groups
    # The late chunk starts a new group (its first half is gone): never completes alone.
    assert reassembler.add(1, 1, 2, b"b", fragment.REASSEMBLY_TIMEOUT_S + 0.01) is None
    assert reassembler.drops == {"fragment_timeout": 1}
    assert reassembler.groups[1].chunks == {1: b"b"}


def test_held_groups_are_bounded() -> None:
    reassembler = Reassembler()
    for group in range(fragment.REASSEMBLY_SLOTS + 3):
        reassembler.add(group, 0, 2, b"a", 0.0)
    assert len(reassembler.groups) == fragment.REASSEMBLY_SLOTS
    assert reassembler.drops == {"fragment_evicted": 3}
    assert min(reassembler.groups) == 3  # the oldest went first


@given(st.binary(min_size=2, max_size=3000), st.integers(2, fragment.MAX_FRAGMENTS), st.randoms())
def test_any_message_survives_any_chunk_order(
    message: bytes, count: int, rnd: random.Random
) -> None:
    chunks = fragment.split(message, -(-len(message) // count))
    assert 2 <= len(chunks) <= count
    order = list(enumerate(chunks))
    rnd.shuffle(order)
    reassembler = Reassembler()
    results = [reassembler.add(9, i, len(chunks), c, 0.0) for i, c in order]
    assert results[-1] == message and all(r is None for r in results[:-1])
