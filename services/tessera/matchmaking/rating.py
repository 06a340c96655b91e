"""Skill ratings: openskill's Weng-Lin (Plackett-Luce) model over plain numbers.

A rating is ``(mu, sigma)``. Matching compares ``mu``; a new player starts at
the model's default (25, 25/3). :func:`rate` turns one match result into new
ratings for everyone in it and is the only place the model is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from openskill.models import PlackettLuce

Rating = tuple[float, float]

_MODEL = PlackettLuce()
DEFAULT: Rating = (_MODEL.mu, _MODEL.sigma)


def rate(
    teams: Sequence[Sequence[str]], ranks: Sequence[int], current: Mapping[str, Rating]
) -> dict[str, Rating]:
    """New ratings after a match: ``teams`` of player ids, their ranks (0 = first)."""
    model_teams = [
        [_MODEL.rating(mu=current.get(p, DEFAULT)[0], sigma=current.get(p, DEFAULT)[1]) for p in t]
        for t in teams
    ]
    rated = _MODEL.rate(model_teams, ranks=[float(r) for r in ranks])
    return {
        player: (float(new.mu), float(new.sigma))
        for team, new_team in zip(teams, rated, strict=True)
        for player, new in zip(team, new_team, strict=True)
    }


def encode(rating: Rating) -> bytes:
    return f"{rating[0]!r}:{rating[1]!r}".encode()


def decode(raw: bytes | str | None) -> Rating:
    if raw is None:
        return DEFAULT
    mu, sigma = (raw.decode() if isinstance(raw, bytes) else raw).split(":")
    return float(mu), float(sigma)


def outcomes(ranks: Sequence[int]) -> list[str]:
    """Each team's outcome from the teams' ranks: ``win`` (first alone), ``draw``
    (first place shared), ``loss``; ``done`` for every team of a one-team result."""
    if len(ranks) < 2:
        return ["done"] * len(ranks)
    best = min(ranks)
    shared = ranks.count(best) > 1
    return ["loss" if r != best else "draw" if shared else "win" for r in ranks]
