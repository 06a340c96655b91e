"""Token buckets: per-connection packet and byte rate limits, per-source limits
for sessionless traffic (PING, HANDSHAKE)."""

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


class SourceLimits:
    """One token bucket per source host (not port: ports are free to vary), for the
    traffic a relay answers without a session. At most ``max_sources`` buckets are
    kept: when full, buckets that have refilled (an idle source) are forgotten,
    and if none has, all are (a flood of spoofed sources then costs one reset)."""

    __slots__ = ("buckets", "burst", "max_sources", "rate")

    def __init__(self, rate: float, burst: float, max_sources: int = 65_536) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self.buckets: dict[str, TokenBucket] = {}

    def take(self, source: str, now: float) -> bool:
        """Spend one token of ``source``'s bucket; False if it is empty."""
        bucket = self.buckets.get(source)
        if bucket is None:
            if len(self.buckets) >= self.max_sources:
                self.prune(now)
            bucket = self.buckets[source] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(1.0, now)

    def prune(self, now: float) -> None:
        """Forget the buckets that are full again at ``now``; all, if none is."""
        full_after = self.burst / self.rate if self.rate > 0 else float("inf")
        self.buckets = {
            source: bucket
            for source, bucket in self.buckets.items()
            if now - bucket.last < full_after
        }
        if len(self.buckets) >= self.max_sources:
            self.buckets = {}
