"""Fragmentation of unreliable messages (snapshots) too large for one datagram.

A message is cut into at most MAX_FRAGMENTS chunks, each sent in its own
datagram under one group id; the receiver reassembles a group when every chunk
has arrived. Nothing is retransmitted: a group missing a chunk for
REASSEMBLY_TIMEOUT_S is dropped, and at most REASSEMBLY_SLOTS groups are held
at once (a new one evicts the oldest). Bad chunks are refused with a reason the
caller counts. Pure: times are arguments.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

MAX_FRAGMENTS = 64
REASSEMBLY_SLOTS = 4
REASSEMBLY_TIMEOUT_S = 1.0


def split(message: bytes, chunk_size: int) -> list[bytes]:
    """``message`` in chunks of ``chunk_size`` bytes (the last may be shorter);
    ValueError if that takes more than MAX_FRAGMENTS."""
    count = -(-len(message) // chunk_size)
    if count > MAX_FRAGMENTS:
        raise ValueError(f"message of {len(message)} bytes needs more than {MAX_FRAGMENTS} chunks")
    return [message[i : i + chunk_size] for i in range(0, len(message), chunk_size)]


@dataclass(slots=True)
class _Group:
    count: int
    started: float
    chunks: dict[int, bytes] = field(default_factory=dict)


class Reassembler:
    """Groups being reassembled, bounded in number and age; ``drops`` counts the
    chunks and groups given up, by reason (``fragment_count``, ``fragment_index``,
    ``fragment_mismatch``, ``fragment_duplicate``, ``fragment_timeout``,
    ``fragment_evicted``)."""

    __slots__ = ("drops", "groups")

    def __init__(self, drops: Counter[str] | None = None) -> None:
        self.groups: dict[int, _Group] = {}
        self.drops: Counter[str] = Counter() if drops is None else drops

    def add(self, group: int, index: int, count: int, chunk: bytes, now: float) -> bytes | None:
        """The whole message once ``chunk`` completes its group, else None."""
        self.expire(now)
        if not 2 <= count <= MAX_FRAGMENTS:
            self.drops["fragment_count"] += 1
            return None
        if index >= count:
            self.drops["fragment_index"] += 1
            return None
        held = self.groups.get(group)
        if held is None:
            if len(self.groups) >= REASSEMBLY_SLOTS:
                del self.groups[next(iter(self.groups))]
                self.drops["fragment_evicted"] += 1
            held = self.groups[group] = _Group(count, now)
        elif held.count != count:
            self.drops["fragment_mismatch"] += 1
            return None
        if index in held.chunks:
            self.drops["fragment_duplicate"] += 1
            return None
        held.chunks[index] = chunk
        if len(held.chunks) < count:
            return None
        del self.groups[group]
        return b"".join(held.chunks[i] for i in range(count))

    def expire(self, now: float) -> None:
        """Drop the groups older than REASSEMBLY_TIMEOUT_S (their message is lost)."""
        if not self.groups:
            return
        for group in [
            g for g, held in self.groups.items() if now - held.started > REASSEMBLY_TIMEOUT_S
        ]:
            del self.groups[group]
            self.drops["fragment_timeout"] += 1
