"""Per-connection link statistics both ends keep: RTT and jitter, traffic.

The relay and the client SDK measure a connection the same way (RTT from the
echoed clock of protocol v2, docs/protocol/udp.md), so their figures compare.
"""

from __future__ import annotations

from dataclasses import dataclass


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
