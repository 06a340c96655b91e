"""The audit trail: one structured record per privileged action (who, what, when,
from where, with what outcome), kept in PostgreSQL (table ``audit_log``, migration
``0005_audit.sql``).

:class:`AuditLog` is the one interface writers (auth, the console) use and the only
code that touches the table. :meth:`AuditLog.write` never waits on the database: it
stamps the record and queues it in a bounded :class:`~tessera.common.spool.Spool`
that one task writes in batches, so an outage never fails the audited request.
While the database is away records wait in the spool and are retried; what no
longer fits is dropped and counted (``tessera_audit_dropped_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

from tessera.common.database import Pool
from tessera.common.spool import Spool, SpoolMetrics

COLUMNS = ("at", "actor", "action", "target", "source", "outcome", "detail")

WRITTEN = Counter("tessera_audit_written_total", "Audit records written to PostgreSQL")
DROPPED = Counter(
    "tessera_audit_dropped_total",
    "Audit records lost because the buffer was full (the database was away too long)",
)
ERRORS = Counter("tessera_audit_errors_total", "Failed audit batch writes (retried)")
BATCH = Histogram(
    "tessera_audit_batch_seconds",
    "Duration of one audit batch write",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
PENDING = Gauge("tessera_audit_pending", "Audit records waiting to be written")
_METRICS = SpoolMetrics(WRITTEN, DROPPED, ERRORS, BATCH)


@dataclass(frozen=True)
class AuditRecord:
    """One privileged action. ``actor`` is the account id of the verified token
    ("" when none was valid), ``source`` the client address, ``outcome`` ``ok``,
    ``refused`` or ``failed``, ``detail`` a human sentence and ``at`` when it
    happened (stamped by :meth:`AuditLog.write` when None)."""

    actor: str
    action: str
    target: str
    source: str
    outcome: str
    detail: str = ""
    at: datetime | None = None


class AuditLog:
    """Writes :class:`AuditRecord` rows in batches off the request path, and reads
    them back. :meth:`run` drains the buffer; :meth:`close` flushes what is left."""

    def __init__(
        self, pool: Pool, *, capacity: int = 10_000, batch: int = 500, interval_s: float = 0.2
    ) -> None:
        self.pool = pool
        self.spool: Spool[AuditRecord] = Spool(
            "audit",
            self._insert,
            capacity=capacity,
            batch=batch,
            interval_s=interval_s,
            metrics=_METRICS,
        )
        self._task: asyncio.Task[None] | None = None

    def write(self, record: AuditRecord) -> None:
        """Queue ``record`` (stamped now when ``at`` is None); never blocks or raises
        for the database's sake."""
        if record.at is None:
            record = replace(record, at=datetime.now(UTC))
        self.spool.offer([record])
        PENDING.set(len(self.spool.items))

    def start(self) -> None:
        """Start the task that writes the buffer every ``interval_s``."""
        self._task = asyncio.create_task(self.spool.run(), name="audit-writer")

    async def close(self, timeout_s: float = 5.0) -> bool:
        """Stop the writer and flush what is queued (within ``timeout_s``); True when
        nothing was left unwritten."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        flushed = False
        with contextlib.suppress(TimeoutError):
            flushed = await asyncio.wait_for(self.spool.flush(), timeout_s)
        PENDING.set(len(self.spool.items))
        return flushed

    async def _insert(self, batch: list[AuditRecord]) -> None:
        rows = [(r.at, r.actor, r.action, r.target, r.source, r.outcome, r.detail) for r in batch]
        async with self.pool.acquire() as conn:
            await conn.copy_records_to_table("audit_log", records=rows, columns=COLUMNS)
        PENDING.set(len(self.spool.items))

    async def recent(
        self, count: int = 100, *, actor: str | None = None, target: str | None = None
    ) -> list[AuditRecord]:
        """The newest ``count`` written records, newest first; only ``actor``'s or
        only those on ``target`` when given."""
        # Only the given filters, so each query can use its index.
        given = {k: v for k, v in (("actor", actor), ("target", target)) if v}
        where = [f"{column} = ${i}" for i, column in enumerate(given, start=2)]
        rows = await self.pool.fetch(
            "SELECT at, actor, action, target, source, outcome, detail FROM audit_log"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY at DESC, id DESC LIMIT $1",
            count,
            *given.values(),
        )
        return [
            AuditRecord(
                actor=r["actor"],
                action=r["action"],
                target=r["target"],
                source=r["source"],
                outcome=r["outcome"],
                detail=r["detail"],
                at=r["at"],
            )
            for r in rows
        ]
