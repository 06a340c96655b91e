"""Prediction and reconciliation of the player's own movement."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest

from tessera.client.prediction import Motion, Predictor, step

# Instant acceleration keeps the arithmetic of these tests obvious.
SNAPPY = Motion(max_speed=1.0, accel=1e9)


def test_step_frame_acceleration_and_cap() -> None:
    motion = Motion(max_speed=4.0, accel=8.0)
    pos, vel = step((np.zeros(3), np.zeros(3)), 0.0, 1.0, 0.0, dt=0.25, motion=motion)
    # yaw 0 faces +z; velocity reached 2 m/s after 0.25 s at 8 m/s².
    assert vel.tolist() == pytest.approx([0.0, 0.0, 2.0])
    assert pos.tolist() == pytest.approx([0.0, 0.0, 0.5])
    pos, vel = step((pos, vel), 0.0, 1.0, math.pi / 2, dt=10.0, motion=motion)
    # Facing +x now: full speed along x, capped at max_speed.
    assert math.hypot(vel[0], vel[2]) == pytest.approx(4.0)
    assert vel[0] == pytest.approx(4.0)
    _, diag = step((np.zeros(3), np.zeros(3)), 1.0, 1.0, 0.0, dt=10.0, motion=motion)
    assert math.hypot(diag[0], diag[2]) == pytest.approx(4.0)


def test_predicts_before_server_and_reconciles_without_error() -> None:
    predictor = Predictor(SNAPPY)
    predictor.apply(1, 1.0, 0.0, 0.0, 1.0)  # no server position yet: ignored
    assert predictor.pending == deque()
    predictor.reconcile(np.zeros(3), 0)
    for seq in (1, 2, 3):
        predictor.apply(seq, 1.0, 0.0, 0.0, 1.0)
    assert predictor.position is not None
    assert predictor.position[0] == pytest.approx(3.0)
    # The server agrees about input 2: no error, input 3 replayed on top.
    assert predictor.reconcile(np.array([2.0, 0.0, 0.0]), 2) == pytest.approx(0.0)
    assert predictor.position[0] == pytest.approx(3.0)
    assert [p.sequence for p in predictor.pending] == [3]


def test_server_correction_is_measured_and_adopted() -> None:
    predictor = Predictor(SNAPPY)
    predictor.reconcile(np.zeros(3), 0)
    for seq in (1, 2):
        predictor.apply(seq, 1.0, 0.0, 0.0, 1.0)
    # The server clamped input 1 (e.g. a wall): it is at 0.25 instead of 1.
    error = predictor.reconcile(np.array([0.25, 0.0, 0.0]), 1)
    assert error == pytest.approx(0.75)
    assert predictor.position is not None
    assert predictor.position[0] == pytest.approx(1.25)
    # Older snapshots do not roll the prediction back.
    assert predictor.reconcile(np.array([9.0, 0.0, 0.0]), 0) is None
    assert predictor.position[0] == pytest.approx(1.25)
    stats = predictor.error_stats()
    assert stats["max_m"] == pytest.approx(0.75) and stats["samples"] == 1
