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


async def test_each_result_adds_to_its_players_history_newest_first(database: Pool) -> None:
    records = RatingRecords(database)
    started = int(NOW_MS) - 600_000
    await records.apply_result(
        "h1",
        "duel",
        [["a"], ["b"]],
        [0, 1],
        now_ms=NOW_MS,
        roles=[["tank"], []],
        started_ms=started,
    )
    after_h1 = await records.ratings("duel", ["a"])
    await records.apply_result("h2", "duel", [["a"], ["c"]], [0, 0], now_ms=NOW_MS + 1000)
    await records.apply_result("h3", "dungeon", [["a", "c"]], [0], now_ms=NOW_MS + 2000)
    page = await records.history("a", limit=2)
    assert [(p.match_id, p.mode, p.outcome) for p in page] == [
        ("h3", "dungeon", "done"),
        ("h2", "duel", "draw"),
    ]
    assert page[0].before is None and page[0].after is None and page[0].started_ms == 0
    assert page[1].before == after_h1["a"].rating != page[1].after
    (oldest,) = await records.history("a", before_id=page[-1].entry_id, limit=2)
    assert (oldest.match_id, oldest.team, oldest.role, oldest.rank, oldest.outcome) == (
        "h1",
        0,
        "tank",
        0,
        "win",
    )
    assert oldest.before == rating.DEFAULT and oldest.after == after_h1["a"].rating
    assert (oldest.started_ms, oldest.ended_ms) == (started, round(NOW_MS))
    (lost,) = await records.history("b", limit=10)
    assert (lost.outcome, lost.team, lost.role) == ("loss", 1, "")


async def test_the_history_is_written_in_the_results_transaction(database: Pool) -> None:
    """Roles that do not match the players fail the history insert: the result and
    the ratings are rolled back with it, and a corrected report then applies."""
    records = RatingRecords(database)
    with pytest.raises(ValueError, match="zip"):
        await records.apply_result(
            "t1", "duel", [["a"], ["b"]], [0, 1], now_ms=NOW_MS, roles=[["x", "y"], []]
        )
    assert await database.fetchval("SELECT count(*) FROM match_results") == 0
    assert await records.ratings("duel", ["a"]) == {"a": UNRATED}
    assert await records.apply_result("t1", "duel", [["a"], ["b"]], [0, 1], now_ms=NOW_MS)
    assert len(await records.history("a", limit=10)) == 1
