"""The game event log on a real PostgreSQL: COPY into the partitioned table."""

from __future__ import annotations

from datetime import UTC, datetime

from tessera.common import eventlog
from tessera.common.database import Pool


async def test_append_copies_rows_into_the_default_partition(database: Pool) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows: list[eventlog.EventRow] = [
        (at, "w", "z", "", "hit", f"p{i}", 7, "melee", 12.5, float(i), -1.0) for i in range(1000)
    ]
    rows.append((at, "w", "z", "m1", "death", "p0", 9, "", 0.0, 0.0, 0.0))
    await eventlog.append(database, rows)
    await eventlog.append(database, [])
    assert await database.fetchval("SELECT count(*) FROM game_events_default") == 1001
    hit = await database.fetchrow("SELECT * FROM game_events WHERE player = 'p3' AND kind = 'hit'")
    assert dict(hit) == {
        "at": at,
        "world": "w",
        "zone": "z",
        "match": "",
        "kind": "hit",
        "player": "p3",
        "other": 7,
        "weapon": "melee",
        "amount": 12.5,
        "x": 3.0,
        "z": -1.0,
    }
    death = await database.fetchrow("SELECT match, other FROM game_events WHERE kind = 'death'")
    assert tuple(death) == ("m1", 9)
