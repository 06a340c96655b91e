"""Movement invariants (property-based): speed, acceleration and bounds always hold."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tessera.zone.movement import Limits, Rect, desired_velocity, guard, integrate

LIMITS = Limits(max_speed=6.0, accel=40.0)
AREA = Rect(-50.0, -50.0, 50.0, 50.0)
DT = 1 / 30
finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(
    pos=hnp.arrays(np.float64, (8, 3), elements=st.floats(-49, 49)),
    moves=hnp.arrays(np.float64, (20, 8, 2), elements=st.floats(-1, 1)),
    yaws=hnp.arrays(np.float64, (20, 8), elements=st.floats(-7, 7)),
    jumps=hnp.arrays(np.bool_, (20, 8)),
)
def test_no_entity_ever_moves_faster_than_allowed(
    pos: np.ndarray, moves: np.ndarray, yaws: np.ndarray, jumps: np.ndarray
) -> None:
    pos[:, 1] = 0.0
    vel = np.zeros((8, 3))
    for step in range(20):
        norm = np.maximum(np.linalg.norm(moves[step], axis=1, keepdims=True), 1.0)
        desired = desired_velocity(moves[step] / norm, yaws[step], LIMITS.max_speed)
        new, new_vel, _ = integrate(pos, vel, desired, jumps[step], limits=LIMITS, dt=DT, area=AREA)
        ground_step = np.linalg.norm(new[:, [0, 2]] - pos[:, [0, 2]], axis=1)
        assert np.all(ground_step <= LIMITS.max_speed * DT + 1e-9)
        assert np.all(np.linalg.norm(new_vel[:, [0, 2]], axis=1) <= LIMITS.max_speed + 1e-9)
        dv = np.linalg.norm(new_vel[:, [0, 2]] - vel[:, [0, 2]], axis=1)
        assert np.all(dv <= LIMITS.accel * DT + 1e-9)
        assert np.all(AREA.contains(new[:, 0], new[:, 2]))
        assert np.all(new[:, 1] >= 0.0)
        pos, vel = new, new_vel


@settings(max_examples=50, deadline=None)
@given(
    old=hnp.arrays(np.float64, (5, 3), elements=finite),
    new=hnp.arrays(np.float64, (5, 3), elements=finite),
)
def test_guard_clamps_teleports(old: np.ndarray, new: np.ndarray) -> None:
    out, clamped = guard(old, new, 0.2)
    step = np.linalg.norm(out[:, [0, 2]] - old[:, [0, 2]], axis=1)
    assert np.all(step <= 0.2 * (1 + 1e-6) + 1e-6)
    np.testing.assert_array_equal(out[~clamped], new[~clamped])


def test_entities_outside_a_shrunk_area_are_moved_onto_it_without_a_teleport() -> None:
    pos = np.array([[80.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    new, _, clamped = integrate(
        pos,
        np.zeros((2, 3)),
        np.zeros((2, 2)),
        np.zeros(2, bool),
        limits=LIMITS,
        dt=DT,
        area=AREA,
    )
    assert not clamped.any() and new[0, 0] < 50.0 and new[1, 0] == 0.0


def test_forward_follows_yaw() -> None:
    v = desired_velocity(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([np.pi / 2, 0.0]), 2.0)
    np.testing.assert_allclose(v, [[2.0, 0.0], [2.0, 0.0]], atol=1e-12)
