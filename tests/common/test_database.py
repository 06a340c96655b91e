"""The migrator: file rules (pure) and concurrent migrators on a real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from tessera.common.database import (
    DatabaseUnavailable,
    Migration,
    MigrationError,
    Pool,
    connect,
    migrate,
    parse_migrations,
    pending,
    shipped_migrations,
)
from tessera.common.process import free_port
from tessera.harness.postgres import LocalPostgres


def test_migrations_are_ordered_by_version() -> None:
    found = parse_migrations({"0002_b.sql": "B", "0001_a.sql": "A"})
    assert [(m.version, m.name, m.sql) for m in found] == [(1, "a", "A"), (2, "b", "B")]


@pytest.mark.parametrize("name", ["1_a.sql", "0001-a.sql", "0001_A.sql", "0001_a.txt", "x.sql"])
def test_badly_named_files_are_refused(name: str) -> None:
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        parse_migrations({name: ""})


def test_a_gap_in_versions_is_refused() -> None:
    with pytest.raises(MigrationError, match="0002 is missing"):
        parse_migrations({"0001_a.sql": "", "0003_c.sql": ""})


def test_pending_skips_applied_and_allows_unknown_newer_versions() -> None:
    a, b = Migration(1, "a", "A"), Migration(2, "b", "B")
    assert pending([a, b], {1: a.checksum}) == [b]
    assert pending([a], {1: a.checksum, 2: "from a newer release"}) == []


def test_an_edited_applied_migration_is_refused() -> None:
    with pytest.raises(MigrationError, match=r"0001_a\.sql changed"):
        pending([Migration(1, "a", "A, edited")], {1: Migration(1, "a", "A").checksum})


def test_the_shipped_migrations_parse() -> None:
    assert [m.version for m in shipped_migrations()][:2] == [1, 2]


async def test_concurrent_migrators_apply_each_migration_once(
    postgres_server: LocalPostgres,
) -> None:
    url = postgres_server.create_database("t_concurrent_migrators")
    pools = [await connect(url, max_size=1) for _ in range(5)]
    # A migration that fails if run twice (CREATE TABLE without IF NOT EXISTS, a row).
    extra = Migration(
        len(shipped_migrations()) + 1,
        "probe",
        "CREATE TABLE probe (n int); INSERT INTO probe VALUES (1);",
    )
    try:
        applied = await asyncio.gather(*(migrate(p, [*shipped_migrations(), extra]) for p in pools))
        versions = [v for one in applied for v in one]
        assert sorted(versions) == list(range(1, extra.version + 1))
        rows = await pools[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, extra.version + 1))
        assert await pools[0].fetchval("SELECT count(*) FROM probe") == 1
        assert await migrate(pools[0], [*shipped_migrations(), extra]) == []
    finally:
        for pool in pools:
            await pool.close()
        postgres_server.drop_database("t_concurrent_migrators")


async def test_a_failing_migration_leaves_nothing_half_applied(database: Pool) -> None:
    broken = Migration(
        len(shipped_migrations()) + 1, "broken", "CREATE TABLE half (n int); SELEC 1;"
    )
    with pytest.raises(Exception, match="syntax error"):
        await migrate(database, [*shipped_migrations(), broken])
    assert await database.fetchval("SELECT to_regclass('half')") is None
    assert (
        await database.fetchval("SELECT max(version) FROM schema_migrations") == broken.version - 1
    )
    # The lock was released: the next migrator is not blocked.
    assert await asyncio.wait_for(migrate(database), 30) == []


async def test_an_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot connect to PostgreSQL"):
        await connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x", timeout_s=2.0)
