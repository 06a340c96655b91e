"""The arena module's match in one instance zone's real tick (tessera.game.testing)."""

from __future__ import annotations

import pytest

from tessera.examples.arena import GAME, rules
from tessera.game import Module, ModuleError, Rules
from tessera.game.rules import ENDED, SCORE, STARTED, TIME_UP, WON
from tessera.game.testing import GameTest
from tessera.zone.inputs import ACTION_MELEE, Input


def arena(module: Module = GAME) -> GameTest:
    g = GameTest(module, match="m-1")
    g.add_player("a", 0.0, 0.0, team=1, role="striker")
    g.add_player("b", 0.0, 1.5, team=2)  # in a's melee reach, facing it
    return g


def kill(g: GameTest, seq: int) -> int:
    """``a`` strikes ``b`` until a kill scores; returns the next input sequence."""
    scored = len(g.sent("a", SCORE))
    while len(g.sent("a", SCORE)) == scored:
        g.input(Input("a", seq, actions=ACTION_MELEE * (seq % 2)))  # a strike per press
        g.step()
        seq += 1
        assert seq < 2000, "no kill"
    g.step(int(3.5 * g.cfg.tick_hz))  # b respawns
    g.move("b", 0.0, 1.5)
    return seq


def test_first_to_three_kills_wins_and_ends_once() -> None:
    g = arena()
    g.step()
    assert [e.amount for e in g.sent("a", STARTED)] == [90.0]  # both teams present
    seq = 1
    for _ in range(3):
        seq = kill(g, seq)
    assert [(e.other, e.amount) for e in g.sent("b", SCORE)] == [(1, 1.0), (1, 2.0), (1, 3.0)]
    assert g.outcome is not None and g.outcome.reason == WON
    assert [(s.team, s.rank, s.players, s.roles) for s in g.outcome.standings] == [
        (1, 0, ("a",), ("striker",)),
        (2, 1, ("b",), ("",)),
    ]
    assert [e.amount for e in g.sent("a", ENDED)] == [0.0]
    assert [e.amount for e in g.sent("b", ENDED)] == [1.0]
    assert g.counts["game_match:score"] == 1
    ended = g.outcome
    for n in range(seq, seq + 200):  # play goes on (b dies again); the match stays ended
        g.input(Input("a", n, actions=ACTION_MELEE * (n % 2)))
        g.step()
    assert g.sim.counts["deaths"] > 3
    assert g.outcome is ended and len(g.sent("a", ENDED)) == 1 and len(g.sent("a", SCORE)) == 3


def test_starts_on_timeout_and_time_up_is_a_draw() -> None:
    rules = Rules("arena", teams=2, start_timeout_s=1.0, time_limit_s=2.0, win_score=3)
    g = GameTest(Module(name="short", rules=rules), match="m-2")
    g.add_player("a", team=1)
    g.step(28)
    assert g.sent("a", STARTED) == []
    g.step(4)  # one second after a arrived
    assert len(g.sent("a", STARTED)) == 1
    g.add_player("late", 50.0, 50.0, team=2)
    g.step()
    assert len(g.sent("late", STARTED)) == 1  # a late player is told the start
    g.step(60)
    assert g.outcome is not None and g.outcome.reason == TIME_UP
    assert [(s.team, s.rank) for s in g.outcome.standings] == [(1, 0), (2, 0)]
    assert [e.amount for e in g.sent("late", ENDED)] == [0.0]


def test_rules_run_only_in_instance_zones() -> None:
    g = GameTest(GAME)  # an open-world zone
    g.add_player("a", team=1)
    g.add_player("b", 5.0, 5.0, team=2)
    g.step(10)
    assert g.sim.game.match is None and g.outcome is None
    assert g.sent("a", STARTED) == []


def test_a_failing_score_is_contained() -> None:
    def broken(view: object) -> dict[int, float]:
        raise RuntimeError("boom")

    g = arena(Module(name="broken", rules=Rules("arena", score=broken)))
    g.step(3)
    assert g.counts["game_error:broken/system:rules"] == 3
    assert g.outcome is None and g.sent("a", STARTED) == []  # the failed call's events dropped


def test_parameters_come_from_the_environment() -> None:
    assert rules({}) == GAME.rules == Rules("arena", 2, 20.0, 90.0, 3.0)
    short = rules({"TESSERA_ARENA_TIME_LIMIT_S": "12.5", "TESSERA_ARENA_WIN_KILLS": "1"})
    assert (short.time_limit_s, short.win_score, short.start_timeout_s) == (12.5, 1.0, 20.0)
    assert rules({"TESSERA_ARENA_TIME_LIMIT_S": "0"}).time_limit_s == 0  # kills alone end it


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TESSERA_ARENA_TIME_LIMIT_S": "soon"}, "TESSERA_ARENA_TIME_LIMIT_S='soon'"),
        ({"TESSERA_ARENA_WIN_KILLS": "-1"}, "TESSERA_ARENA_WIN_KILLS='-1'"),
        ({"TESSERA_ARENA_START_TIMEOUT_S": "inf"}, "TESSERA_ARENA_START_TIMEOUT_S='inf'"),
        (
            {"TESSERA_ARENA_TIME_LIMIT_S": "0", "TESSERA_ARENA_WIN_KILLS": "0"},
            "never ends .from TESSERA_ARENA_WIN_KILLS",
        ),
    ],
)
def test_bad_parameters_stop_the_module(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ModuleError, match=message):
        rules(environ)
