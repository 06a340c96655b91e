"""The cheat-report rules: score, ranking, who the policy acts on, request checks."""

from __future__ import annotations

import pytest

from tessera.auth.accounts import InputError
from tessera.auth.cheating import (
    CheatPolicy,
    Suspect,
    check_suspects_request,
    due,
    parse_weights,
    ranked,
    score,
    verdict,
)

WEIGHTS = {"speed_clamps": 1.0, "teleports": 5.0}


def suspect(player: str, clamps: int, teleports: int, action: str = "") -> Suspect:
    return Suspect(player, {"speed_clamps": clamps, "teleports": teleports}, "z1", 1000, action)


def policy(action: str = "ban", threshold: float = 10.0) -> CheatPolicy:
    return CheatPolicy(WEIGHTS, threshold, action, 3600, ("w1",))


@pytest.mark.parametrize(
    ("tallies", "expected"),
    [
        ({}, 0.0),
        ({"speed_clamps": 3}, 3.0),
        ({"speed_clamps": 3, "teleports": 2}, 13.0),
        ({"teleports": 1, "unknown": 100}, 5.0),
    ],
)
def test_score_is_the_weighted_sum(tallies: dict[str, int], expected: float) -> None:
    assert score(tallies, WEIGHTS) == expected


def test_ranked_by_score_then_player_and_limited() -> None:
    found = [suspect("c", 5, 0), suspect("a", 0, 2), suspect("b", 10, 0), suspect("d", 1, 0)]
    assert [s.player for s in ranked(found, WEIGHTS, 10)] == ["a", "b", "c", "d"]
    assert [s.player for s in ranked(found, WEIGHTS, 2)] == ["a", "b"]
    assert [s.player for s in ranked(found, {"speed_clamps": 1.0}, 2)] == ["b", "c"]


def test_due_is_over_the_threshold_and_not_acted_on() -> None:
    found = [
        suspect("under", 9, 0),
        suspect("at", 10, 0),
        suspect("over", 0, 3),
        suspect("done", 50, 0, action="ban"),
    ]
    assert [s.player for s in due(found, policy())] == ["at", "over"]
    assert due(found, policy(action="none")) == []
    assert [s.player for s in due(found, policy(threshold=15.0))] == ["over"]


def test_verdict_names_score_threshold_world_and_tallies() -> None:
    assert verdict(suspect("p", 2, 3), policy(), "w1") == (
        "anti-cheat: score 17 >= 10 in world w1 (speed_clamps=2, teleports=3)"
    )


def test_suspects_request_checks() -> None:
    assert check_suspects_request("w1", 0) == ("w1", 50)
    assert check_suspects_request("w1", 500) == ("w1", 500)
    for world, limit, field in [
        ("", 1, "world"),
        ("W1", 1, "world"),
        ("x" * 64, 1, "world"),
        ("w1", 501, "limit"),
    ]:
        with pytest.raises(InputError) as info:
            check_suspects_request(world, limit)
        assert info.value.field == field
        assert len(info.value.message) < 100


def test_parse_weights() -> None:
    assert parse_weights("speed_clamps=1, teleports=2.5") == {
        "speed_clamps": 1.0,
        "teleports": 2.5,
    }
    assert parse_weights("teleports=1") == {"teleports": 1.0}
    for bad in [
        "",
        "speed_clamps=0",
        "aimbot=1",
        "teleports",
        "teleports=x",
        "teleports=-1",
        "teleports=inf",
        "teleports=nan",
    ]:
        with pytest.raises(ValueError):
            parse_weights(bad)
