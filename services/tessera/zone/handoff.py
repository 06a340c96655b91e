"""The two-phase handoff state machine of one zone, as plain data (no I/O).

Owner side (``Outgoing``): PREPARE sent -> ACK(accepted) -> COMMIT (the routing
CAS and the COMMIT message are one Redis script, run by the adapter) or ->
ABORT on refusal, timeout or a failed CAS. Target side (``Incoming``): a PREPARE
is held, not simulated, until its COMMIT (activate) or ABORT / expiry (discard).
The key of every handoff is ``(entity id, epoch)``; replays of a message are
answered the same way, so at-least-once delivery from the stream is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tessera.zone.entities import Record


@dataclass(frozen=True)
class Prepare:
    """A PREPARE as plain data: the entity offered, the zone offering it, the new epoch."""

    state: Record
    source: str
    epoch: int


@dataclass(frozen=True)
class Ack:
    """An ACK as plain data: the target's answer to a PREPARE."""

    entity_id: int
    epoch: int
    source: str
    accepted: bool


@dataclass
class Outgoing:
    """A handoff this zone started."""

    entity_id: int
    player_id: str
    target: str
    epoch: int
    sent_at: float
    deadline: float
    acked: bool = False


@dataclass
class Incoming:
    """An entity offered to this zone, inactive until committed."""

    state: Record
    source: str
    epoch: int
    expires: float


@dataclass
class Handoffs:
    """Every handoff in flight in one zone, both directions."""

    timeout_s: float = 1.0
    hold_s: float = 10.0
    retry_s: float = 0.5
    outgoing: dict[int, Outgoing] = field(default_factory=dict)
    incoming: dict[int, Incoming] = field(default_factory=dict)
    resting: dict[int, float] = field(default_factory=dict)

    def begin(
        self, entity_id: int, player_id: str, target: str, epoch: int, now: float
    ) -> Outgoing | None:
        """Start a handoff unless one is in flight or the entity is resting after an abort."""
        if entity_id in self.outgoing or self.resting.get(entity_id, 0.0) > now:
            return None
        out = Outgoing(entity_id, player_id, target, epoch, now, now + self.timeout_s)
        self.outgoing[entity_id] = out
        return out

    def on_ack(self, ack: Ack) -> Outgoing | None:
        """The handoff an ACK answers (None for a stale or repeated ACK)."""
        out = self.outgoing.get(ack.entity_id)
        if out is None or out.epoch != ack.epoch or out.acked or out.target != ack.source:
            return None
        out.acked = True
        return out

    def finish(self, entity_id: int, now: float, *, aborted: bool = False) -> None:
        """Forget a handoff; an aborted one may not restart for ``retry_s``."""
        self.outgoing.pop(entity_id, None)
        if aborted:
            self.resting[entity_id] = now + self.retry_s

    def timed_out(self, now: float) -> list[Outgoing]:
        """Unacknowledged handoffs past their deadline (removed; the caller aborts them)."""
        late = [o for o in self.outgoing.values() if not o.acked and o.deadline <= now]
        for o in late:
            self.finish(o.entity_id, now, aborted=True)
        self.resting = {k: v for k, v in self.resting.items() if v > now}
        return late

    def offer(self, prep: Prepare, now: float) -> None:
        """Hold a PREPARE's entity (a replay or a newer epoch replaces the older offer)."""
        eid = prep.state.entity_id
        held = self.incoming.get(eid)
        if held is not None and held.epoch > prep.epoch:
            return
        self.incoming[eid] = Incoming(prep.state, prep.source, prep.epoch, now + self.hold_s)

    def take(self, entity_id: int, epoch: int) -> Incoming | None:
        """Remove and return the held offer a COMMIT activates."""
        held = self.incoming.get(entity_id)
        if held is None or held.epoch != epoch:
            return None
        return self.incoming.pop(entity_id)

    def drop(self, entity_id: int, epoch: int) -> bool:
        """Discard the offer an ABORT cancels."""
        held = self.incoming.get(entity_id)
        if held is None or held.epoch != epoch:
            return False
        del self.incoming[entity_id]
        return True

    def expire(self, now: float) -> list[Incoming]:
        """Offers never committed nor aborted (the owner died or timed out)."""
        old = [h for h in self.incoming.values() if h.expires <= now]
        for h in old:
            del self.incoming[h.state.entity_id]
        return old
