"""The audit log on a real PostgreSQL: records round-trip newest first and filter by
actor and target; a write never waits on the database, an outage keeps records
in the bounded buffer for the retry and only what no longer fits is counted lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from tessera.common.audit import AuditLog, AuditRecord
from tessera.common.database import Pool, connect


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_records_round_trip_newest_first_and_filter(database: Pool) -> None:
    log = AuditLog(database)
    first = AuditRecord(
        "acc-1",
        "drain",
        "earth-0",
        "10.0.0.1",
        "ok",
        "into earth-1",
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    log.write(first)
    log.write(AuditRecord("", "kick", "p1", "10.0.0.2", "refused", "admin login required"))
    log.write(AuditRecord("acc-1", "ban", "p1", "10.0.0.1", "ok"))
    assert await log.recent() == []  # queued, not written yet
    assert await log.close()
    newest, middle, oldest = await log.recent()
    assert oldest == first
    assert (middle.actor, middle.action, middle.outcome) == ("", "kick", "refused")
    assert newest.at is not None and newest.at > datetime(2026, 1, 2, tzinfo=UTC)
    assert [r.action for r in await log.recent(actor="acc-1")] == ["ban", "drain"]
    assert [r.actor for r in await log.recent(target="p1")] == ["acc-1", ""]
    assert [r.action for r in await log.recent(actor="acc-1", target="p1")] == ["ban"]
    assert [r.action for r in await log.recent(1)] == ["ban"]


async def test_the_writer_task_writes_without_a_flush(database: Pool) -> None:
    log = AuditLog(database, interval_s=0.05)
    log.start()
    log.write(AuditRecord("a", "login", "boss", "", "ok"))
    for _ in range(200):
        if await log.recent():
            break
        await asyncio.sleep(0.05)
    assert [r.target for r in await log.recent()] == ["boss"]
    await log.close()


async def test_an_outage_keeps_records_for_the_retry_and_counts_what_is_lost(
    database: Pool, database_url: str
) -> None:
    pool = await connect(database_url, max_size=1)
    log = AuditLog(pool, capacity=3, batch=2)
    await pool.close()  # the database is gone for this writer
    errors, lost = sample("tessera_audit_errors_total"), sample("tessera_audit_dropped_total")
    for i in range(5):
        log.write(AuditRecord("a", "kick", f"p{i}", "", "ok"))  # never raises
    assert not await log.spool.flush()
    assert sample("tessera_audit_errors_total") - errors == 1
    assert sample("tessera_audit_dropped_total") - lost == 2
    assert [r.target for r in log.spool.items] == ["p0", "p1", "p2"]
    log.pool = database  # the database is back
    assert await log.close()
    assert [r.target for r in await log.recent()] == ["p2", "p1", "p0"]


async def test_close_gives_up_after_its_timeout(database_url: str) -> None:
    pool = await connect(database_url, max_size=1)
    async with pool.acquire():
        log = AuditLog(pool)
        log.write(AuditRecord("a", "kick", "p", "", "ok"))
        assert not await log.close(timeout_s=0.2)  # the only connection is held
    await pool.close()
