"""The reliable ordered channel of protocol v2: sequence numbers, cumulative ack
plus ack bitfield, retransmission on an RTO from measured RTT, exactly-once
in-order delivery, and a bounded window on both ends.

Pure: times are arguments (monotonic seconds) and nothing is sent here; the
connection (:mod:`tessera.wire.connection`) puts the frames and acks into
datagrams. docs/protocol/reliable.md is the normative description.
"""

from __future__ import annotations

from dataclasses import dataclass

# Messages sent and not yet acknowledged, at most; the receiver buffers at most
# as many ahead of the next one it delivers.
WINDOW = 256
# Selective acks: bit i of ack_bits = sequence ack + 2 + i received.
ACK_BITS = 32
# A receiver owes an ack; it rides on the next outgoing packet, or goes alone
# after this delay (one input or snapshot interval at 20 Hz).
ACK_DELAY_S = 0.05
INITIAL_RTO_S = 0.5
MIN_RTO_S = 0.1
# Above any RTT worth waiting for (the default idle timeout): an RTO clamped below
# the measured RTT would resend every unacknowledged message each RTO, and a peer
# already behind would fall further behind.
MAX_RTO_S = 10.0


class WindowFull(Exception):
    """WINDOW messages are unacknowledged: the peer is gone or far too slow."""


@dataclass(slots=True)
class _Unacked:
    message: bytes
    due: float
    tries: int


class ReliableSender:
    """Numbers outgoing reliable messages (1, 2, 3, ...) and keeps each until it is
    acknowledged, retransmitting it when its RTO passes (doubled per try)."""

    __slots__ = ("next_sequence", "rttvar", "srtt", "unacked")

    def __init__(self) -> None:
        self.next_sequence = 1
        self.unacked: dict[int, _Unacked] = {}
        self.srtt = 0.0
        self.rttvar = 0.0

    @property
    def rto(self) -> float:
        """RFC 6298's RTO plus the peer's ack delay, clamped to [MIN_RTO_S, MAX_RTO_S]."""
        if self.srtt == 0.0:
            return INITIAL_RTO_S
        rto = self.srtt + max(0.01, 4.0 * self.rttvar) + ACK_DELAY_S
        return min(MAX_RTO_S, max(MIN_RTO_S, rto))

    def rtt_sample(self, rtt_s: float) -> None:
        if self.srtt == 0.0:
            self.srtt, self.rttvar = rtt_s, rtt_s / 2.0
        else:
            self.rttvar += (abs(self.srtt - rtt_s) - self.rttvar) / 4.0
            self.srtt += (rtt_s - self.srtt) / 8.0

    def push(self, message: bytes, now: float) -> int:
        """The sequence of a new message (sent by the caller now); WindowFull if
        WINDOW messages are still unacknowledged."""
        if len(self.unacked) >= WINDOW:
            raise WindowFull(f"{WINDOW} reliable messages unacknowledged")
        sequence = self.next_sequence
        self.next_sequence = sequence + 1
        self.unacked[sequence] = _Unacked(message, now + self.rto, 0)
        return sequence

    def acknowledge(self, ack: int, ack_bits: int) -> None:
        """Forget every message the peer reports: all up to ``ack``, and
        ``ack + 2 + i`` for each bit i set."""
        for sequence in [s for s in self.unacked if s <= ack]:
            del self.unacked[sequence]
        bits = ack_bits
        while bits:
            low = bits & -bits
            self.unacked.pop(ack + 1 + low.bit_length(), None)
            bits ^= low

    def due(self, now: float) -> list[tuple[int, bytes]]:
        """The messages to retransmit now, oldest first; each is due again after
        its RTO doubled per try (at most MAX_RTO_S)."""
        out: list[tuple[int, bytes]] = []
        rto = self.rto
        for sequence, item in self.unacked.items():
            if item.due <= now:
                item.tries += 1
                item.due = now + min(MAX_RTO_S, rto * (1 << min(item.tries, 5)))
                out.append((sequence, item.message))
        return out

    def next_due(self) -> float | None:
        return min((item.due for item in self.unacked.values()), default=None)

    def resend_now(self, sequence: int, now: float) -> None:
        """Make ``sequence`` due at once (e.g. Accepted, when its handshake repeats)."""
        item = self.unacked.get(sequence)
        if item is not None:
            item.due = now


class ReliableReceiver:
    """Delivers reliable messages exactly once, in sequence order; owes the sender
    an ack after every reliable frame (including duplicates, whose earlier ack
    may have been lost)."""

    __slots__ = ("ack_owed_since", "buffered", "delivered", "duplicates", "refused")

    def __init__(self) -> None:
        self.delivered = 0
        self.buffered: dict[int, bytes] = {}
        self.ack_owed_since: float | None = None
        self.duplicates = 0
        self.refused = 0

    def receive(self, sequence: int, message: bytes, now: float) -> list[bytes]:
        """The messages now deliverable in order (possibly none). A sequence beyond
        the window is refused (a sender never has more in flight): not buffered,
        not acknowledged."""
        if sequence > self.delivered + WINDOW or sequence <= 0:
            self.refused += 1
            return []
        if self.ack_owed_since is None:
            self.ack_owed_since = now
        if sequence <= self.delivered or sequence in self.buffered:
            self.duplicates += 1
            return []
        self.buffered[sequence] = message
        out: list[bytes] = []
        while (nxt := self.delivered + 1) in self.buffered:
            out.append(self.buffered.pop(nxt))
            self.delivered = nxt
        return out

    def ack_fields(self) -> tuple[int, int]:
        """(ack, ack_bits): all up to ``ack`` delivered; bit i = ack + 2 + i buffered."""
        base = self.delivered + 2
        bits = 0
        for sequence in self.buffered:
            offset = sequence - base
            if 0 <= offset < ACK_BITS:
                bits |= 1 << offset
        return self.delivered, bits

    def ack_due(self, now: float) -> bool:
        """True if an owed ack has waited ACK_DELAY_S for a packet to ride on."""
        owed = self.ack_owed_since
        return owed is not None and now - owed >= ACK_DELAY_S
