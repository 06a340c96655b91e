"""Tests' view of ``player_data``: zones write it off the tick (on leave, by
write-behind, before they exit), so a test waits for the write it expects instead
of reading at once."""

from __future__ import annotations

import asyncio
import time

from tessera.common import playerdata
from tessera.common.database import Pool
from tessera.common.playerdata import PlayerData


async def row_after(
    pool: Pool, world: str, player: str, version: int, *, timeout_s: float = 20.0
) -> PlayerData:
    """The player's row once its version passed ``version``; AssertionError when no
    such write lands within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = await playerdata.load(pool, world, player)
        if row is not None and row.version > version:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"no write of {player} after version {version}")


async def settled_row(pool: Pool, world: str, player: str, version: int) -> PlayerData:
    """The player's row once written after ``version`` and then left unchanged for
    1 s (a write-behind that was in flight when the player left lands after the
    leave's own write has been read)."""
    row = await row_after(pool, world, player, version)
    while True:
        await asyncio.sleep(1.0)
        now = await playerdata.load(pool, world, player)
        if now == row:
            return row
        assert now is not None
        row = now
