"""Token buckets and per-connection limits."""

from __future__ import annotations

from tessera.relay.limiter import ConnectionLimits, TokenBucket


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
