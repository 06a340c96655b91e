"""The only code of the matchmaker that touches PostgreSQL: ratings per mode, the
match results that changed them and each player's match history, the system of
record (tables ``ratings``, ``match_results`` and ``match_players``; migrations
``0002_ratings.sql`` and ``0008_match_players.sql``). Redis holds a cache of the
ratings for ticket creation (``store.py``), which may be lost at any time.

A result is applied once per match id (the ``match_results`` primary key) in one
transaction with the rating updates and the players' history rows; the rows of
the match's players are locked (in player order) while the new ratings are
computed, so two results sharing a player never overwrite each other. Every
change bumps the row's ``version``, which the cache uses to never replace a newer
rating with an older one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tessera.common.database import Pool
from tessera.matchmaking import rating


@dataclass(frozen=True)
class Versioned:
    """A player's rating in a mode and its version (0: never rated)."""

    rating: rating.Rating
    version: int


UNRATED = Versioned(rating.DEFAULT, 0)
# The entry id to page from for a history's newest page (above every id).
NEWEST = 2**63 - 1


@dataclass(frozen=True)
class Participation:
    """One player's part in one match (a ``match_players`` row); ``before`` and
    ``after`` are None in a one-team mode, times are Unix ms (``started_ms`` 0 when
    not reported)."""

    entry_id: int
    match_id: str
    mode: str
    team: int
    role: str
    rank: int
    outcome: str
    before: rating.Rating | None
    after: rating.Rating | None
    started_ms: int
    ended_ms: int


def _ms(at: datetime | None) -> int:
    return 0 if at is None else round(at.timestamp() * 1000)


def _rating(mu: float | None, sigma: float | None) -> rating.Rating | None:
    return None if mu is None or sigma is None else (mu, sigma)


class RatingRecords:
    """Ratings and match results in PostgreSQL."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def ratings(self, mode: str, players: Sequence[str]) -> dict[str, Versioned]:
        """Every listed player's rating (:data:`UNRATED` for a player never rated)."""
        rows = await self.pool.fetch(
            "SELECT player, mu, sigma, version FROM ratings WHERE mode = $1 AND player = ANY($2)",
            mode,
            list(players),
        )
        found = {r["player"]: Versioned((r["mu"], r["sigma"]), r["version"]) for r in rows}
        return {p: found.get(p, UNRATED) for p in players}

    async def apply_result(
        self,
        match_id: str,
        mode: str,
        teams: Sequence[Sequence[str]],
        ranks: Sequence[int],
        *,
        now_ms: float,
        roles: Sequence[Sequence[str]] = (),
        started_ms: int = 0,
    ) -> dict[str, Versioned] | None:
        """Record a match result, rate its players and add the match to each
        player's history, once per match id: the new ratings, or None if the match's
        result had been recorded already. A one-team result (a cooperative mode) is
        recorded and changes no rating. ``roles`` are each team's players' roles (a
        team without any may be empty); ``started_ms`` 0 means not reported."""
        at = datetime.fromtimestamp(now_ms / 1000, UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            recorded = await conn.fetchval(
                "INSERT INTO match_results (match_id, mode, teams, ranks, reported_at)"
                " VALUES ($1, $2, $3::jsonb, $4, $5) ON CONFLICT (match_id) DO NOTHING"
                " RETURNING match_id",
                match_id,
                mode,
                json.dumps([list(t) for t in teams]),
                list(ranks),
                at,
            )
            if recorded is None:
                return None
            rated = await _rate(conn, mode, teams, ranks, at) if len(teams) > 1 else {}
            await _add_history(
                conn,
                match_id,
                mode,
                teams=teams,
                ranks=ranks,
                roles=roles,
                started_ms=started_ms,
                at=at,
                rated=rated,
            )
            return {p: after for p, (_, after) in rated.items()}

    async def history(
        self, player: str, *, before_id: int = NEWEST, limit: int
    ) -> list[Participation]:
        """Up to ``limit`` of the player's matches with entry ids below ``before_id``,
        newest first."""
        rows = await self.pool.fetch(
            "SELECT id, match_id, mode, team, role, rank, outcome, mu_before, sigma_before,"
            " mu_after, sigma_after, started_at, ended_at FROM match_players"
            " WHERE player = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            player,
            before_id,
            limit,
        )
        return [
            Participation(
                entry_id=r["id"],
                match_id=r["match_id"],
                mode=r["mode"],
                team=r["team"],
                role=r["role"],
                rank=r["rank"],
                outcome=r["outcome"],
                before=_rating(r["mu_before"], r["sigma_before"]),
                after=_rating(r["mu_after"], r["sigma_after"]),
                started_ms=_ms(r["started_at"]),
                ended_ms=_ms(r["ended_at"]),
            )
            for r in rows
        ]


async def _rate(
    conn: Any, mode: str, teams: Sequence[Sequence[str]], ranks: Sequence[int], at: datetime
) -> dict[str, tuple[rating.Rating, Versioned]]:
    """Rate a result's players (in its transaction): each one's rating before and
    after, with the new version."""
    players = sorted({p for team in teams for p in team})
    # Rows for new players first, so every player's row can be locked.
    await conn.execute(
        "INSERT INTO ratings (mode, player, mu, sigma, version, updated_at)"
        " SELECT $1, p, $3, $4, 0, $5 FROM unnest($2::text[]) AS p"
        " ON CONFLICT (mode, player) DO NOTHING",
        mode,
        players,
        rating.DEFAULT[0],
        rating.DEFAULT[1],
        at,
    )
    rows = await conn.fetch(
        "SELECT player, mu, sigma, version FROM ratings"
        " WHERE mode = $1 AND player = ANY($2) ORDER BY player FOR UPDATE",
        mode,
        players,
    )
    current = {r["player"]: (r["mu"], r["sigma"]) for r in rows}
    versions = {r["player"]: r["version"] + 1 for r in rows}
    new = rating.rate(teams, ranks, current)
    await conn.executemany(
        "UPDATE ratings SET mu = $3, sigma = $4, version = $5, updated_at = $6"
        " WHERE mode = $1 AND player = $2",
        [(mode, p, mu, sigma, versions[p], at) for p, (mu, sigma) in new.items()],
    )
    return {p: (current[p], Versioned(r, versions[p])) for p, r in new.items()}


async def _add_history(
    conn: Any,
    match_id: str,
    mode: str,
    *,
    teams: Sequence[Sequence[str]],
    ranks: Sequence[int],
    roles: Sequence[Sequence[str]],
    started_ms: int,
    at: datetime,
    rated: Mapping[str, tuple[rating.Rating, Versioned]],
) -> None:
    """One ``match_players`` row per player of the result (in its transaction)."""
    started = datetime.fromtimestamp(started_ms / 1000, UTC) if started_ms else None
    outcomes = rating.outcomes(list(ranks))
    rows = []
    for team, players in enumerate(teams):
        team_roles = roles[team] if team < len(roles) and roles[team] else [""] * len(players)
        for player, role in zip(players, team_roles, strict=True):
            before, after = rated.get(player, (None, None))
            # mu and sigma before, then after; NULL when the result rated nobody.
            numbers = (*before, *after.rating) if before and after else (None,) * 4
            rows.append(
                (
                    match_id,
                    player,
                    mode,
                    team,
                    role,
                    ranks[team],
                    outcomes[team],
                    *numbers,
                    started,
                    at,
                )
            )
    await conn.executemany(
        "INSERT INTO match_players (match_id, player, mode, team, role, rank, outcome,"
        " mu_before, sigma_before, mu_after, sigma_after, started_at, ended_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        rows,
    )
