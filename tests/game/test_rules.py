"""The match rules' pure decision (tessera.game.rules)."""

from __future__ import annotations

import pytest

from tessera.game import ModuleError, Rules
from tessera.game.rules import ENDED, SCORE, STARTED, TIME_UP, WON, Match, Member, judge, ranks

A, B = Member(1, "tank"), Member(2)


def test_ranks_are_dense_and_share_ties() -> None:
    assert ranks({1: 3.0, 2: 1.0, 3: 1.0, 4: 0.0}) == {1: 0, 2: 1, 3: 1, 4: 2}
    assert ranks({1: 2.0, 2: 2.0}) == {1: 0, 2: 0}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": ""},
        {"mode": "x" * 65},
        {"mode": "arena", "teams": 0},
        {"mode": "arena", "time_limit_s": float("nan")},
        {"mode": "arena", "start_timeout_s": -1.0},
        {"mode": "arena", "time_limit_s": 0.0, "win_score": 0.0},
        {"mode": "arena", "score": 3},
    ],
)
def test_bad_rules_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ModuleError):
        Rules(**kwargs)  # type: ignore[arg-type]


def test_waits_for_every_team_then_starts() -> None:
    m = Match(Rules("arena", start_timeout_s=10, time_limit_s=60, win_score=2))
    assert judge(m, now_s=1.0, present={"a": A}, kills={}) == []
    assert (m.started_s, m.opened_s) == (None, 1.0)
    told = judge(m, now_s=2.0, present={"a": A, "b": B}, kills={})
    assert m.started_s == 2.0
    assert sorted((n.player, n.name, n.amount) for n in told) == [
        ("a", STARTED, 60.0),
        ("b", STARTED, 60.0),
    ]
    assert judge(m, now_s=3.0, present={"a": A, "b": B}, kills={}) == []  # told once


def test_starts_on_timeout_with_whoever_is_there() -> None:
    m = Match(Rules("arena", start_timeout_s=10, time_limit_s=60))
    assert judge(m, now_s=0.0, present={}, kills={}) == []
    assert m.opened_s is None  # the wait starts with the first player
    judge(m, now_s=5.0, present={"a": A}, kills={})
    assert judge(m, now_s=14.9, present={"a": A}, kills={}) == []
    assert [n.name for n in judge(m, now_s=15.0, present={"a": A}, kills={})] == [STARTED]
    assert m.scores == {1: 0.0}


def test_kills_score_and_the_first_to_the_limit_wins() -> None:
    m = Match(Rules("arena", win_score=2, time_limit_s=60))
    both = {"a": A, "b": B}
    judge(m, now_s=0.0, present=both, kills={})
    told = judge(m, now_s=1.0, present=both, kills={1: 1})
    assert [(n.player, n.name, n.amount, n.other) for n in told] == [
        ("a", SCORE, 1.0, 1),
        ("b", SCORE, 1.0, 1),
    ]
    assert [m.outcome] == [None]
    told = judge(m, now_s=2.5, present=both, kills={1: 1})
    assert m.outcome is not None and m.outcome.reason == WON
    assert m.outcome.duration_s == 2.5
    ends = {n.player: n.amount for n in told if n.name == ENDED}
    assert ends == {"a": 0.0, "b": 1.0}
    first, second = m.outcome.standings
    assert (first.team, first.rank, first.score, first.players, first.roles) == (
        1,
        0,
        2.0,
        ("a",),
        ("tank",),
    )
    assert (second.team, second.rank, second.players) == (2, 1, ("b",))
    # An ended match is left alone: no second outcome, no more events.
    ended = m.outcome
    assert judge(m, now_s=3.0, present=both, kills={2: 5}) == []
    assert m.outcome is ended


def test_time_up_with_equal_scores_is_a_draw() -> None:
    m = Match(Rules("arena", win_score=3, time_limit_s=10))
    both = {"a": A, "b": B}
    judge(m, now_s=0.0, present=both, kills={})
    judge(m, now_s=1.0, present=both, kills={1: 1, 2: 1})
    judge(m, now_s=9.9, present=both, kills={})
    assert [m.outcome] == [None]
    judge(m, now_s=10.0, present=both, kills={})
    assert m.outcome is not None and m.outcome.reason == TIME_UP
    assert [(s.team, s.rank) for s in m.outcome.standings] == [(1, 0), (2, 0)]


def test_players_who_left_stay_in_the_result() -> None:
    m = Match(Rules("arena", time_limit_s=5))
    judge(m, now_s=0.0, present={"a": A, "b": B}, kills={})
    told = judge(m, now_s=5.0, present={"a": A}, kills={})
    assert m.outcome is not None
    assert [s.players for s in m.outcome.standings] == [("a",), ("b",)]
    assert [n.player for n in told if n.name == ENDED] == ["a"]  # b is gone: not told


def test_a_module_score_replaces_kills() -> None:
    m = Match(Rules("arena", win_score=10, time_limit_s=0))
    both = {"a": A, "b": B}
    judge(m, now_s=0.0, present=both, kills={}, scored={1: 0.0, 2: 0.0})
    judge(m, now_s=1.0, present=both, kills={1: 4}, scored={1: 0.0, 2: 10.0})
    assert m.outcome is not None and [s.team for s in m.outcome.standings] == [2, 1]
    assert m.scores == {1: 0.0, 2: 10.0}
