"""Match rules for instance zones (docs/GAME.md, "Rules"): when a match starts, its
clock, its score, and how it ends.

:class:`Rules` is what a module declares; :func:`judge` is the pure decision the
zone takes each tick over a :class:`Match` (what the zone remembers of its match):
it returns what to tell the players and, once, the :class:`Outcome` the zone
reports to matchmaking.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tessera.game.errors import ModuleError

if TYPE_CHECKING:
    from tessera.game.view import View

# The events the zone sends to a match's players (PlayerEvent kind GAME, detail):
# the start (amount: the time limit in s), a team's new score (other: the team,
# amount: its score) and the end (amount: the player's team's rank, 0 = first).
STARTED, SCORE, ENDED = "match_started", "score", "match_ended"
EVENTS = (STARTED, SCORE, ENDED)
# The name the zone counts the rules' failures under (a system name modules may not use).
RULES_SYSTEM = "rules"
# Why a match ended (Outcome.reason).
WON, TIME_UP = "score", "time"


@dataclass(frozen=True)
class Rules:
    """A match: it starts when ``teams`` teams have a player present, or
    ``start_timeout_s`` after its first player arrived (with whoever is there); it
    ends when a team's score reaches ``win_score`` (0: never) or ``time_limit_s``
    after the start (0: no limit). The score of each team is its kills of other
    teams' players during the match, unless ``score(view)`` returns the scores
    itself ({team: score}). The result is reported under matchmaking mode ``mode``."""

    mode: str
    teams: int = 2
    start_timeout_s: float = 30.0
    time_limit_s: float = 90.0
    win_score: float = 0.0
    score: Callable[[View], Mapping[int, float]] | None = None

    def __post_init__(self) -> None:
        if not self.mode or len(self.mode) > 64:
            raise ModuleError(f"rules mode {self.mode!r}: want 1..64 characters")
        if not 1 <= self.teams <= 64:
            raise ModuleError(f"rules teams {self.teams!r}: want 1..64")
        for what, value in (
            ("start_timeout_s", self.start_timeout_s),
            ("time_limit_s", self.time_limit_s),
            ("win_score", self.win_score),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ModuleError(f"rules {what} {value!r}: want a finite number >= 0")
        if not (self.time_limit_s or self.win_score):
            raise ModuleError("rules: want a time_limit_s or a win_score, or a match never ends")
        if self.score is not None and not callable(self.score):
            raise ModuleError("rules score is not callable")


@dataclass(frozen=True)
class Member:
    """A match player the zone has seen: its team and the role matchmaking gave it."""

    team: int
    role: str = ""


@dataclass(frozen=True)
class Notice:
    """One event for one player: ``name`` of :data:`EVENTS`."""

    player: str
    name: str
    amount: float = 0.0
    other: int = 0


@dataclass(frozen=True)
class Standing:
    """A team at the end: its rank (0 = first, equal ranks = a draw), its score and
    its players (everyone seen in the match on that team) with their roles."""

    team: int
    rank: int
    score: float
    players: tuple[str, ...]
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """How a match ended: ``reason`` :data:`WON` or :data:`TIME_UP`, the teams
    ranked, and how long it ran (s)."""

    reason: str
    standings: tuple[Standing, ...]
    duration_s: float


@dataclass
class Match:
    """What the zone remembers of its match between ticks."""

    rules: Rules
    opened_s: float | None = None  # its first player arrived
    started_s: float | None = None
    outcome: Outcome | None = None
    roster: dict[str, Member] = field(default_factory=dict)  # everyone seen, in order
    scores: dict[int, float] = field(default_factory=dict)  # by team, from the start
    told: set[str] = field(default_factory=set)  # players told the start


def ranks(scores: Mapping[int, float]) -> dict[int, int]:
    """Each team's rank: how many distinct scores are higher (equal scores, equal ranks)."""
    distinct = sorted(set(scores.values()), reverse=True)
    return {team: distinct.index(score) for team, score in scores.items()}


def judge(
    match: Match,
    *,
    now_s: float,
    present: Mapping[str, Member],
    kills: Mapping[int, int],
    scored: Mapping[int, float] | None = None,
) -> list[Notice]:
    """One tick of ``match`` (updated in place): ``present`` are the match's players
    in the zone now, ``kills`` the kills each team made this tick, ``scored`` the
    module's own scores (when its rules define ``score``). Returns the events to
    send; sets ``match.outcome`` when the match ends (once: an ended match is left
    alone)."""
    if match.outcome is not None:
        return []
    rules, out = match.rules, []
    match.roster.update(present)
    if present and match.opened_s is None:
        match.opened_s = now_s
    if match.started_s is None:
        teams = {m.team for m in present.values()}
        waited = match.opened_s is not None and now_s - match.opened_s >= rules.start_timeout_s
        if not (len(teams) >= rules.teams or (waited and present)):
            return []
        match.started_s = now_s
        match.scores = dict.fromkeys(sorted({m.team for m in match.roster.values()}), 0.0)
    for player in present:
        if player not in match.told:
            match.told.add(player)
            out.append(Notice(player, STARTED, rules.time_limit_s))
    for team in {m.team for m in match.roster.values()}:
        match.scores.setdefault(team, 0.0)
    new = dict(scored) if scored is not None else _with_kills(match.scores, kills)
    for team, score in sorted(new.items()):
        if team in match.scores and score != match.scores[team]:
            match.scores[team] = score
            out += [Notice(p, SCORE, score, team) for p in present]
    elapsed = now_s - match.started_s
    if rules.win_score and any(s >= rules.win_score for s in match.scores.values()):
        reason = WON
    elif rules.time_limit_s and elapsed >= rules.time_limit_s:
        reason = TIME_UP
    else:
        return out
    match.outcome = _outcome(match, reason, elapsed)
    rank = {s.team: s.rank for s in match.outcome.standings}
    out += [Notice(p, ENDED, rank[m.team]) for p, m in present.items()]
    return out


def _with_kills(scores: Mapping[int, float], kills: Mapping[int, int]) -> dict[int, float]:
    return {team: score + kills.get(team, 0) for team, score in scores.items()}


def _outcome(match: Match, reason: str, elapsed: float) -> Outcome:
    rank = ranks(match.scores)
    standings = []
    for team in sorted(match.scores, key=lambda t: (rank[t], t)):
        members = [(p, m.role) for p, m in match.roster.items() if m.team == team]
        standings.append(
            Standing(
                team=team,
                rank=rank[team],
                score=match.scores[team],
                players=tuple(p for p, _ in members),
                roles=tuple(r for _, r in members),
            )
        )
    return Outcome(reason, tuple(standings), elapsed)
