"""PostgreSQL, the system of record: the connection pool and the schema's migrations.

Migrations are numbered plain SQL files in ``migrations/`` (``0001_accounts.sql``):
each is applied once, in its own transaction, and recorded in ``schema_migrations``
with its SHA-256. Every service that uses the database calls :func:`open_database`
at start-up, which applies what is missing while holding a PostgreSQL advisory
lock, so replicas starting together apply each migration exactly once and the
later ones find nothing to do. A migration already applied whose file changed
stops the start (edit the schema with a new file, never an old one); versions
the database has and this code does not know are allowed, so an older replica
keeps running during a rolling upgrade (migrations only add).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

import asyncpg
from asyncpg import Pool

__all__ = [
    "DatabaseUnavailable",
    "Migration",
    "MigrationError",
    "Pool",
    "connect",
    "migrate",
    "open_database",
    "parse_migrations",
    "pending",
    "shipped_migrations",
]

log = logging.getLogger(__name__)

# pg_advisory_lock key of the migrator ("tessera" in ASCII, as one bigint).
LOCK_KEY = 0x74657373657261
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


class MigrationError(RuntimeError):
    """The migration files or the database's migration history are inconsistent."""


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL could not be reached or refused the connection."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def parse_migrations(files: Mapping[str, str]) -> list[Migration]:
    """Migrations from ``{file name: SQL}``, in order; versions must run 1, 2, 3, ..."""
    migrations = []
    for file, sql in files.items():
        match = _FILE.fullmatch(file)
        if match is None:
            raise MigrationError(f"migration file {file!r} is not named NNNN_name.sql")
        migrations.append(Migration(int(match[1]), match[2], sql))
    migrations.sort(key=lambda m: m.version)
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration {expected:04d} is missing (found {migration.version:04d}_"
                f"{migration.name}.sql); versions must be consecutive from 0001"
            )
    return migrations


def pending(migrations: list[Migration], applied: Mapping[int, str]) -> list[Migration]:
    """The migrations to apply given ``applied`` (version -> checksum); an applied
    migration whose file changed is an error."""
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name}.sql changed after it was "
                "applied; add a new migration instead of editing an applied one"
            )
    return [m for m in migrations if m.version not in applied]


def shipped_migrations() -> list[Migration]:
    """The migrations shipped with this code (``tessera/common/migrations``)."""
    folder = resources.files("tessera.common").joinpath("migrations")
    files = {f.name: f.read_text("utf-8") for f in folder.iterdir() if f.name.endswith(".sql")}
    return parse_migrations(files)


async def migrate(pool: Pool, migrations: list[Migration] | None = None) -> list[int]:
    """Apply the missing migrations under the migrator's advisory lock; returns the
    versions this call applied (empty when another replica got there first)."""
    migrations = shipped_migrations() if migrations is None else migrations
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
            todo = pending(migrations, {r["version"]: r["checksum"] for r in rows})
            for migration in todo:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                log.info(
                    "migration applied",
                    extra={"version": migration.version, "migration": migration.name},
                )
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return [m.version for m in todo]


async def connect(
    dsn: str, *, min_size: int = 1, max_size: int = 10, timeout_s: float = 10.0
) -> Pool:
    """A connection pool on ``dsn``; DatabaseUnavailable (with the reason) if it cannot
    connect."""
    try:
        pool: Pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, timeout=timeout_s, command_timeout=30.0
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {err}") from None
    return pool


async def open_database(dsn: str, *, max_size: int = 10) -> Pool:
    """The pool a service uses, its schema migrated (see the module docstring)."""
    pool = await connect(dsn, max_size=max_size)
    try:
        await migrate(pool)
    except BaseException:
        await pool.close()
        raise
    return pool
