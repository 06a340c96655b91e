"""Input validation: rejected values, clamping, ordering, the rate bucket, applying a batch."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.zone import inputs, kernels
from tessera.zone.entities import INPUT_QUEUE, Entities


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


def test_the_rate_bucket() -> None:
    assert kernels.refill(0.0, 0.0, 0.5, 60.0, 15.0) == 15.0
    assert kernels.refill(2.0, 1.0, 1.05, 60.0, 15.0) == pytest.approx(5.0)
    assert kernels.refill(2.0, 1.0, 0.5, 60.0, 15.0) == 2.0  # a clock step back adds nothing


def reference(
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
) -> inputs.Command | str:
    """The rules written for one input with the math module (an independent oracle;
    CPython's ``math.hypot`` may differ from the kernel's C library one in the last
    bit, so clamped values compare approximately)."""
    if not all(map(math.isfinite, (move_x, move_z, yaw, pitch, rtt_ms, interp_ms))):
        return inputs.NAN
    if not math.isfinite(client_time_ms):
        return inputs.NAN
    if (
        abs(yaw) > 2 * math.pi + 1e-6
        or abs(pitch) > math.pi / 2 + 1e-6
        or actions & ~inputs.ACTIONS
        or not 0.0 <= rtt_ms <= inputs.MAX_RTT_MS
        or not 0.0 <= interp_ms <= inputs.MAX_INTERP_MS
        or sequence <= 0
    ):
        return inputs.RANGE
    length = math.hypot(move_x, move_z)
    excess = length - 1.0 if length > 1.0 + 1e-6 else 0.0
    if excess:
        move_x, move_z = move_x / length, move_z / length
    yaw = math.remainder(yaw, 2 * math.pi)
    return inputs.Command(
        sequence, move_x, move_z, yaw, pitch, actions, rtt_ms, interp_ms or 100.0, excess
    )


values = st.one_of(
    st.floats(-8.0, 8.0),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, math.pi, 2 * math.pi]),
)


@settings(max_examples=300, deadline=None)
@given(
    kw=st.fixed_dictionaries(
        {
            "sequence": st.integers(0, 3),
            "move_x": values,
            "move_z": values,
            "yaw": values,
            "pitch": values,
            "actions": st.sampled_from([0, 1, 2, 4, 7, 8]),
            "rtt_ms": st.one_of(values, st.floats(0.0, 6000.0)),
            "interp_ms": st.one_of(values, st.floats(0.0, 1200.0)),
            "client_time_ms": values,
        }
    )
)
def test_the_compiled_rules_match_the_scalar_rules(kw: dict[str, Any]) -> None:
    got, want = inputs.check(**kw), reference(**kw)
    if isinstance(want, str):
        assert got == want
    else:
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def oracle(ents: Entities, batch: list[inputs.Input], now_s: float, hz: int) -> inputs.Outcome:
    """:func:`inputs.apply` written one input at a time in plain Python over the
    scalar value rules (an independent oracle)."""
    drops: dict[int, str] = {}
    clamped: dict[int, float] = {}
    for i, one in enumerate(batch):
        row = ents.index.get(ents.players.get(one.player_id, -1), -1)
        values = one._asdict()
        values.pop("player_id")
        command = reference(**values)
        last = int(ents.seen_seq[row])
        if row < 0:
            drops[i] = inputs.UNKNOWN_PLAYER
        elif isinstance(command, str):
            drops[i] = command
        elif ents.leaving[row]:
            drops[i] = inputs.HANDOFF
        elif one.sequence <= last:
            drops[i] = inputs.DUPLICATE if one.sequence == last else inputs.OUT_OF_ORDER
        else:
            since = max(0.0, now_s - float(ents.tokens_at[row]))
            tokens = min(inputs.BURST_S * hz, float(ents.tokens[row]) + since * 2.0 * hz)
            ents.tokens_at[row] = now_s
            ents.tokens[row] = tokens if tokens < 1.0 else tokens - 1.0
            if tokens < 1.0:
                drops[i] = inputs.RATE
                continue
            ents.seen_seq[row] = one.sequence
            queue = [
                [int(ents.q_seq[row, k]), ents.q_values[row, k].tolist(),
                 int(ents.q_actions[row, k]), int(ents.q_wait[row, k])]
                for k in range(int(ents.queued[row]))
            ]  # fmt: skip
            if len(queue) == INPUT_QUEUE:
                queue[1][2] |= queue[0][2]
                queue.pop(0)
            v = command
            queue.append(
                [one.sequence, [v.move_x, v.move_z, v.yaw, v.pitch, v.rtt_ms, v.interp_ms],
                 one.actions, 0]
            )  # fmt: skip
            for k, (seq, vals, acts, wait) in enumerate(queue):
                ents.q_seq[row, k], ents.q_values[row, k] = seq, vals
                ents.q_actions[row, k], ents.q_wait[row, k] = acts, wait
            ents.queued[row] = len(queue)
            if v.speed_excess:
                clamped[i] = v.speed_excess
    return inputs.Outcome(len(batch) - len(drops), drops, clamped)


def table(seed: int) -> Entities:
    """Three players with varied buckets and buffers; "c"'s handoff is committing."""
    rng = np.random.default_rng(seed)
    ents = Entities()
    for eid, player in enumerate("abc", start=1):
        row = ents.add_player(
            eid, player, (0.0, 0.0, 0.0), tokens=float(rng.integers(0, 4)), tokens_at=9.9
        )
        ents.seen_seq[row] = rng.integers(0, 4)
        ents.queued[row] = rng.choice([0, 1, INPUT_QUEUE - 1, INPUT_QUEUE])
        ents.q_seq[row] = rng.integers(1, 9, INPUT_QUEUE)
        ents.q_values[row] = rng.random((INPUT_QUEUE, 6))
        ents.q_actions[row] = rng.integers(0, 8, INPUT_QUEUE)
        ents.q_wait[row] = rng.integers(0, 3, INPUT_QUEUE)
    ents.leaving[2] = True
    return ents


