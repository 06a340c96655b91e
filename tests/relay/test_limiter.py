"""Token buckets and per-connection limits."""

from __future__ import annotations

from tessera.relay.limiter import ConnectionLimits, SourceLimits, TokenBucket


def test_bucket_burst_then_refill() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0, now=0.0)
    assert all(bucket.take(1.0, 0.0) for _ in range(5))
    assert not bucket.take(1.0, 0.0)
    assert bucket.take(1.0, 0.1)
    assert not bucket.take(1.0, 0.1)
    # Refill caps at the burst.
    assert sum(bucket.take(1.0, 100.0) for _ in range(10)) == 5


def test_connection_limits_reasons() -> None:
    limits = ConnectionLimits(packets_per_s=2.0, bytes_per_s=1000.0, burst_s=1.0, now=0.0)
    assert limits.admit(400, 0.0) is None
    assert limits.admit(700, 0.0) == "rate_bytes"
    assert limits.admit(100, 0.0) == "rate_packets"
    assert limits.admit(100, 1.0) is None


def test_source_limits_keep_a_bucket_per_host_and_forget_idle_ones() -> None:
    limits = SourceLimits(rate=1.0, burst=2.0, max_sources=2)
    assert limits.take("a", 0.0) and limits.take("a", 0.0)
    assert not limits.take("a", 0.0)
    assert limits.take("b", 0.0)  # another host has its own budget
    assert limits.take("a", 1.0) and not limits.take("a", 1.0)
    # Full: "b" has refilled by t=5 (idle), "a" too; both are forgotten for "c".
    assert limits.take("c", 5.0)
    assert set(limits.buckets) == {"c"}
    # When no bucket is idle, all are dropped rather than growing without bound.
    limits.take("d", 5.0)
    limits.take("e", 5.0)
    assert set(limits.buckets) == {"e"}
