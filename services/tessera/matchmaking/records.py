"""The only code of the matchmaker that touches PostgreSQL: ratings per mode and the
match results that changed them, the system of record (tables ``ratings`` and
``match_results``; migration ``0002_ratings.sql``). Redis holds a cache of the
ratings for ticket creation (``store.py``), which may be lost at any time.

A result is applied once per match id (the ``match_results`` primary key) in one
transaction with the rating updates; the rows of the match's players are locked
(in player order) while the new ratings are computed, so two results sharing a
player never overwrite each other. Every change bumps the row's ``version``,
which the cache uses to never replace a newer rating with an older one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from tessera.common.database import Pool
from tessera.matchmaking import rating


@dataclass(frozen=True)
class Versioned:
    """A player's rating in a mode and its version (0: never rated)."""

    rating: rating.Rating
    version: int


UNRATED = Versioned(rating.DEFAULT, 0)


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
    ) -> dict[str, Versioned] | None:
        """Record a match result and rate its players, once per match id: the new
        ratings, or None if the match's result had been recorded already. A one-team
        result (a cooperative mode) is recorded and changes no rating."""
        at = datetime.fromtimestamp(now_ms / 1000, UTC)
        players = sorted({p for team in teams for p in team})
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
            if len(teams) < 2:
                return {}
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
            return {p: Versioned(r, versions[p]) for p, r in new.items()}
