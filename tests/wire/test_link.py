"""Link statistics: RTT smoothing, jitter and RTT samples from acks."""

from __future__ import annotations

import pytest

from tessera.wire.link import SENT_RING, LinkStats, SentTimes


def test_rtt_smoothing_and_jitter() -> None:
    stats = LinkStats()
    stats.add_rtt(100.0)
    assert stats.rtt_ms == 100.0 and stats.jitter_ms == 0.0
    stats.add_rtt(20.0)
    assert stats.rtt_ms == pytest.approx(90.0)
    assert stats.jitter_ms == pytest.approx(5.0)


def test_sent_times_give_rtt_once_per_new_ack() -> None:
    sent = SentTimes()
    sent.sent(1, 10.0)
    sent.sent(2, 10.5)
    assert sent.ack(2, 10.55) == pytest.approx(50.0)
    assert sent.ack(2, 11.0) is None  # already acknowledged
    assert sent.ack(1, 11.0) is None  # older than the newest ack
    sent.sent(3, 12.0)
    sent.sent(3 + SENT_RING, 13.0)  # overwrote slot of 3
    assert sent.ack(3, 13.1) is None
