"""A game module inside the tick: order, contained errors, actions, components
through records and messages."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from tessera.game import Action, Argument, Component, Events, Module, System, View
from tessera.game.testing import GameTest
from tessera.zone import messages
from tessera.zone.entities import Entities, Record, export_state, spawn_state
from tessera.zone.events import GAME
from tessera.zone.game import ACTION_REASONS

SCORE = Component("score", "int32", default=5, persist=True)


def boom(view: View, dt: float, events: Events) -> None:
    raise RuntimeError("boom")


def count_up(view: View, dt: float, events: Events) -> None:
    view["score"][view.simulated] += 1
    for row in np.flatnonzero(view.simulated & (view.kind == 1)).tolist():
        events.send(row, "scored", amount=float(view["score"][row]))


def add(view: View, row: int, args: Mapping[str, float], events: Events) -> None:
    view["score"][row] += int(args["n"])


def explode(view: View, row: int, args: Mapping[str, float], events: Events) -> None:
    raise RuntimeError("explode")


def fail_after_send(view: View, dt: float, events: Events) -> None:
    events.send(0, "scored")
    raise ValueError("half done")


def game(*systems: System, disable_after: int = 3) -> GameTest:
    module = Module(
        "test",
        components=(SCORE,),
        systems=systems,
        actions=(
            Action(7, "add", add, arguments=(Argument("n", 1, 10, integer=True),), burst=2),
            Action(8, "explode", explode),
        ),
        events=("scored",),
    )
    return GameTest(module, env={"TESSERA_GAME_DISABLE_AFTER": str(disable_after)})


def test_systems_run_every_tick_and_send_declared_events() -> None:
    g = game(System("count", count_up))
    g.add_player("a")
    g.step(3)
    assert g.component("a", "score") == 5 + 3
    assert [(e.kind, e.amount) for e in g.sent("a", "scored")] == [(GAME, 6), (GAME, 7), (GAME, 8)]


def test_systems_run_before_movement() -> None:
    """A system sees the position movement had left, not this tick's."""
    seen: list[float] = []

    def watch(view: View, dt: float, events: Events) -> None:
        seen.append(float(view.pos[0, 0]))

    g = game(System("watch", watch))
    g.add_player("a")
    g.move("a", 10.0, 0.0)
    g.step()
    assert seen == [10.0]


def test_a_failing_system_is_counted_then_disabled_and_the_tick_goes_on() -> None:
    g = game(System("boom", boom), System("count", count_up), disable_after=3)
    g.add_player("a")
    g.step(5)
    assert g.counts["game_error:test/system:boom"] == 3  # disabled after the third
    assert g.counts["game_disabled:test/system:boom"] == 1
    assert g.sim.game.disabled == {"system:boom"}
    assert g.component("a", "score") == 5 + 5  # the next system ran every tick
    assert g.sim.tick == 5


def test_a_success_resets_the_failure_streak() -> None:
    calls = iter([True, True, False, True, True, False, True])

    def flaky(view: View, dt: float, events: Events) -> None:
        if next(calls):
            raise RuntimeError("flaky")

    g = game(System("flaky", flaky), disable_after=3)
    g.add_player("a")
    g.step(7)
    assert g.counts["game_error:test/system:flaky"] == 5
    assert not g.sim.game.disabled


def test_a_failed_call_sends_none_of_its_events() -> None:
    g = game(System("half", fail_after_send))
    g.add_player("a")
    g.step()
    assert g.sent("a", "scored") == []
    assert g.counts["game_error:test/system:half"] == 1


def test_an_action_runs_in_the_next_tick() -> None:
    g = game()
    g.add_player("a")
    assert g.act("a", 7, 3) is None
    assert g.component("a", "score") == 5
    g.step()
    assert g.component("a", "score") == 8
    assert g.counts["game_action:accepted"] == 1


@pytest.mark.parametrize(
    ("player", "action", "args", "reason"),
    [
        ("nobody", 7, (1,), "unknown_player"),
        ("a", 99, (1,), "unknown_action"),
        ("a", 7, (), "arguments"),
        ("a", 7, (1, 2), "arguments"),
        ("a", 7, (0,), "arguments"),
        ("a", 7, (11,), "arguments"),
        ("a", 7, (2.5,), "arguments"),
        ("a", 7, (float("nan"),), "arguments"),
    ],
)
def test_bad_actions_are_dropped_and_counted(
    player: str, action: int, args: tuple[float, ...], reason: str
) -> None:
    g = game()
    g.add_player("a")
    assert g.act(player, action, *args) == reason
    g.step()
    assert g.component("a", "score") == 5
    assert g.counts["game_action:" + reason] == 1
    assert reason in ACTION_REASONS


def test_actions_are_rate_limited_per_player() -> None:
    g = game()
    g.add_player("a")
    g.add_player("b")
    assert [g.act("a", 7, 1) for _ in range(3)] == [None, None, "rate"]
    assert g.act("b", 7, 1) is None
    g.step()
    assert (g.component("a", "score"), g.component("b", "score")) == (7, 6)


def test_a_failing_handler_is_contained_and_disabled() -> None:
    g = game(disable_after=2)
    g.add_player("a")
    for _ in range(2):
        assert g.act("a", 8) is None
        g.step()
    assert g.counts["game_error:test/action:explode"] == 2
    assert g.act("a", 8) == "disabled"
    assert g.act("a", 7, 1) is None  # other actions still work


def test_an_action_of_a_player_who_left_is_skipped() -> None:
    g = game()
    g.add_player("a")
    g.act("a", 7, 1)
    g.sim.remove_player("a")
    g.step()
    assert not g.counts["game_error:test/action:add"]
    assert g.sim.game.buckets == {}


def test_components_ride_records_and_entity_states() -> None:
    ents = Entities(components=(SCORE, Component("speed", "float32")))
    row = ents.add_player(1, "a", (0.0, 0.0, 0.0))
    ents.columns["score"][row] = 42
    ents.columns["speed"][row] = 1.5
    record = export_state(ents, row, zone="z", epoch=1)
    assert record.components == {"score": 42.0, "speed": 1.5}
    wired = messages.record(messages.entity_state(record))
    assert wired == record
    other = Entities(components=(SCORE, Component("speed", "float32")))
    spawn_state(other, wired, now_s=0.0)
    assert (other.columns["score"][0], other.columns["speed"][0]) == (42, 1.5)


@pytest.mark.parametrize(
    "components",
    [{"gold": 3.0}, {"score": float("nan")}, {"score": 2.0**40}, {"score": 0.5}],
)
def test_unknown_or_unfit_component_values_leave_the_default(components: dict[str, float]) -> None:
    ents = Entities(components=(SCORE,))
    spawn_state(ents, Record(entity_id=1, kind=1, player_id="a", components=components), now_s=0)
    assert ents.columns["score"][0] == 5


def test_component_columns_follow_growth_and_swap_remove() -> None:
    ents = Entities(capacity=1, components=(SCORE,))
    for eid in range(1, 4):
        ents.add(eid, 2, (0.0, 0.0, 0.0))
        ents.columns["score"][ents.index[eid]] = eid * 10
    ents.remove(1)
    assert sorted(ents.columns["score"][: ents.n].tolist()) == [20, 30]
    assert ents.columns["score"][ents.index[3]] == 30
