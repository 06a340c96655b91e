"""Per-connection token buckets for packet and byte rate limits."""

from __future__ import annotations


class TokenBucket:
    """Refills ``rate`` tokens per second up to ``burst``; :meth:`take` spends them."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` tokens if available; False (nothing spent) otherwise."""
        tokens = self.tokens + (now - self.last) * self.rate
        tokens = min(tokens, self.burst)
        self.last = now
        if tokens < amount:
            self.tokens = tokens
            return False
        self.tokens = tokens - amount
        return True


class ConnectionLimits:
    """A connection's packet-rate and byte-rate buckets, checked together."""

    __slots__ = ("bytes", "packets")

    def __init__(
        self, *, packets_per_s: float, bytes_per_s: float, burst_s: float, now: float
    ) -> None:
        self.packets = TokenBucket(packets_per_s, packets_per_s * burst_s, now)
        self.bytes = TokenBucket(bytes_per_s, bytes_per_s * burst_s, now)

    def admit(self, size: int, now: float) -> str | None:
        """None if a packet of ``size`` bytes is within both limits, else the drop reason."""
        if not self.packets.take(1.0, now):
            return "rate_packets"
        if not self.bytes.take(size, now):
            return "rate_bytes"
        return None
