"""Ratings: openskill updates and their encoding."""

from __future__ import annotations

import pytest

from tessera.matchmaking import rating


def test_winners_gain_and_losers_lose() -> None:
    new = rating.rate([["a", "b"], ["c", "d"]], [0, 1], {})
    assert new["a"][0] > rating.DEFAULT[0] > new["c"][0]
    assert all(sigma < rating.DEFAULT[1] for _, sigma in new.values())


def test_upset_moves_ratings_more() -> None:
    current = {"strong": (35.0, 3.0), "weak": (15.0, 3.0)}
    expected = rating.rate([["strong"], ["weak"]], [0, 1], current)
    upset = rating.rate([["strong"], ["weak"]], [1, 0], current)
    assert upset["weak"][0] - 15.0 > expected["strong"][0] - 35.0 > 0


def test_draw_between_equals_keeps_means() -> None:
    new = rating.rate([["a"], ["b"]], [0, 0], {})
    assert new["a"][0] == pytest.approx(new["b"][0])


def test_encode_round_trip() -> None:
    value = (27.123456789, 7.5)
    assert rating.decode(rating.encode(value)) == value
    assert rating.decode(None) == rating.DEFAULT


@pytest.mark.parametrize(
    ("ranks", "expected"),
    [
        ([0, 1], ["win", "loss"]),
        ([1, 0], ["loss", "win"]),
        ([0, 0], ["draw", "draw"]),
        ([0, 1, 1], ["win", "loss", "loss"]),
        ([2, 0, 0, 1], ["loss", "draw", "draw", "loss"]),
        ([3, 5], ["win", "loss"]),
        ([0], ["done"]),
    ],
)
def test_outcomes_from_ranks(ranks: list[int], expected: list[str]) -> None:
    assert rating.outcomes(ranks) == expected
