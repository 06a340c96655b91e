"""Scenario files: parsing, phases over time, logouts, patterns, churn."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from tessera.client.bot import BotState, Pattern
from tessera.load import scenario as sc
from tessera.wire.geometry import Rect

WORLD = Rect(0, 0, 1000, 1000)


def test_every_builtin_scenario_parses() -> None:
    assert {"demo", "spread", "hotspot", "border-walkers", "churn"} <= set(sc.names())
    for name in sc.names():
        s = sc.load(sc.builtin(name))
        assert s.phases and abs(sum(p.share for p in s.phases) - 1.0) < 1e-9


def test_shares_are_normalised_and_phases_follow_time() -> None:
    s = sc.parse(
        {"phases": [{"pattern": "spread", "share": 1}, {"pattern": "hotspot", "share": 3}]}
    )
    assert [p.share for p in s.phases] == [0.25, 0.75]
    assert s.starts() == [0.0, 0.25]
    assert [s.phase_index(f) for f in (0.0, 0.24, 0.25, 0.99, 1.0, 1.5)] == [0, 0, 1, 1, 1, 1]


def test_logout_takes_the_highest_numbered_bots_from_the_phase_start() -> None:
    s = sc.load(sc.builtin("demo"))
    start = s.starts()[-1]
    assert not any(s.logged_out(start - 0.01, 10, b) for b in range(10))
    assert [b for b in range(10) if s.logged_out(start, 10, b)] == [5, 6, 7, 8, 9]
    assert sum(s.logged_out(0.99, 7, b) for b in range(7)) == 4  # round(3.5)


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        (None, "phases"),
        ([], "phases"),
        ([{"pattern": "fly"}], "pattern"),
        ([{"pattern": "spread", "share": 0}], "share"),
        ([{"pattern": "hotspot", "center": [0.5]}], "center"),
        ([{"pattern": "hotspot", "center": [0.5, 1.5]}], "center"),
        ([{"pattern": "spread", "logout": 2}], "logout"),
        ([{"pattern": "spread", "colour": "red"}], "unknown"),
    ],
)
def test_bad_scenarios_name_the_field(phases: object, message: str) -> None:
    with pytest.raises(sc.ScenarioError, match=message):
        sc.parse({"phases": phases})


def test_load_and_resolve(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("phases: [{pattern: wander}]\n")
    assert sc.resolve(str(path)) == path
    assert sc.load(path).phases[0].pattern == "wander"
    assert sc.resolve("hotspot") == sc.builtin("hotspot")
    with pytest.raises(sc.ScenarioError, match="no scenario"):
        sc.resolve("nope")
    path.write_text("phases: [")
    with pytest.raises(sc.ScenarioError):
        sc.load(path)


def test_rect_parse() -> None:
    assert sc.parse_rect("0,0,10,20").at(0.5, 0.5) == (5.0, 10.0)
    for bad in ("1,2,3", "0,0,0,1", "a,b,c,d"):
        with pytest.raises(sc.ScenarioError):
            sc.parse_rect(bad)


def test_homes_are_stable_spread_and_inside_the_world() -> None:
    homes = [sc.home(WORLD, 1, b) for b in range(500)]
    assert homes == [sc.home(WORLD, 1, b) for b in range(500)]
    xs, zs = np.array(homes).T
    assert xs.min() >= 50 and xs.max() <= 950 and zs.min() >= 50 and zs.max() <= 950
    assert 400 < xs.mean() < 600 and xs.std() > 200


def path(pattern: Pattern, start: tuple[float, float], steps: int = 1500) -> np.ndarray:
    """Integrate a pattern at 2 m per step; every position."""
    pos = np.array([start[0], 0.0, start[1]])
    state = BotState(random.Random(3))
    out = []
    for _ in range(steps):
        intent = pattern(state, pos, [])
        pos = pos + 2.0 * np.array([intent.move_x, 0.0, intent.move_z])
        out.append(pos)
    return np.array(out)


def walk(pattern: Pattern, start: tuple[float, float]) -> np.ndarray:
    end: np.ndarray = path(pattern, start)[-1]
    return end


def test_patterns_lead_where_the_phase_says() -> None:
    hotspot = sc.Phase("h", 1.0, "hotspot", center=(0.8, 0.2), radius=0.02)
    end = walk(sc.pattern_for(hotspot, WORLD, 1, 0), (100, 900))
    assert np.hypot(end[0] - 800, end[2] - 200) < 25
    spread = sc.Phase("s", 1.0, "spread", radius=0.01)
    hx, hz = sc.home(WORLD, 1, 7)
    end = walk(sc.pattern_for(spread, WORLD, 1, 7), (500, 500))
    assert np.hypot(end[0] - hx, end[2] - hz) < 15
    border = sc.Phase("b", 1.0, "border", x=0.5, radius=0.05)
    xs = path(sc.pattern_for(border, WORLD, 1, 2), (500, 500))[:, 0]
    crossings = np.count_nonzero(np.diff(np.sign(xs - 500)) != 0)
    assert xs.min() < 455 and xs.max() > 545 and crossings >= 4  # back and forth


def test_churn_due_matches_the_rate_on_average() -> None:
    rng = random.Random(1)
    total = sum(sc.churn_due(0.05, 100, 0.25, rng) for _ in range(4000))
    assert 4500 < total < 5500  # 0.05 * 100 bots * 1000 s
    assert sc.churn_due(0.0, 100, 0.25, rng) == 0
