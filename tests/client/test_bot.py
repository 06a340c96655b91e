"""Bot movement patterns."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from tessera.client.bot import BotState, follow_the_crowd, hotspot, random_walk, towards, waypoints


def state(seed: int = 1) -> BotState:
    return BotState(random.Random(seed))


def test_towards_unit_speed_and_slowing_on_arrival() -> None:
    far = towards(np.zeros(3), (10.0, 0.0, 0.0))
    assert (far.move_x, far.move_z) == pytest.approx((1.0, 0.0))
    near = towards(np.zeros(3), (0.0, 0.0, 0.5))
    assert near.move_z == pytest.approx(0.5)
    assert towards(np.zeros(3), (0.0, 0.0, 0.0)).move_x == 0.0


def test_random_walk_is_unit_and_deterministic_per_seed() -> None:
    a, b = state(7), state(7)
    moves_a = [random_walk(a, np.zeros(3), []) for _ in range(60)]
    moves_b = [random_walk(b, np.zeros(3), []) for _ in range(60)]
    assert moves_a == moves_b
    assert all(math.hypot(m.move_x, m.move_z) == pytest.approx(1.0) for m in moves_a)
    assert len({(round(m.move_x, 3), round(m.move_z, 3)) for m in moves_a}) > 1


def test_waypoints_advance_when_reached() -> None:
    pattern = waypoints([(10.0, 0.0), (10.0, 10.0)])
    s = state()
    first = pattern(s, np.zeros(3), [])
    assert first.move_x == pytest.approx(1.0)
    second = pattern(s, np.array([10.0, 0.0, 0.2]), [])
    assert s.waypoint == 1 and second.move_z == pytest.approx(1.0)


def test_follow_the_crowd_heads_for_the_centroid() -> None:
    intent = follow_the_crowd(state(), np.zeros(3), [np.array([4.0, 0, 0]), np.array([4.0, 0, 2])])
    assert intent.move_x > 0.9 and intent.move_z > 0.2


def test_hotspot_targets_stay_within_radius() -> None:
    pattern = hotspot((50.0, 50.0), radius_m=5.0)
    s = state()
    for _ in range(100):
        pattern(s, np.zeros(3), [])
        assert math.hypot(s.extra["tx"] - 50.0, s.extra["tz"] - 50.0) <= 5.0
    intent = pattern(s, np.zeros(3), [])
    assert intent.move_x > 0.5 and intent.move_z > 0.5
