"""Tests' view of the audit trail: services write it in batches off the request
path, so a test waits for the records it expects instead of reading at once."""

from __future__ import annotations

import asyncio
import time

from tessera.common.audit import AuditLog, AuditRecord
from tessera.common.database import Pool


async def audit_trail(pool: Pool, count: int, *, timeout_s: float = 15.0) -> list[AuditRecord]:
    """The written audit records, oldest first, once there are at least ``count``;
    TimeoutError naming what arrived when they do not within ``timeout_s``."""
    log = AuditLog(pool)
    deadline = time.monotonic() + timeout_s
    while True:
        records = await log.recent(100_000)
        if len(records) >= count:
            return records[::-1]
        if time.monotonic() > deadline:
            seen = [(r.action, r.target, r.outcome) for r in reversed(records)]
            raise TimeoutError(f"{count} audit records expected, {len(records)} written: {seen}")
        await asyncio.sleep(0.05)
