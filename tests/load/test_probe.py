"""The probe's figures (its play is covered end to end by tests/demo/test_main.py)."""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest

from tessera.client.bot import BotState
from tessera.client.client import Intent
from tessera.load.probe import percentiles, walking


def test_percentiles_of_rtt_and_errors() -> None:
    assert percentiles([]) == (0.0, 0.0)
    assert percentiles(deque([0.25])) == (0.25, 0.25)
    p50, p95 = percentiles([float(v) for v in range(101)])
    assert (p50, p95) == (50.0, 95.0)
    assert percentiles([0.0001, 0.0002]) == pytest.approx((0.0, 0.0), abs=1e-3)


def test_walking_scales_the_pattern_s_moves() -> None:
    walk = walking(lambda s, p, o: Intent(move_x=0.6, move_z=0.8, yaw=0.5, actions=1), 0.12)
    move = walk(BotState(random.Random(1)), np.zeros(3), [])
    assert (move.move_x, move.move_z) == pytest.approx((0.072, 0.096))
    assert (move.yaw, move.actions) == (0.5, 1)
