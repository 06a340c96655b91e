"""Input validation: rejected values, clamping, ordering, the rate bucket."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tessera.zone import inputs


def cmd(**over: Any) -> inputs.Command | str:
    base: dict[str, Any] = {
        "sequence": 1,
        "move_x": 0.0,
        "move_z": 1.0,
        "yaw": 0.5,
        "pitch": 0.0,
        "actions": 0,
        "rtt_ms": 50.0,
        "interp_ms": 100.0,
        "client_time_ms": 1.0,
    }
    return inputs.check(**{**base, **over})


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("move_x", math.nan, inputs.NAN),
        ("yaw", math.inf, inputs.NAN),
        ("client_time_ms", -math.inf, inputs.NAN),
        ("yaw", 7.0, inputs.RANGE),
        ("pitch", 2.0, inputs.RANGE),
        ("actions", 8, inputs.RANGE),
        ("rtt_ms", -1.0, inputs.RANGE),
        ("interp_ms", 5000.0, inputs.RANGE),
        ("sequence", 0, inputs.RANGE),
    ],
)
def test_bad_values_are_rejected(field: str, value: float, reason: str) -> None:
    assert cmd(**{field: value}) == reason


def test_speed_hack_is_clamped_to_unit_length() -> None:
    out = cmd(move_x=30.0, move_z=40.0)
    assert isinstance(out, inputs.Command)
    assert math.hypot(out.move_x, out.move_z) == pytest.approx(1.0)
    assert out.speed_excess == pytest.approx(49.0)
    ok = cmd(yaw=-6.0)
    assert isinstance(ok, inputs.Command) and ok.speed_excess == 0.0
    assert -math.pi <= ok.yaw <= math.pi


def test_order_and_rate() -> None:
    assert inputs.order(5, 5) == inputs.DUPLICATE
    assert inputs.order(4, 5) == inputs.OUT_OF_ORDER
    assert inputs.order(6, 5) is None
    assert inputs.refill(0.0, 0.0, 0.5, rate=60.0, burst=15.0) == 15.0
    assert inputs.refill(2.0, 1.0, 1.05, rate=60.0, burst=15.0) == pytest.approx(5.0)