def mostly(good: st.SearchStrategy[Any], *bad: Any) -> st.SearchStrategy[Any]:
    """``good`` nine times in ten, else one of ``bad``."""
    return st.integers(0, 9).flatmap(lambda k: st.sampled_from(bad) if k == 0 else good)


BUFFERED = ("seen_seq", "tokens", "tokens_at", "queued", "q_seq", "q_actions", "q_wait")


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    batch=st.lists(
        st.builds(
            inputs.Input,
            player_id=st.sampled_from(["a", "b", "c", "nobody"]),
            sequence=st.integers(0, 12),
            move_x=mostly(st.floats(-2.0, 2.0), math.nan),
            move_z=st.floats(-2.0, 2.0),
            yaw=mostly(st.floats(-6.0, 6.0), math.inf, 7.0),
            pitch=st.just(0.5),
            actions=mostly(st.sampled_from([0, 1, 4, 7]), 8),
            rtt_ms=mostly(st.just(50.0), -1.0),
            interp_ms=mostly(st.sampled_from([0.0, 80.0]), math.inf),
            client_time_ms=st.just(1.0),
        ),
        max_size=24,
    ),
    now_s=st.sampled_from([9.0, 9.91, 10.0, 10.02, 11.0]),
)
def test_apply_is_the_rules_taken_one_input_at_a_time(
    seed: int, batch: list[inputs.Input], now_s: float
) -> None:
    ents, expected = table(seed), table(seed)
    out = inputs.apply(ents, inputs.Inputs.of(batch), now_s, hz=30)
    want = oracle(expected, batch, now_s, 30)
    assert (out.accepted, out.drops) == (want.accepted, want.drops)
    assert out.clamped == pytest.approx(want.clamped, rel=1e-12)
    for name in BUFFERED:
        assert getattr(ents, name).tolist() == getattr(expected, name).tolist(), name
    np.testing.assert_allclose(ents.q_values, expected.q_values, rtol=1e-12, atol=1e-12)


def test_apply_takes_a_players_inputs_in_order() -> None:
    ents = Entities()
    ents.add_player(1, "a", (0.0, 0.0, 0.0), tokens=15.0)
    ents.add_player(2, "b", (0.0, 0.0, 0.0), tokens=1.0, tokens_at=10.0)
    batch = inputs.Inputs.of(
        [
            inputs.Input("a", 2, move_z=1.0),
            inputs.Input("a", 2),  # a resend
            inputs.Input("nobody", 1),
            inputs.Input("b", 1, actions=1),
            inputs.Input("a", 1),  # older
            inputs.Input("a", 5, move_x=2.0, actions=4),
            inputs.Input("b", 2, yaw=9.0),  # out of range: never reaches the bucket
            inputs.Input("b", 3),  # the bucket is empty
        ]
    )
    out = inputs.apply(ents, batch, 10.0, hz=30)
    assert out.accepted == 3
    assert out.drops == {
        1: inputs.DUPLICATE,
        2: inputs.UNKNOWN_PLAYER,
        4: inputs.OUT_OF_ORDER,
        6: inputs.RANGE,
        7: inputs.RATE,
    }
    assert out.clamped == {5: 1.0}
    assert ents.seen_seq[:2].tolist() == [5, 1] and ents.queued[:2].tolist() == [2, 1]
    assert ents.last_seq[:2].tolist() == [0, 0] and ents.actions[:2].tolist() == [0, 0]
    assert ents.tokens[:2].tolist() == [13.0, 0.0]
    inputs.consume(ents, hz=30)  # one input each: a's oldest first
    assert ents.last_seq[:2].tolist() == [2, 1] and ents.queued[:2].tolist() == [1, 0]
    assert ents.move[0].tolist() == [0.0, 1.0] and ents.actions[:2].tolist() == [0, 1]
    inputs.consume(ents, hz=30)
    assert ents.last_seq[:2].tolist() == [5, 1] and ents.queued[:2].tolist() == [0, 0]
    assert ents.move[0].tolist() == [1.0, 0.0] and ents.actions[:2].tolist() == [4, 1]


