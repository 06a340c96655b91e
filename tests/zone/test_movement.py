"""Movement invariants (property-based): speed, acceleration and bounds always hold."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tessera.wire.geometry import Rect
from tessera.zone.movement import Limits, desired_velocity, guard, integrate

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
        assert np.all((new[:, 0] >= AREA.min_x) & (new[:, 0] < AREA.max_x))
        assert np.all((new[:, 2] >= AREA.min_z) & (new[:, 2] < AREA.max_z))
        assert np.all(new[:, 1] >= 0.0)
        pos, vel = new, new_vel


@settings(max_examples=50, deadline=None)
@given(
    old=hnp.arrays(np.float64, (5, 3), elements=finite),
    new=hnp.arrays(np.float64, (5, 3), elements=finite),
)
def test_guard_clamps_teleports(old: np.ndarray, new: np.ndarray) -> None:
    out, excess = guard(old, new, 0.2)
    clamped = excess > 0
    step = np.linalg.norm(out[:, [0, 2]] - old[:, [0, 2]], axis=1)
    assert np.all(step <= 0.2 * (1 + 1e-6) + 1e-6)
    np.testing.assert_array_equal(out[~clamped], new[~clamped])


def test_entities_outside_a_shrunk_area_stay_and_cannot_go_further_out() -> None:
    # Entity 0 is past the area's east edge (a split gave the zone smaller bounds):
    # standing still it stays put (to be handed to the zone owning its position),
    # walking east it is held where it is, walking west it comes back in.
    pos = np.array([[80.0, 0.0, 0.0], [80.0, 0.0, 0.0], [80.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    vel = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [-5.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    desired = vel[:, [0, 2]]
    new, _, excess = integrate(
        pos, vel, desired, np.zeros(4, bool), limits=LIMITS, dt=DT, area=AREA
    )
    assert not excess.any()
    assert new[0, 0] == 80.0 and new[1, 0] == 80.0 and new[2, 0] < 80.0
    assert new[3, 0] == 0.0


def test_forward_follows_yaw() -> None:
    v = desired_velocity(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([np.pi / 2, 0.0]), 2.0)
    np.testing.assert_allclose(v, [[2.0, 0.0], [2.0, 0.0]], atol=1e-12)
