"""Ratings and match results against a real PostgreSQL: once per match, no lost update."""

from __future__ import annotations

import asyncio
import time

import pytest

from tessera.common.database import Pool
from tessera.matchmaking import rating
from tessera.matchmaking.records import UNRATED, RatingRecords, Versioned

pytestmark = pytest.mark.integration
NOW_MS = time.time() * 1000


async def test_a_result_is_applied_once_and_recorded(database: Pool) -> None:
    records = RatingRecords(database)
    assert await records.ratings("duel", ["a", "b"]) == {"a": UNRATED, "b": UNRATED}
    new = await records.apply_result("m1", "duel", [["a"], ["b"]], [0, 1], now_ms=NOW_MS)
    assert new is not None and set(new) == {"a", "b"}
    assert new["a"].version == new["b"].version == 1
    assert new["a"].rating[0] > rating.DEFAULT[0] > new["b"].rating[0]
    assert await records.apply_result("m1", "duel", [["a"], ["b"]], [1, 0], now_ms=NOW_MS) is None
    assert await records.ratings("duel", ["a", "b"]) == new
    assert await records.ratings("5v5", ["a"]) == {"a": UNRATED}
    row = await database.fetchrow("SELECT mode, teams, ranks FROM match_results")
    assert (row["mode"], row["teams"], row["ranks"]) == ("duel", '[["a"], ["b"]]', [0, 1])


async def test_a_one_team_result_is_recorded_without_rating(database: Pool) -> None:
    records = RatingRecords(database)
    assert await records.apply_result("d1", "dungeon", [["a", "b"]], [0], now_ms=NOW_MS) == {}
    assert await records.apply_result("d1", "dungeon", [["a", "b"]], [0], now_ms=NOW_MS) is None
    assert await records.ratings("dungeon", ["a"]) == {"a": UNRATED}


async def test_concurrent_results_sharing_players_lose_no_update(database: Pool) -> None:
    """Ten matches of the same new player against others, reported at once: every
    result lands on the rating the previous one left (version 10, sigma shrinking
    each time), none computed from a stale read."""
    records = RatingRecords(database)
    await asyncio.gather(
        *(
            records.apply_result(f"m{i}", "duel", [["hero"], [f"o{i}"]], [0, 1], now_ms=NOW_MS)
            for i in range(10)
        )
    )
    hero = (await records.ratings("duel", ["hero"]))["hero"]
    assert hero.version == 10
    sequential = rating.DEFAULT
    for i in range(10):
        sequential = rating.rate([["hero"], [f"o{i}"]], [0, 1], {"hero": sequential})["hero"]
    assert hero == Versioned(pytest.approx(sequential), 10)  # type: ignore[arg-type]
