"""Validation of player input commands before anything touches entity state.

A command is checked completely (finite values, ranges, sequence, rate) and only
then applied, so a rejected command never leaves half-written state. Every
rejection has a reason, counted in metrics and reported to the player.
"""

from __future__ import annotations

import math
from typing import NamedTuple

ACTION_MELEE = 1
ACTION_RANGED = 2
ACTION_JUMP = 4
ACTIONS = ACTION_MELEE | ACTION_RANGED | ACTION_JUMP

NAN = "nan"
RANGE = "range"
DUPLICATE = "duplicate"
OUT_OF_ORDER = "out_of_order"
RATE = "rate"
UNKNOWN_PLAYER = "unknown_player"
NOT_ATTACHED = "not_attached"
OVERSIZED = "oversized"
REASONS = (NAN, RANGE, DUPLICATE, OUT_OF_ORDER, RATE, UNKNOWN_PLAYER, NOT_ATTACHED, OVERSIZED)

MAX_BATCH = 4096
MAX_RTT_MS = 5000.0
MAX_INTERP_MS = 1000.0


class Command(NamedTuple):
    """A validated input, ready to apply (a tuple: thousands are built per tick)."""

    sequence: int
    move_x: float
    move_z: float
    yaw: float
    pitch: float
    actions: int
    rtt_ms: float
    interp_ms: float
    speed_excess: float  # how far |move| exceeded 1 before clamping (0 if it did not)


_command = Command._make  # positional construction: a third of the cost of keywords


def check(
    *,
    sequence: int,
    move_x: float,
    move_z: float,
    yaw: float,
    pitch: float,
    actions: int,
    rtt_ms: float,
    interp_ms: float,
    client_time_ms: float,
) -> Command | str:
    """A clamped Command, or the reason ``nan`` / ``range`` for rejecting it."""
    # NaN and inf survive a sum; float32 wire values cannot overflow a double sum.
    if not (
        math.isfinite(move_x + move_z + yaw + pitch + rtt_ms + interp_ms)
        and math.isfinite(client_time_ms)
    ):
        return NAN
    if (
        abs(yaw) > 2 * math.pi + 1e-6
        or abs(pitch) > math.pi / 2 + 1e-6
        or actions & ~ACTIONS
        or not 0.0 <= rtt_ms <= MAX_RTT_MS
        or not 0.0 <= interp_ms <= MAX_INTERP_MS
        or sequence <= 0
    ):
        return RANGE
    length = math.hypot(move_x, move_z)
    excess = 0.0
    if length > 1.0 + 1e-6:
        excess = length - 1.0
        move_x, move_z = move_x / length, move_z / length
    return _command(
        (
            sequence,
            move_x,
            move_z,
            math.remainder(yaw, 2 * math.pi),
            pitch,
            actions,
            rtt_ms,
            interp_ms or 100.0,
            excess,
        )
    )


def order(sequence: int, last: int) -> str | None:
    """``duplicate`` / ``out_of_order`` for a sequence at or below the last applied one."""
    if sequence == last:
        return DUPLICATE
    if sequence < last:
        return OUT_OF_ORDER
    return None


def refill(tokens: float, since_s: float, now_s: float, *, rate: float, burst: float) -> float:
    """Token bucket: ``rate`` inputs per second sustained, at most ``burst`` saved up."""
    return min(burst, tokens + max(0.0, now_s - since_s) * rate)
