"""The input system: validation of player inputs, their buffer, and their
application to intents.

An input is checked completely (finite values, ranges, sequence, rate) and only
then accepted, so a rejected input never leaves half-written state. Every
rejection has a reason, counted in metrics and reported to the player.

The rules are written once, in compiled kernels that take a relay's batch one
input at a time (:func:`apply`; :func:`check` is the value rules on one input):
a batch costs about 10 µs plus 0.1 µs per input, so small batches (the relay
flushes every half millisecond) stay cheap.

Accepted inputs wait in the player's buffer; each tick :func:`consume` applies the
oldest one, so the zone steps a player once per input as the client predicts,
even when the network bunches them (docs/ZONE.md, "The input buffer").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from tessera.zone import kernels
from tessera.zone.entities import Entities

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

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
HANDOFF = "handoff"
REASONS = (
    NAN, RANGE, DUPLICATE, OUT_OF_ORDER, RATE, UNKNOWN_PLAYER, NOT_ATTACHED, OVERSIZED, HANDOFF
)  # fmt: skip
# counted, not told to the player
QUIET = frozenset({DUPLICATE, OUT_OF_ORDER, UNKNOWN_PLAYER, HANDOFF})

MAX_BATCH = 4096
MAX_RTT_MS = 5000.0
MAX_INTERP_MS = 1000.0
MAX_YAW = 2 * math.pi + 1e-6
MAX_PITCH = math.pi / 2 + 1e-6
MAX_MOVE = 1.0 + 1e-6  # a longer move vector is a speed hack: scaled to length 1
DEFAULT_INTERP_MS = 100.0  # what an interpolation delay of 0 means
RATE_PER_HZ = 2.0  # sustained inputs per second, per tick per second
BURST_S = 0.5  # seconds of inputs at the tick rate a player may save up
HOLD = 2  # inputs a buffer keeps back past a tick at most: older ones apply together
DRAIN_S = 1.0  # a buffer that kept inputs back this long applies two in one tick

# The limits in the order of tessera.zone.kernels.LIM_*, and each outcome's reason.
_LIMITS = np.array(
    [MAX_YAW, MAX_PITCH, MAX_RTT_MS, MAX_INTERP_MS, MAX_MOVE, DEFAULT_INTERP_MS, ACTIONS],
    np.float64,
)
_REASON = {
    kernels.UNKNOWN: UNKNOWN_PLAYER,
    kernels.NONFINITE: NAN,
    kernels.OUT_OF_RANGE: RANGE,
    kernels.LEAVING: HANDOFF,
    kernels.REPEATED: DUPLICATE,
    kernels.OLDER: OUT_OF_ORDER,
    kernels.STARVED: RATE,
}


class Input(NamedTuple):
    """One player input (the values of a PlayerInput)."""

    player_id: str
    sequence: int
    move_x: float = 0.0
    move_z: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    actions: int = 0
    rtt_ms: float = 0.0
    interp_ms: float = 0.0
    client_time_ms: float = 0.0


@dataclass(frozen=True)
class Inputs:
    """Player inputs in arrival order, one array per field (the servicer builds them
    from a relay's PlayerInput batch)."""

    players: list[str]
    sequence: I64
    move_x: F64
    move_z: F64
    yaw: F64
    pitch: F64
    actions: I64
    rtt_ms: F64
    interp_ms: F64
    client_time_ms: F64

    def __len__(self) -> int:
        return len(self.players)

    def take(self, index: I64) -> Inputs:
        """The inputs at ``index``, in that order."""
        return Inputs(
            players=[self.players[i] for i in index.tolist()],
            **{f: getattr(self, f)[index] for f in _COLUMNS},
        )

    @classmethod
    def of(cls, items: Sequence[Input]) -> Inputs:
        """The columns of separate inputs."""
        return cls(
            players=[i.player_id for i in items],
            sequence=np.array([i.sequence for i in items], np.int64),
            move_x=np.array([i.move_x for i in items], np.float64),
            move_z=np.array([i.move_z for i in items], np.float64),
            yaw=np.array([i.yaw for i in items], np.float64),
            pitch=np.array([i.pitch for i in items], np.float64),
            actions=np.array([i.actions for i in items], np.int64),
            rtt_ms=np.array([i.rtt_ms for i in items], np.float64),
            interp_ms=np.array([i.interp_ms for i in items], np.float64),
            client_time_ms=np.array([i.client_time_ms for i in items], np.float64),
        )


_COLUMNS = tuple(f for f in Inputs.__dataclass_fields__ if f != "players")


class Command(NamedTuple):
    """One validated input, ready to apply (the result of :func:`check`)."""

    sequence: int
    move_x: float
    move_z: float
    yaw: float
    pitch: float
    actions: int
    rtt_ms: float
    interp_ms: float
    speed_excess: float  # how far |move| exceeded 1 before clamping (0 if it did not)


@dataclass(frozen=True)
class Outcome:
    """What :func:`apply` did with a batch."""

    accepted: int
    drops: dict[int, str]  # input index -> reason
    clamped: dict[int, float]  # input index -> speed excess, for accepted inputs scaled down


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
    """One input's clamped Command, or the reason ``nan`` / ``range`` for rejecting it
    (the value rules of :func:`apply`, on their own)."""
    floats = [float(v) for v in (move_x, move_z, yaw, pitch, rtt_ms, interp_ms, client_time_ms)]
    mx, mz, yw, pt, rtt, interp, client = floats  # one compiled signature, as apply's
    why = kernels.screen(int(sequence), mx, mz, yw, pt, int(actions), rtt, interp, client, _LIMITS)
    if why != kernels.ACCEPTED:
        return _REASON[why]
    mx, mz, yw, interp, excess = kernels.clamp(mx, mz, yw, interp, _LIMITS)
    return Command(sequence, mx, mz, yw, pitch, actions, rtt_ms, interp, excess)


def apply(ents: Entities, batch: Inputs, now_s: float, *, hz: int) -> Outcome:
    """Check the batch's inputs one at a time, in order, and buffer those that pass
    for :func:`consume`. An input is dropped when its player is unknown here
    (``unknown_player``); a value is NaN or infinite (``nan``) or out of its range
    (``range``); its player's handoff is committing (``handoff``); its sequence is
    not above the newest accepted (``duplicate``, ``out_of_order``); or its player's
    rate bucket is empty (``rate``: refilled at ``RATE_PER_HZ`` inputs a second per
    tick a second, at most ``BURST_S`` seconds of them saved up). An accepted input's
    move vector is scaled to length 1 when longer, its yaw normalized into
    [-pi, pi], an interpolation delay of 0 read as the default; a full buffer folds
    its oldest input into the next (its actions kept, its move superseded), as a
    tick that applies both would. Compiled (:func:`tessera.zone.kernels.admit`)."""
    players, index = ents.players, ents.index
    rows = np.array([index.get(players.get(p, -1), -1) for p in batch.players], np.int64)
    outcome = np.empty(rows.size, np.int8)
    excess = np.empty(rows.size, np.float64)
    kernels.admit(
        rows,
        batch.sequence,
        batch.move_x,
        batch.move_z,
        batch.yaw,
        batch.pitch,
        batch.actions,
        batch.rtt_ms,
        batch.interp_ms,
        batch.client_time_ms,
        ents.leaving,
        ents.seen_seq,
        ents.tokens,
        ents.tokens_at,
        ents.queued,
        ents.q_seq,
        ents.q_values,
        ents.q_actions,
        ents.q_wait,
        now_s,
        RATE_PER_HZ * hz,
        BURST_S * hz,
        _LIMITS,
        outcome,
        excess,
    )
    dropped = np.flatnonzero(outcome)
    over = np.flatnonzero(excess > 0.0)
    return Outcome(
        accepted=rows.size - dropped.size,
        drops={
            i: _REASON[c] for i, c in zip(dropped.tolist(), outcome[dropped].tolist(), strict=True)
        },
        clamped=dict(zip(over.tolist(), excess[over].tolist(), strict=True)),
    )


def consume(ents: Entities, *, hz: int) -> None:
    """Apply buffered inputs to the players' intents, once per tick: the oldest input
    of each non-empty buffer, or more when over ``HOLD`` would wait (all but the
    newest ``HOLD``), or two when inputs have waited for ``DRAIN_S`` in a row. Inputs
    applied together act as one: the newest sets the intent, their actions OR-ed,
    and ``waited`` says how many ticks it waited (an attack's rewind adds them).
    A player with nothing buffered keeps the intent it had. Compiled
    (:func:`tessera.zone.kernels.consume`)."""
    n = ents.n
    kernels.consume(
        ents.queued[:n],
        ents.held_ticks[:n],
        ents.q_seq[:n],
        ents.q_values[:n],
        ents.q_actions[:n],
        ents.q_wait[:n],
        ents.last_seq[:n],
        ents.waited[:n],
        ents.move[:n],
        ents.yaw[:n],
        ents.pitch[:n],
        ents.rtt_ms[:n],
        ents.interp_ms[:n],
        ents.actions[:n],
        HOLD,
        DRAIN_S * hz,
    )


def forget(ents: Entities, row: int) -> None:
    """Drop a player's buffered inputs, and refuse its new ones (``handoff``) until
    :func:`stay`: its handoff is committing, and the new zone applies the client's
    resends of them (above the record's ``last_input_seq``), so no tick here before
    the route switches may."""
    ents.queued[row] = 0
    ents.held_ticks[row] = 0
    ents.leaving[row] = True


def stay(ents: Entities, row: int) -> None:
    """The player's handoff was aborted: take its inputs again. Those refused
    meanwhile come back in the client's next packets, which repeat the newest few."""
    ents.leaving[row] = False
