"""Rules of cheat reports (pure): a player's suspicion score, who is ranked first,
who is over the cheat policy's threshold, and what a ListSuspects request may ask.

Zones publish each player's anti-cheat tallies by reason; the score is their sum
weighted by the policy's weights, so one number orders the players of a world and
one threshold decides when the policy acts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tessera.auth.accounts import InputError
from tessera.wire.names import CHEAT_REASONS, NAME_RE

ACTIONS = ("none", "kick", "ban")
DEFAULT_SUSPECTS = 50
MAX_SUSPECTS = 500


@dataclass(frozen=True)
class CheatPolicy:
    """Weights of the tallies by reason, the score at which the policy acts, what it
    does (``none``, ``kick``, ``ban``), how long a ban lasts (0 = permanent), and the
    worlds it watches."""

    weights: Mapping[str, float]
    threshold: float
    action: str
    ban_s: int
    worlds: tuple[str, ...]


@dataclass(frozen=True)
class Suspect:
    """A player with non-zero tallies: tallies by reason, the zone that published
    them last, when a tally was first published (Unix ms) and what the policy did
    ("" when nothing)."""

    player: str
    tallies: Mapping[str, int]
    zone: str
    since_ms: int
    action: str = ""


def score(tallies: Mapping[str, int], weights: Mapping[str, float]) -> float:
    """The weighted sum of ``tallies``; a reason without a weight counts 0."""
    return sum(weights.get(reason, 0.0) * count for reason, count in tallies.items())


def ranked(suspects: Sequence[Suspect], weights: Mapping[str, float], limit: int) -> list[Suspect]:
    """The ``limit`` highest-scoring suspects, highest first, ties by player id."""
    return sorted(suspects, key=lambda s: (-score(s.tallies, weights), s.player))[:limit]


def due(suspects: Sequence[Suspect], policy: CheatPolicy) -> list[Suspect]:
    """The suspects the policy acts on now: at or over the threshold and not acted on
    before. None when the policy's action is ``none``."""
    if policy.action == "none":
        return []
    return [
        s for s in suspects if not s.action and score(s.tallies, policy.weights) >= policy.threshold
    ]


def verdict(suspect: Suspect, policy: CheatPolicy, world: str) -> str:
    """The human sentence an action carries (ban reason, kick reason, audit detail)."""
    counts = ", ".join(f"{r}={n}" for r, n in sorted(suspect.tallies.items()))
    return (
        f"anti-cheat: score {score(suspect.tallies, policy.weights):g} >= "
        f"{policy.threshold:g} in world {world} ({counts})"
    )


def check_suspects_request(world: str, limit: int) -> tuple[str, int]:
    """The world and page size of a ListSuspects request, or :class:`InputError`."""
    if NAME_RE.fullmatch(world) is None:
        raise InputError(
            "world", "INVALID_ARGUMENT", "world must be a DNS label (a-z, 0-9, '-', at most 63)"
        )
    if limit > MAX_SUSPECTS:
        raise InputError("limit", "INVALID_ARGUMENT", f"limit must be at most {MAX_SUSPECTS}")
    return world, limit or DEFAULT_SUSPECTS


def parse_weights(raw: str, reasons: Sequence[str] = CHEAT_REASONS) -> dict[str, float]:
    """``reason=weight,...`` over the known ``reasons`` (weights >= 0, finite);
    ValueError naming what is wrong. A reason left out weighs 0."""
    weights: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        reason, sep, value = item.partition("=")
        if not sep or reason.strip() not in reasons:
            raise ValueError(f"expected reason=weight with a reason of {', '.join(reasons)}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"weight of {reason.strip()} is not a number") from None
        if not 0.0 <= weight < float("inf"):
            raise ValueError(f"weight of {reason.strip()} must be a finite number >= 0")
        weights[reason.strip()] = weight
    if not any(weights.values()):
        raise ValueError("at least one weight must be above 0")
    return weights
