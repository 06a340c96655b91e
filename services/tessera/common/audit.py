"""The audit log: one structured record per privileged action (who, what, when,
from where, with what outcome), appended to a capped Redis stream.

:class:`AuditLog` is the one interface writers use; the console is its first
writer. The stream ``tessera:{audit}:log`` keeps about ``maxlen`` records.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from tessera.common.store import Client

STREAM = "tessera:{audit}:log"


@dataclass(frozen=True)
class AuditRecord:
    """One privileged action. ``actor`` is the account id of the verified token
    ("" when none was valid), ``source`` the client address, ``outcome`` ``ok``,
    ``refused`` or ``failed`` and ``detail`` a human sentence."""

    actor: str
    action: str
    target: str
    source: str
    outcome: str
    detail: str = ""
    at_ms: int = 0


class AuditLog:
    """Appends :class:`AuditRecord` entries to the capped audit stream."""

    def __init__(self, redis: Client, *, maxlen: int = 100_000, stream: str = STREAM) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self.stream = stream

    async def write(self, record: AuditRecord) -> str:
        """Append ``record`` (stamped now when ``at_ms`` is 0); its stream entry id."""
        fields = asdict(record)
        fields["at_ms"] = record.at_ms or int(time.time() * 1000)
        entry = await self.redis.xadd(
            self.stream,
            {k: str(v) for k, v in fields.items()},
            maxlen=self.maxlen,
            approximate=True,
        )
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    async def recent(self, count: int = 100) -> list[AuditRecord]:
        """The newest ``count`` records, newest first."""
        entries = await self.redis.xrevrange(self.stream, count=count) or []
        out = []
        for _, raw in entries:
            f = {_text(k): _text(v) for k, v in (raw or {}).items()}
            out.append(
                AuditRecord(
                    actor=f.get("actor", ""),
                    action=f.get("action", ""),
                    target=f.get("target", ""),
                    source=f.get("source", ""),
                    outcome=f.get("outcome", ""),
                    detail=f.get("detail", ""),
                    at_ms=int(f.get("at_ms", "0") or 0),
                )
            )
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