def buffered(*sequences: int, actions: int = 0) -> Entities:
    """A player "a" (row 0) with these inputs accepted and not yet applied."""
    ents = Entities()
    ents.add_player(1, "a", (0.0, 0.0, 0.0), tokens=15.0, tokens_at=10.0)
    batch = inputs.Inputs.of(
        [inputs.Input("a", s, move_x=s / 100, actions=actions if s == 1 else 0) for s in sequences]
    )
    assert inputs.apply(ents, batch, 10.0, hz=30).accepted == len(sequences)
    return ents


def applied(ents: Entities, ticks: int) -> list[int]:
    """The newest applied sequence after each of ``ticks`` ticks."""
    out = []
    for _ in range(ticks):
        inputs.consume(ents, hz=30)
        out.append(int(ents.last_seq[0]))
        ents.actions[: ents.n] = 0  # as the tick clears them
    return out


def test_a_burst_waits_at_most_hold_inputs_past_a_tick() -> None:
    ents = buffered(1, 2, 3, 4, 5, actions=inputs.ACTION_MELEE)
    inputs.consume(ents, hz=30)  # all but the newest HOLD apply together
    assert ents.last_seq[0] == 5 - inputs.HOLD and ents.move[0, 0] == (5 - inputs.HOLD) / 100
    assert ents.actions[0] == inputs.ACTION_MELEE  # the oldest input's attack is not lost
    assert ents.queued[0] == inputs.HOLD and ents.waited[0] == 0
    ents.actions[0] = 0
    assert applied(ents, 2) == [4, 5]  # then one per tick, each having waited longer
    assert ents.waited[0] == 2
    assert applied(ents, 1) == [5]  # an empty buffer keeps the intent
    assert ents.move[0, 0] == 0.05 and ents.queued[0] == 0


def test_a_buffer_that_keeps_inputs_back_for_a_second_catches_up_one() -> None:
    ents = buffered(1, 2)
    sequence = 3
    seen = []
    for _ in range(int(inputs.DRAIN_S * 30) + 2):  # one arrives per tick: one stays back
        seen += applied(ents, 1)
        more = inputs.Inputs.of([inputs.Input("a", sequence)])
        assert inputs.apply(ents, more, 10.0 + sequence / 30, hz=30).accepted == 1
        sequence += 1
    steps = [b - a for a, b in itertools.pairwise(seen)]
    assert steps.count(2) == 1 and set(steps) == {1, 2}  # one tick applied two, once
    assert ents.queued[0] == 1  # the input that just arrived


def test_a_full_buffer_folds_its_oldest_input_into_the_next() -> None:
    count = INPUT_QUEUE + 3
    ents = buffered(*range(1, count + 1), actions=inputs.ACTION_RANGED)
    assert ents.queued[0] == INPUT_QUEUE and ents.seen_seq[0] == count
    assert ents.q_seq[0].tolist() == list(range(4, count + 1))
    assert ents.q_actions[0, 0] == inputs.ACTION_RANGED  # input 1's attack rides input 4
    inputs.consume(ents, hz=30)
    assert ents.actions[0] == inputs.ACTION_RANGED and ents.last_seq[0] == count - inputs.HOLD


def test_buffers_move_with_their_rows() -> None:
    ents = buffered(1, 2)
    ents.add_player(2, "b", (0.0, 0.0, 0.0), tokens=15.0, tokens_at=10.0)
    batch = inputs.Inputs.of([inputs.Input("b", 7, move_z=1.0)])
    assert inputs.apply(ents, batch, 10.0, hz=30).accepted == 1
    ents.remove(1)  # b's row moves into a's
    assert ents.queued[0] == 1 and ents.q_seq[0, 0] == 7
    inputs.consume(ents, hz=30)
    assert ents.last_seq[0] == 7 and ents.move[0].tolist() == [0.0, 1.0]


def test_a_committing_handoff_forgets_the_buffer_and_refuses_new_inputs() -> None:
    ents = buffered(1, 2, 3, actions=inputs.ACTION_MELEE)
    inputs.forget(ents, 0)
    inputs.consume(ents, hz=30)
    assert ents.last_seq[0] == 0 and ents.actions[0] == 0  # the new zone applies them
    late = inputs.Inputs.of([inputs.Input("a", 4, actions=inputs.ACTION_MELEE)])
    out = inputs.apply(ents, late, 10.1, hz=30)
    assert out.drops == {0: inputs.HANDOFF} and ents.queued[0] == 0 and ents.seen_seq[0] == 3
    inputs.stay(ents, 0)  # the handoff was aborted: the client's repeats are taken
    resend = inputs.Inputs.of([inputs.Input("a", 3), inputs.Input("a", 4)])
    out = inputs.apply(ents, resend, 10.2, hz=30)
    assert out.drops == {0: inputs.DUPLICATE} and ents.queued[0] == 1
