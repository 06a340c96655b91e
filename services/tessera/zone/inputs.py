"""The input system: validation of player inputs, their buffer, and their
application to intents.

An input is checked completely (finite values, ranges, sequence, rate) and only
then accepted, so a rejected input never leaves half-written state. Every
rejection has a reason, counted in metrics and reported to the player.

The rules are written once, over columns: :func:`screen` (values), :func:`clamp`
(what an accepted input writes), :func:`order` and :func:`refill` (sequence and
rate), all applied by :func:`apply`; :func:`check` is the value rules on one input.

Accepted inputs wait in the player's buffer; each tick :func:`consume` applies the
oldest one, so the zone steps a player once per input as the client predicts,
even when the network bunches them (docs/ZONE.md, "The input buffer").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from tessera.zone import kernels
from tessera.zone.entities import INPUT_QUEUE, Entities

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

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
TURN = 2 * math.pi
HOLD = 2  # inputs a buffer keeps back past a tick at most: older ones apply together
DRAIN_S = 1.0  # a buffer that kept inputs back this long applies two in one tick

Num = TypeVar("Num", float, F64)


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
class Clamped:
    """What valid inputs write, per input (0 where an input is not valid)."""

    move_x: F64
    move_z: F64
    yaw: F64  # in [-pi, pi]
    interp_ms: F64
    excess: F64  # how far |move| exceeded 1 before clamping (0 if it did not)


@dataclass(frozen=True)
class Outcome:
    """What :func:`apply` did with a batch."""

    accepted: int
    drops: dict[int, str]  # input index -> reason
    clamped: dict[int, float]  # input index -> speed excess, for accepted inputs scaled down


def screen(b: Inputs) -> tuple[Bools, Bools]:
    """Per input: any value non-finite (``nan``); finite but out of range (``range``)."""
    # NaN and inf survive a sum; float32 wire values cannot overflow a double sum.
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, which is what we look for
        finite = np.isfinite(b.move_x + b.move_z + b.yaw + b.pitch + b.rtt_ms + b.interp_ms)
    nan = ~(finite & np.isfinite(b.client_time_ms))
    wrong = (
        (np.abs(b.yaw) > MAX_YAW)
        | (np.abs(b.pitch) > MAX_PITCH)
        | ((b.actions & ~ACTIONS) != 0)
        | ~((b.rtt_ms >= 0.0) & (b.rtt_ms <= MAX_RTT_MS))
        | ~((b.interp_ms >= 0.0) & (b.interp_ms <= MAX_INTERP_MS))
        | (b.sequence <= 0)
    )
    return nan, ~nan & wrong


def clamp(b: Inputs, valid: Bools) -> Clamped:
    """The values the ``valid`` inputs write: the move vector scaled to length 1 when
    longer, yaw normalized into [-pi, pi], an interpolation delay of 0 as the default."""
    mx, mz = np.where(valid, b.move_x, 0.0), np.where(valid, b.move_z, 0.0)
    yaw, interp = np.where(valid, b.yaw, 0.0), np.where(valid, b.interp_ms, 0.0)
    length = np.hypot(mx, mz)
    over = length > MAX_MOVE
    for j in np.flatnonzero(over).tolist():  # rare: math.hypot, exactly as for one input
        length[j] = math.hypot(mx[j], mz[j])
    scale = np.where(over, length, 1.0)
    return Clamped(
        move_x=mx / scale,
        move_z=mz / scale,
        yaw=yaw - TURN * np.rint(yaw / TURN),  # math.remainder(yaw, 2 pi): exact for |yaw| <= 2 pi
        interp_ms=np.where(interp == 0.0, DEFAULT_INTERP_MS, interp),
        excess=np.where(over, length - 1.0, 0.0),
    )


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
    """One input's clamped Command, or the reason ``nan`` / ``range`` for rejecting it."""
    values = (move_x, move_z, yaw, pitch, actions, rtt_ms, interp_ms, client_time_ms)
    one = Inputs.of([Input("", sequence, *values)])
    nan, wrong = screen(one)
    if nan[0] or wrong[0]:
        return NAN if nan[0] else RANGE
    c = clamp(one, ~nan)
    return Command(
        sequence,
        float(c.move_x[0]),
        float(c.move_z[0]),
        float(c.yaw[0]),
        pitch,
        actions,
        rtt_ms,
        float(c.interp_ms[0]),
        float(c.excess[0]),
    )


def order(sequence: int, last: int) -> str | None:
    """``duplicate`` / ``out_of_order`` for a sequence at or below the last applied one."""
    if sequence == last:
        return DUPLICATE
    if sequence < last:
        return OUT_OF_ORDER
    return None


