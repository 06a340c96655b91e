"""Persistent player data per world in PostgreSQL (table ``player_data``, migration
``0003_player_data.sql``): the only code that reads or writes it, shared by the
zones (load on join, fenced write-behind) and auth's player-data API (read and
conditional write).

Two write rules over one row version. A zone writes a batch in one statement and
each row only if its version is higher than the stored one: the version travels
with the entity through handoffs and checkpoints and grows with every write, so
a late write from a zone that no longer owns the player is refused. The API
writes only if the stored version is the one the caller read, and bumps it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from tessera.common.database import DatabaseUnavailable, Pool


@dataclass(frozen=True)
class PlayerData:
    """One player's persistent data in one world."""

    world: str
    player: str
    position: tuple[float, float, float]
    yaw: float
    health: float
    blob: bytes
    speed_clamps: int
    teleports: int
    version: int
    written_by: str = ""
    updated_at: float = 0.0
    # Combat stats (migration 0006_player_stats.sql).
    kills: int = 0
    deaths: int = 0
    hits_dealt: int = 0
    hits_taken: int = 0
    # The game module's persisted components (migration 0009_player_components.sql).
    components: dict[str, float] = field(default_factory=dict)


_COLUMNS = (
    "world, player, x, y, z, yaw, health, blob, speed_clamps, teleports, version,"
    " written_by, updated_at, kills, deaths, hits_dealt, hits_taken, components"
)


def _data(row: Any) -> PlayerData:
    return PlayerData(
        world=row["world"],
        player=row["player"],
        position=(row["x"], row["y"], row["z"]),
        yaw=row["yaw"],
        health=row["health"],
        blob=bytes(row["blob"]),
        speed_clamps=row["speed_clamps"],
        teleports=row["teleports"],
        version=row["version"],
        written_by=row["written_by"],
        updated_at=row["updated_at"].timestamp(),
        kills=row["kills"],
        deaths=row["deaths"],
        hits_dealt=row["hits_dealt"],
        hits_taken=row["hits_taken"],
        components=json.loads(row["components"]),
    )


def _values(data: PlayerData, version: int, now: float) -> tuple[Any, ...]:
    x, y, z = data.position
    return (
        data.world,
        data.player,
        x,
        y,
        z,
        data.yaw,
        data.health,
        data.blob,
        data.speed_clamps,
        data.teleports,
        version,
        data.written_by,
        datetime.fromtimestamp(now, UTC),
        data.kills,
        data.deaths,
        data.hits_dealt,
        data.hits_taken,
        json.dumps(data.components),
    )


async def load(pool: Pool, world: str, player: str) -> PlayerData | None:
    """The player's row in ``world``, or None; DatabaseUnavailable if it cannot be read."""
    try:
        row = await pool.fetchrow(
            f"SELECT {_COLUMNS} FROM player_data WHERE world = $1 AND player = $2", world, player
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        raise DatabaseUnavailable(f"cannot read player data: {err}") from None
    return None if row is None else _data(row)


_SAVE = f"""
INSERT INTO player_data ({_COLUMNS})
SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::float8[],
                     $6::float8[], $7::float8[], $8::bytea[], $9::int8[], $10::int8[],
                     $11::int8[], $12::text[], $13::timestamptz[], $14::int8[], $15::int8[],
                     $16::int8[], $17::int8[], $18::jsonb[])
ON CONFLICT (world, player) DO UPDATE SET
    x = EXCLUDED.x, y = EXCLUDED.y, z = EXCLUDED.z, yaw = EXCLUDED.yaw,
    health = EXCLUDED.health, blob = EXCLUDED.blob, speed_clamps = EXCLUDED.speed_clamps,
    teleports = EXCLUDED.teleports, version = EXCLUDED.version,
    written_by = EXCLUDED.written_by, updated_at = EXCLUDED.updated_at,
    kills = EXCLUDED.kills, deaths = EXCLUDED.deaths, hits_dealt = EXCLUDED.hits_dealt,
    hits_taken = EXCLUDED.hits_taken, components = EXCLUDED.components
WHERE player_data.version < EXCLUDED.version
RETURNING world, player
"""


async def save_newer(
    pool: Pool, batch: list[PlayerData], *, now: float
) -> dict[tuple[str, str], int]:
    """Write every row of ``batch`` (at most one per world and player) whose version is
    higher than the stored one, in one transaction; returns the refused rows' keys
    with the version that stays."""
    if not batch:
        return {}
    columns = list(zip(*(_values(d, d.version, now) for d in batch), strict=True))
    async with pool.acquire() as conn, conn.transaction():
        written = {(r["world"], r["player"]) for r in await conn.fetch(_SAVE, *columns)}
        refused = [d for d in batch if (d.world, d.player) not in written]
        if not refused:
            return {}
        rows = await conn.fetch(
            "SELECT world, player, version FROM player_data"
            " WHERE (world, player) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            [d.world for d in refused],
            [d.player for d in refused],
        )
    return {(r["world"], r["player"]): r["version"] for r in rows}


async def put(
    pool: Pool, data: PlayerData, expected_version: int, *, now: float
) -> PlayerData | None:
    """Write ``data`` if the row's version is ``expected_version`` (0: no row yet) and
    return the new row (version + 1); None when the version is stale."""
    values = _values(data, expected_version + 1, now)
    if expected_version == 0:
        row = await pool.fetchrow(
            f"INSERT INTO player_data ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
            f" $10, $11, $12, $13, $14, $15, $16, $17, $18) ON CONFLICT (world, player) DO NOTHING"
            f" RETURNING {_COLUMNS}",
            *values,
        )
    else:
        row = await pool.fetchrow(
            "UPDATE player_data SET x = $3, y = $4, z = $5, yaw = $6, health = $7, blob = $8,"
            " speed_clamps = $9, teleports = $10, version = $11, written_by = $12,"
            " updated_at = $13, kills = $14, deaths = $15, hits_dealt = $16, hits_taken = $17,"
            " components = $18"
            " WHERE world = $1 AND player = $2 AND version = $11 - 1"
            f" RETURNING {_COLUMNS}",
            *values,
        )
    return None if row is None else _data(row)
