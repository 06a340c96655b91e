"""The demo World and its thresholds, checked by the operator's own validation."""

from __future__ import annotations

import pytest

from tessera.demo.world import DemoSettings, world_resource
from tessera.examples.arena import rules
from tessera.operator import resources


@pytest.mark.parametrize("bots", [2, 10, 60, 300, 5000])
def test_world_is_valid_for_any_bot_count(bots: int) -> None:
    s = DemoSettings(bots=bots, duration_s=40)
    spec = resources.world_spec(world_resource(s))
    p = spec.policy
    assert p.merge_threshold < p.target_players < p.split_threshold
    assert spec.standby == 1 and p.enabled and p.min_zones == 1


def test_thresholds_make_the_scenario_scale() -> None:
    s = DemoSettings(bots=300, duration_s=150)
    # Everyone in one zone splits it; half of them in a sibling pair merges it.
    assert s.split_threshold < 300 and s.merge_threshold > 150
    assert (s.split_window_s, s.merge_window_s, s.cooldown_s) == (3.0, 6.0, 9.0)
    env = {e["name"]: e["value"] for e in world_resource(s)["spec"]["zoneTemplate"]["env"]}
    assert env["TESSERA_MAX_SPEED_MPS"] == "50"


@pytest.mark.parametrize(("duration", "limit"), [(10, 10), (40, 10), (150, 38), (1000, 90)])
def test_the_open_world_and_the_arena_play_their_modules(duration: float, limit: float) -> None:
    world = world_resource(DemoSettings(duration_s=duration))
    spec = world["spec"]
    assert spec["game"]["module"] == "tessera.examples.resources"
    arena = resources.zone_template(spec, "arena")
    assert arena["gameModule"] == "tessera.examples.arena"
    assert resources.zone_template(spec, "duel")["gameModule"] == "tessera.examples.resources"
    env = {e["name"]: e["value"] for e in arena["env"]}
    # The arena module's own parameters, read by the instance zones.
    assert rules(env).time_limit_s == limit and rules(env).win_score == 3
