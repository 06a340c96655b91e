"""The audit log on a real Redis: records round-trip, newest first, capped."""

from __future__ import annotations

from redis.asyncio import Redis

from tessera.common.audit import STREAM, AuditLog, AuditRecord


async def test_records_round_trip_newest_first(redis: Redis) -> None:
    log = AuditLog(redis)
    first = AuditRecord("acc-1", "drain", "earth-0", "10.0.0.1", "ok", "into earth-1", at_ms=5)
    await log.write(first)
    await log.write(AuditRecord("", "kick", "p1", "10.0.0.2", "refused", "admin login required"))
    newest, oldest = await log.recent()
    assert oldest == first
    assert (newest.actor, newest.action, newest.outcome) == ("", "kick", "refused")
    assert newest.at_ms > 1_700_000_000_000  # stamped with the wall clock


async def test_the_stream_is_capped(redis: Redis) -> None:
    log = AuditLog(redis, maxlen=10)
    for i in range(300):
        await log.write(AuditRecord("a", "kick", f"p{i}", "", "ok"))
    assert await redis.xlen(STREAM) < 300
    assert (await log.recent(1))[0].target == "p299"
