"""Player data rows on a real PostgreSQL: the zones' fenced batch write and the API's
conditional write."""

from __future__ import annotations

import dataclasses

import pytest

from tessera.common import playerdata
from tessera.common.database import DatabaseUnavailable, Pool, open_database
from tessera.common.playerdata import PlayerData


def data(player: str = "p1", version: int = 1, blob: bytes = b"inv", x: float = 1.0) -> PlayerData:
    return PlayerData(
        world="w",
        player=player,
        position=(x, 0.0, 2.0),
        yaw=0.5,
        health=80.0,
        blob=blob,
        speed_clamps=3,
        teleports=1,
        version=version,
        written_by="zone-a",
        kills=version,
        deaths=2,
        hits_dealt=10 * version,
        hits_taken=7,
    )


async def test_load_of_a_player_without_data_is_none(database: Pool) -> None:
    assert await playerdata.load(database, "w", "nobody") is None


async def test_save_newer_writes_only_higher_versions(database: Pool) -> None:
    assert await playerdata.save_newer(database, [data(version=2), data("p2")], now=100.0) == {}
    row = await playerdata.load(database, "w", "p1")
    assert row is not None
    assert dataclasses.replace(row, updated_at=0.0) == data(version=2)
    assert row.updated_at == 100.0
    # A late write of an older or equal version loses; the stored version is reported.
    stale = await playerdata.save_newer(
        database, [data(version=1, x=9.0), data(version=2, x=9.0), data("p2", 5)], now=101.0
    )
    assert stale == {("w", "p1"): 2}
    assert (await playerdata.load(database, "w", "p1")) == row
    p2 = await playerdata.load(database, "w", "p2")
    assert p2 is not None and p2.version == 5


async def test_rows_are_per_world(database: Pool) -> None:
    await playerdata.save_newer(database, [data()], now=1.0)
    assert await playerdata.load(database, "other", "p1") is None


async def test_put_creates_then_needs_the_current_version(database: Pool) -> None:
    created = await playerdata.put(database, data(version=0, blob=b"a"), 0, now=5.0)
    assert created is not None and created.version == 1 and created.blob == b"a"
    assert await playerdata.put(database, data(blob=b"b"), 0, now=6.0) is None
    assert await playerdata.put(database, data(blob=b"b"), 2, now=6.0) is None
    updated = await playerdata.put(database, data(blob=b"b"), 1, now=6.0)
    assert updated is not None and updated.version == 2 and updated.blob == b"b"
    assert (updated.kills, updated.deaths, updated.hits_dealt, updated.hits_taken) == (1, 2, 10, 7)
    # A zone still holding version 1 is refused afterwards.
    assert await playerdata.save_newer(database, [data(version=2)], now=7.0) == {("w", "p1"): 2}


async def test_a_read_that_cannot_reach_the_database_is_unavailable(database_url: str) -> None:
    pool = await open_database(database_url, max_size=1)
    await pool.close()
    with pytest.raises(DatabaseUnavailable):
        await playerdata.load(pool, "w", "p1")
