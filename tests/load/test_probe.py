"""The probe's figures (its play is covered end to end by tests/demo/test_main.py)."""

from __future__ import annotations

from collections import deque

import pytest

from tessera.load.probe import percentiles


def test_percentiles_of_rtt_and_errors() -> None:
    assert percentiles([]) == (0.0, 0.0)
    assert percentiles(deque([0.25])) == (0.25, 0.25)
    p50, p95 = percentiles([float(v) for v in range(101)])
    assert (p50, p95) == (50.0, 95.0)
    assert percentiles([0.0001, 0.0002]) == pytest.approx((0.0, 0.0), abs=1e-3)
