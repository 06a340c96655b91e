"""The game event log in PostgreSQL (table ``game_events``, migration
``0004_game_events.sql``): appended in batches with ``COPY``, the cheapest way
into PostgreSQL at game rates. The only code that writes it."""

from __future__ import annotations

from datetime import datetime

from tessera.common.database import Pool

COLUMNS = ("at", "world", "zone", "match", "kind", "player", "other", "weapon", "amount", "x", "z")
# One row, in COLUMNS order.
EventRow = tuple[datetime, str, str, str, str, str, int, str, float, float, float]


async def append(pool: Pool, rows: list[EventRow]) -> None:
    """Append ``rows`` with one COPY (one transaction)."""
    if rows:
        async with pool.acquire() as conn:
            await conn.copy_records_to_table("game_events", records=rows, columns=COLUMNS)
