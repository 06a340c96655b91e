"""Modes: the skill-window curve and parsing of TESSERA_MM_MODES."""

from __future__ import annotations

import json

import pytest

from tessera.matchmaking.modes import DEFAULT_MODES, Curve, parse_modes


def test_curve_interpolates_and_is_flat_past_its_ends() -> None:
    curve = Curve(((0.0, 2.0), (10.0, 12.0), (20.0, 12.0)))
    assert curve(-1.0) == 2.0
    assert curve(0.0) == 2.0
    assert curve(5.0) == pytest.approx(7.0)
    assert curve(15.0) == 12.0
    assert curve(1e9) == 12.0


@pytest.mark.parametrize("points", [(), ((1.0, 1.0), (1.0, 2.0)), ((0.0, float("inf")),)])
def test_bad_curves(points: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(ValueError, match="curve"):
        Curve(points)


def test_parse_modes_round_trip() -> None:
    text = json.dumps(
        [
            {
                "name": "3v3",
                "teams": 2,
                "team_size": 3,
                "max_party": 3,
                "roles": {"tank": 1, "dps": 2},
                "skill_window": [[0, 1], [30, 10]],
                "match_attributes": ["map"],
                "number_spreads": {"level": 5},
                "destination": "instance",
                "world": "arena",
            }
        ]
    )
    (mode,) = parse_modes(text)
    assert mode.players_per_match == 6
    assert mode.roles == {"tank": 1, "dps": 2}
    assert mode.skill_window(15.0) == pytest.approx(5.5)
    assert mode.match_attributes == ("map",)
    assert mode.number_spreads == {"level": 5.0}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "teams": 0}, "teams and team_size"),
        ({"name": "x", "team_size": 2, "max_party": 3}, "max_party"),
        ({"name": "x", "team_size": 5, "roles": {"tank": 1}}, "add up to team_size"),
        ({"name": "x", "destination": "moon"}, "destination"),
        ({"name": "x", "world": "Bad_World"}, "DNS label"),
        ({"name": "x", "colour": "red"}, "unknown keys"),
        ({"name": "x", "max_latency_ms": -1}, "finite"),
        ({"name": "x", "number_spreads": {"level": -1}}, "finite"),
        ({"name": "x", "min_team_size": 2}, "min_team_size"),
    ],
)
def test_parse_modes_names_the_problem(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        parse_modes(json.dumps([entry]))
    assert "'x'" in str(err.value)


@pytest.mark.parametrize("text", ["", "{}", "[]", "[1]", '[{"name": "a"}, {"name": "a"}]'])
def test_parse_modes_rejects_bad_documents(text: str) -> None:
    with pytest.raises(ValueError):
        parse_modes(text)


def test_default_modes_are_valid() -> None:
    names = [m.name for m in DEFAULT_MODES]
    assert names == ["duel", "5v5", "5v5-roles", "open-world"]