def refill(tokens: Num, since_s: Num, now_s: float, *, rate: float, burst: float) -> Num:
    """Token bucket: ``rate`` inputs per second sustained, at most ``burst`` saved up."""
    out: Num = np.minimum(burst, tokens + np.maximum(0.0, now_s - since_s) * rate)
    return out


def apply(ents: Entities, batch: Inputs, now_s: float, *, hz: int) -> Outcome:
    """Validate the batch and buffer what passes for :func:`consume`, with the
    outcome of taking its inputs one at a time in order. Vectorised in passes: the
    first takes every player's first valid input, the next their second, and so on,
    so a player's inputs still queue in order (one pass in the normal batch)."""
    players, index = ents.players, ents.index
    rows = np.array([index.get(players.get(p, -1), -1) for p in batch.players], np.int64)
    nan, wrong = screen(batch)
    known = rows >= 0
    leaving = known & ents.leaving[np.maximum(rows, 0)]
    valid = known & ~leaving & ~nan & ~wrong
    drops = {int(i): UNKNOWN_PLAYER for i in np.flatnonzero(~known)}
    drops |= {int(i): HANDOFF for i in np.flatnonzero(leaving)}
    drops |= {int(i): NAN for i in np.flatnonzero(known & nan)}
    drops |= {int(i): RANGE for i in np.flatnonzero(known & wrong)}
    values = clamp(batch, valid)
    accepted, clamped = 0, dict[int, float]()
    for wave in _passes(rows, valid):
        ok = _admit(ents, batch, wave, rows, now_s, hz=hz, drops=drops)
        r = rows[ok]
        ents.seen_seq[r] = batch.sequence[ok]
        slot = _room(ents, r)
        ents.q_seq[r, slot] = batch.sequence[ok]
        ents.q_values[r, slot] = np.stack(
            [
                values.move_x[ok],
                values.move_z[ok],
                values.yaw[ok],
                batch.pitch[ok],
                batch.rtt_ms[ok],
                values.interp_ms[ok],
            ],
            axis=1,
        )
        ents.q_actions[r, slot] = batch.actions[ok]
        ents.q_wait[r, slot] = 0
        ents.queued[r] = slot + 1
        accepted += int(ok.size)
        over = values.excess[ok] > 0.0
        clamped |= dict(zip(ok[over].tolist(), values.excess[ok][over].tolist(), strict=True))
    return Outcome(accepted, drops, clamped)


def _room(ents: Entities, rows: I64) -> I64:
    """The free slot at the end of each (distinct) row's buffer; a full buffer first
    folds its oldest input into the next one (its actions kept, its move superseded),
    as a tick that applies both would."""
    full = rows[ents.queued[rows] >= INPUT_QUEUE]
    if full.size:
        ents.q_actions[full, 1] |= ents.q_actions[full, 0]
        for arr in (ents.q_seq, ents.q_values, ents.q_actions, ents.q_wait):
            arr[full, :-1] = arr[full, 1:]
        ents.queued[full] = INPUT_QUEUE - 1
    slot: I64 = ents.queued[rows].astype(np.int64)
    return slot


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


def _passes(rows: I64, valid: Bools) -> list[I64]:
    """Indices of the valid inputs, split so each pass holds one input per player."""
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return []
    # Rank each input among its player's: sort by player (stable keeps input order),
    # then count from the start of each player's run.
    order = np.argsort(rows[idx], kind="stable")
    grouped = rows[idx][order]
    start = np.r_[True, grouped[1:] != grouped[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(idx.size), 0))
    rank = np.empty(idx.size, np.int64)
    rank[order] = np.arange(idx.size) - first
    return [idx[rank == k] for k in range(int(rank.max()) + 1)]


def _admit(
    ents: Entities,
    batch: Inputs,
    wave: I64,
    rows: I64,
    now_s: float,
    *,
    hz: int,
    drops: dict[int, str],
) -> I64:
    """The inputs of one pass that are newer than their player's last and within its
    rate (the bucket is charged); the others are added to ``drops``."""
    seq, last = batch.sequence[wave], ents.seen_seq[rows[wave]]
    stale = seq <= last
    for j in np.flatnonzero(stale).tolist():
        if why := order(seq.item(j), last.item(j)):
            drops[wave.item(j)] = why
    reach = wave[~stale]
    r = rows[reach]
    tokens = refill(
        ents.tokens[r], ents.tokens_at[r], now_s, rate=RATE_PER_HZ * hz, burst=BURST_S * hz
    )
    ents.tokens_at[r] = now_s
    starved = tokens < 1.0
    ents.tokens[r] = np.where(starved, tokens, tokens - 1.0)
    drops |= {int(i): RATE for i in reach[starved]}
    ok: I64 = reach[~starved]
    return ok
