"""Per-connection link statistics both ends keep: RTT and jitter from acks, traffic.

The relay and the client SDK measure a connection the same way, so their figures
compare (docs/protocol/udp.md, acknowledgements).
"""

from __future__ import annotations

from dataclasses import dataclass

# Send times of the last packets are kept in a ring this large, for RTT from acks.
SENT_RING = 256


@dataclass(slots=True)
class LinkStats:
    """Traffic and timing of one connection, updated on the packet path."""

    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    rtt_samples: int = 0
    last_rtt_ms: float = 0.0

    def add_rtt(self, sample_ms: float) -> None:
        """Smooth RTT like TCP (1/8) and jitter like RFC 3550 (1/16)."""
        if self.rtt_samples == 0:
            self.rtt_ms = sample_ms
        else:
            self.rtt_ms += (sample_ms - self.rtt_ms) / 8.0
            self.jitter_ms += (abs(sample_ms - self.last_rtt_ms) - self.jitter_ms) / 16.0
        self.last_rtt_ms = sample_ms
        self.rtt_samples += 1


class SentTimes:
    """When each recent outgoing sequence was sent, to turn acks into RTT samples."""

    __slots__ = ("_seq", "_times", "acked")

    def __init__(self) -> None:
        self._seq = [0] * SENT_RING
        self._times = [0.0] * SENT_RING
        self.acked = 0

    def sent(self, sequence: int, now: float) -> None:
        slot = sequence % SENT_RING
        self._seq[slot] = sequence
        self._times[slot] = now

    def ack(self, sequence: int, now: float) -> float | None:
        """The RTT in ms if ``sequence`` is a newly acknowledged recent packet."""
        if sequence <= self.acked:
            return None
        self.acked = sequence
        slot = sequence % SENT_RING
        if self._seq[slot] != sequence:
            return None
        return (now - self._times[slot]) * 1000.0
