"""The handoff state machine: begin, ack, timeouts, offers, idempotency."""

from __future__ import annotations

from tessera.zone.entities import Record
from tessera.zone.handoff import Ack, Handoffs, Prepare


def ack(eid: int, epoch: int, frm: str, accepted: bool = True) -> Ack:
    return Ack(eid, epoch, frm, accepted)


def prepare(eid: int, epoch: int, frm: str = "a") -> Prepare:
    return Prepare(Record(entity_id=eid, player_id=f"p{eid}"), frm, epoch)


def test_one_handoff_per_entity_and_acks_must_match() -> None:
    h = Handoffs(timeout_s=1.0)
    out = h.begin(7, "p7", "b", 3, now=10.0)
    assert out is not None and out.deadline == 11.0
    assert h.begin(7, "p7", "c", 3, now=10.1) is None  # already in flight
    assert h.on_ack(ack(7, 2, "b")) is None  # wrong epoch
    assert h.on_ack(ack(7, 3, "c")) is None  # wrong zone
    assert h.on_ack(ack(8, 3, "b")) is None  # unknown entity
    assert h.on_ack(ack(7, 3, "b")) is out and out.acked
    assert h.on_ack(ack(7, 3, "b")) is None  # a replayed ACK commits nothing twice
    assert h.timed_out(100.0) == []  # acked handoffs do not time out
    h.finish(7, 100.0)
    assert h.outgoing == {}


def test_timeout_aborts_and_rests_before_retry() -> None:
    h = Handoffs(timeout_s=0.5, retry_s=1.0)
    h.begin(1, "", "b", 1, now=0.0)
    assert h.timed_out(0.4) == []
    late = h.timed_out(0.5)
    assert [o.entity_id for o in late] == [1] and h.outgoing == {}
    assert h.begin(1, "", "b", 1, now=1.0) is None  # resting
    assert h.begin(1, "", "b", 1, now=1.6) is not None


def test_offers_are_idempotent_and_epoch_keyed() -> None:
    h = Handoffs(hold_s=5.0)
    h.offer(prepare(5, 2), now=0.0)
    h.offer(prepare(5, 2), now=0.1)  # replay
    h.offer(prepare(5, 1), now=0.2)  # older epoch never replaces a newer one
    assert h.incoming[5].epoch == 2 and h.incoming[5].source == "a"
    assert h.take(5, 1) is None
    assert h.drop(5, 1) is False
    held = h.take(5, 2)
    assert held is not None and held.state.player_id == "p5"
    assert h.take(5, 2) is None  # a replayed COMMIT finds nothing
    h.offer(prepare(6, 1), now=0.0)
    assert h.drop(6, 1) and h.incoming == {}
    h.offer(prepare(9, 1), now=0.0)
    assert h.expire(4.9) == [] and [x.state.entity_id for x in h.expire(5.0)] == [9]
