"""Link statistics: RTT smoothing and jitter."""

from __future__ import annotations

import pytest

from tessera.wire.link import LinkStats


def test_rtt_smoothing_and_jitter() -> None:
    stats = LinkStats()
    stats.add_rtt(100.0)
    assert stats.rtt_ms == 100.0 and stats.jitter_ms == 0.0
    stats.add_rtt(20.0)
    assert stats.rtt_ms == pytest.approx(90.0)
    assert stats.jitter_ms == pytest.approx(5.0)
