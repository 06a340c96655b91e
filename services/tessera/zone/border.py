"""The zone's border: the zone map, two-phase handoffs, drain and re-bounding.

The adapter between :mod:`tessera.zone.topology` / :mod:`tessera.zone.handoff`
(pure) and the simulation and the store. The servicer drives it between ticks,
in the zone's single thread: :meth:`Border.scan` (entities that must leave,
timeouts, the drain deadline) and :meth:`Border.take` then :meth:`Border.reply`
(PREPARE / ACK / COMMIT / ABORT from other zones). The border moves entities out
of and into the simulation itself, when their handoff commits, and returns what
only the servicer can act on: a :class:`Release` for each player now owned
elsewhere (its relay must follow), a :class:`Receipt` for each player that
arrived. Each outgoing handoff is one trace (docs/OPERATIONS.md, "Tracing"):
the span ``handoff`` here from PREPARE to COMMIT, its context carried in the
PREPARE, the COMMIT and the relay's Handover. Protocol and failure cases:
docs/HANDOFF.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace

import numpy as np
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, get_current_span

from tessera.common import tracing
from tessera.v1 import common_pb2, zone_pb2
from tessera.wire.geometry import Rect
from tessera.zone import inputs, messages, metrics, topology
from tessera.zone.config import ZoneConfig
from tessera.zone.entities import GHOST, PLAYER, Entities, Record, export_state, owned
from tessera.zone.handoff import Handoffs, Outgoing
from tessera.zone.neighbours import Neighbours
from tessera.zone.simulation import Simulation
from tessera.zone.store import CLOSED, COMMITTED, REFUSED, Commit, ZoneStore
from tessera.zone.territory import Territory
from tessera.zone.topology import Topology

log = logging.getLogger(__name__)
State = zone_pb2.ZoneState
Outbox = list[tuple[str, zone_pb2.InboxMessage]]  # (target zone, message)


@dataclass(frozen=True)
class Release:
    """A player whose handoff to ``target`` committed: its relay must follow it."""

    player_id: str
    target: str
    epoch: int
    trace_context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Receipt:
    """A player whose handoff to this zone committed: it is here now."""

    player_id: str


@dataclass
class Inbox:
    """One batch of inbox messages, taken: what :meth:`Border.reply` sends and
    commits, and the players that arrived."""

    answers: Outbox = field(default_factory=list)
    acked: list[Outgoing] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)


# How long a zone that refused a commit as closed is no handoff target (unless a
# newer zone map comes first).
CLOSED_FOR_S = 30.0


def epoch_of(ents: Entities, eid: int) -> int:
    """An entity's handoff epoch (-1 without a record): it grows with every handoff."""
    extra = ents.extra.get(eid)
    return -1 if extra is None else extra.epoch


class Border:
    """Zone map, handoffs, drain and re-bounding of one zone."""

    def __init__(
        self,
        *,
        cfg: ZoneConfig,
        store: ZoneStore,
        sim: Simulation,
        territory: Territory,
        neighbours: Neighbours,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.sim = sim
        self.territory = territory
        self.neighbours = neighbours
        self.ref = common_pb2.ZoneRef(world=cfg.world, zone=cfg.zone)
        self.flight = Handoffs(timeout_s=cfg.handoff_timeout_s)
        self.spans: dict[int, Span] = {}  # entity id -> span of its outgoing handoff
        self.strict = False  # after SetBounds: hand off everything outside, no hysteresis
        self.drain_target = ""
        self.drain_deadline = 0.0
        self.drain_started = 0.0
        self.received = 0  # committed handoffs in, for the heartbeat
        # departures() as of _departing_for: (entity id, its epoch, target)
        self._departing: list[tuple[int, int, str]] = []
        self._departing_for: tuple[object, ...] | None = None
        self.closed: dict[str, float] = {}  # zones that refused a commit (drained): when
        self._closed_for: Topology | None = None  # the map they were learnt under

    # --- zone map ------------------------------------------------------------

    async def refresh_map(self) -> bool:
        """Read the world's zone map; True if it was newer than the one held."""
        zone_map = await self.store.zone_map()
        if zone_map is None or zone_map.world != self.cfg.world:
            return False
        if not self.territory.newer(zone_map.version):
            return False  # not rebuilt on every poll while unchanged
        return self.territory.adopt(messages.topology(zone_map))

    def movement_area(self) -> Rect | None:
        """Where movement may carry this zone's entities: past the border (by the
        hysteresis plus some slack) only where a neighbour can take them."""
        own = self.territory.bounds
        if own is None:
            return None
        reach = self.cfg.hysteresis_m + 10.0
        return topology.movement_area(own, self.territory.topo, self.cfg.zone, reach)

    # --- owner side ------------------------------------------------------------

    def rebound(self) -> None:
        """New bounds: everything outside them leaves, without hysteresis."""
        self.strict = True

    def drain(self, target: str, deadline_s: float) -> None:
        self.drain_target = target
        now = time.monotonic()
        if not self.drain_started:
            self.drain_started = now
            metrics.DRAINS.inc()
        self.drain_deadline = now + (deadline_s or self.cfg.drain_timeout_s)

    def drained(self) -> bool:
        """Nothing left to hand away and no handoff in flight. NPCs stay only if no
        zone can take them, or if this is an instance zone: its NPCs end with it."""
        e, topo = self.sim.ents, self.territory.topo
        neighbours = topo is not None and any(a.zone != self.cfg.zone for a in topo.zones)
        left_owned = int(owned(e).sum())
        npcs_leave = bool(neighbours or self.drain_target) and not self.cfg.instance
        left = left_owned if npcs_leave else len(e.players)
        return not left and not self.flight.outgoing

    def departures(self) -> list[tuple[int, str]]:
        """(entity id, target) for every entity that must leave now. Worked out once
        per tick and territory (entities move only in ticks; the scan runs several
        times a tick); an entity handed away, become a ghost or come back (a new
        epoch) since is left out, one that arrived since is judged after the next
        tick. A zone that has drained is no target: its entities stay until a newer
        map shows where they go, or for CLOSED_FOR_S (a zone of that name may start
        again); a drain into it drains by position instead."""
        t, e = self.territory, self.sim.ents
        self._forget_closed()
        if self.drain_target in self.closed:
            self.drain_target = ""
        key = (self.sim.tick, t.bounds, t.topo, t.state, self.drain_target, self.strict)
        if key != self._departing_for:
            self._departing_for = key
            self._departing = [
                (eid, epoch_of(e, eid), target) for eid, target in self._departures()
            ]
        return [
            (eid, target)
            for eid, epoch, target in self._departing
            if target not in self.closed
            and (row := e.index.get(eid)) is not None
            and not e.flags[row] & GHOST
            and epoch_of(e, eid) == epoch
        ]

    def _forget_closed(self) -> None:
        """Closed zones are forgotten with a newer map, or after CLOSED_FOR_S."""
        if self.territory.topo is not self._closed_for:
            self.closed.clear()
            self._closed_for = self.territory.topo
        if self.closed:
            now = time.monotonic()
            self.closed = {z: at for z, at in self.closed.items() if now - at < CLOSED_FOR_S}

    def _departures(self) -> list[tuple[int, str]]:
        topo, own = self.territory.topo, self.territory.bounds
        draining = self.territory.state == State.ZONE_STATE_DRAINING
        if own is None or (topo is None and not self.drain_target):
            return []
        if self.cfg.instance and not draining:
            return []  # an instance zone is outside the partition: it hands over only at its end
        e = self.sim.ents
        rows = np.flatnonzero(owned(e))
        if self.cfg.instance:
            rows = rows[e.kind[rows] == PLAYER]  # an instance's NPCs end with it
        xz = e.pos[rows][:, [0, 2]]
        found = topology.departures(
            xz,
            own,
            topo or Topology(0, self.cfg.world_bounds, ()),
            zone=self.cfg.zone,
            hysteresis=0.0 if self.strict else self.cfg.hysteresis_m,
            everything=draining,
            target=self.drain_target if draining else "",
        )
        if self.strict and not found:
            self.strict = False
        return [(int(e.id[rows[i]]), target) for i, target in found if target != self.cfg.zone]

    async def scan(self) -> list[Release]:
        """Start handoffs for departing entities, abort timed-out ones, force the
        rest after a drain deadline (each kind batched into one Redis round trip)."""
        now = time.monotonic()
        outbox: Outbox = []
        for out in self.flight.timed_out(now):
            metrics.HANDOFFS.labels("timeout").inc()
            self._end_span(out.entity_id, "timeout")
            outbox.append((out.target, self._abort_msg(out, "timeout")))
        forced = bool(
            self.territory.state == State.ZONE_STATE_DRAINING
            and self.drain_deadline
            and now >= self.drain_deadline
        )
        late: list[Outgoing] = []
        for eid, target in self.departures():
            if forced:
                if eid not in self.flight.outgoing:
                    forcing = self._begin(eid, target, now, ignore_rest=True)
                    if forcing is not None:
                        late.append(forcing)
            else:
                started = self._begin(eid, target, now)
                if started is not None:
                    outbox.append((target, self._prepare_msg(started)))
        try:
            await self.store.send_many(outbox)
        except Exception:
            log.exception("sending prepares failed")
            for _target, msg in outbox:
                if msg.HasField("prepare"):
                    self.flight.finish(msg.prepare.entity.entity_id, now, aborted=True)
                    self._end_span(msg.prepare.entity.entity_id, "error")
                    metrics.HANDOFFS.labels("error").inc()
        released = await self.commit(late, result="forced")
        metrics.HANDOFFS_PENDING.set(len(self.flight.outgoing))
        return released

    def _begin(
        self, eid: int, target: str, now: float, *, ignore_rest: bool = False
    ) -> Outgoing | None:
        extra = self.sim.ents.extra.get(eid)
        if extra is None:
            return None
        if ignore_rest:
            self.flight.resting.pop(eid, None)
        out = self.flight.begin(eid, extra.player_id, target, extra.epoch + 1, now)
        if out is not None:
            self.spans[eid] = tracing.tracer.start_span(
                "handoff",
                context=Context(),
                kind=SpanKind.PRODUCER,
                attributes={
                    "tessera.world": self.cfg.world,
                    "tessera.zone": self.cfg.zone,
                    "tessera.handoff.target": target,
                    "tessera.entity_id": eid,
                    "tessera.player_id": extra.player_id,
                    "tessera.handoff.epoch": out.epoch,
                },
            )
        return out

    def _end_span(self, eid: int, result: str) -> None:
        span = self.spans.pop(eid, None)
        if span is not None:
            span.set_attribute("tessera.handoff.result", result)
            span.end()

    def _prepare_msg(self, out: Outgoing) -> zone_pb2.InboxMessage:
        prep = zone_pb2.HandoffPrepare(
            entity=self._export(out.entity_id, zone=self.cfg.zone, epoch=out.epoch),
            to=common_pb2.ZoneRef(world=self.cfg.world, zone=out.target),
            epoch=out.epoch,
            sent_at_ms=time.time() * 1000,
        )
        getattr(prep, "from").CopyFrom(self.ref)
        msg = zone_pb2.InboxMessage(prepare=prep)
        self._inject(msg.trace_context, out.entity_id)
        return msg

    def _inject(self, carrier: MutableMapping[str, str], eid: int) -> None:
        span = self.spans.get(eid)
        if span is not None:
            tracing.inject(carrier, span)

    def _abort_msg(self, out: Outgoing, reason: str) -> zone_pb2.InboxMessage:
        msg = zone_pb2.HandoffAbort(entity_id=out.entity_id, epoch=out.epoch, reason=reason)
        return zone_pb2.InboxMessage(abort=msg)

    def _export(self, eid: int, *, zone: str, epoch: int) -> zone_pb2.EntityState:
        e = self.sim.ents
        state = export_state(e, e.index[eid], zone=zone, epoch=epoch)
        if self.cfg.instance and state.match_id == self.cfg.instance:
            # Leaving its match's instance (the drain at the match's end), a
            # player leaves the match's team behind.
            state = replace(state, team=0, match_id="", role="")
        return messages.entity_state(state)

    async def commit(self, outs: list[Outgoing], *, result: str = "committed") -> list[Release]:
        """Switch the routes and queue the COMMITs (one script for the batch),
        then let go of the entities whose commit succeeded; abort the others."""
        e = self.sim.ents
        now = time.monotonic()
        todo: list[tuple[Outgoing, Commit]] = []
        for out in outs:
            eid = out.entity_id
            extra = e.extra.get(eid)
            if extra is None or eid not in e.index or self.neighbours.is_ghost(eid):
                self.flight.finish(eid, now)
                self._end_span(eid, "vanished")
                metrics.HANDOFFS.labels("vanished").inc()
                continue
            state = self._export(eid, zone=out.target, epoch=out.epoch)
            msg = zone_pb2.HandoffCommit(entity_id=eid, epoch=out.epoch, entity=state)
            getattr(msg, "from").CopyFrom(self.ref)
            expected = f"{self.cfg.zone}|{extra.epoch}" if extra.player_id else ""
            inbox_msg = zone_pb2.InboxMessage(commit=msg)
            self._inject(inbox_msg.trace_context, eid)
            commit = Commit(out.target, extra.player_id, expected, out.epoch, state, inbox_msg)
            todo.append((out, commit))
        for out, _c in todo:  # the batch is built: from here each commit has an outcome
            inputs.forget(e, e.index[out.entity_id])
        try:
            results = await self.store.commit_handoffs([c for _o, c in todo])
        except Exception:
            log.exception("commit failed", extra={"handoffs": len(todo)})
            results = [REFUSED] * len(todo)
        now = time.monotonic()
        aborts: Outbox = []
        released: list[Release] = []
        for (out, _c), outcome in zip(todo, results, strict=True):
            eid = out.entity_id
            if outcome != COMMITTED:
                if eid in e.index:
                    inputs.stay(e, e.index[eid])
                label, reason = ("cas_failed", "route-changed")
                if outcome == CLOSED:  # drained: never again, until a newer map
                    self.closed[out.target] = now
                    label, reason = ("target_closed", "target-closed")
                metrics.HANDOFFS.labels(label).inc()
                aborts.append((out.target, self._abort_msg(out, reason)))
                self.flight.finish(eid, now, aborted=True)
                self._end_span(eid, label)
                continue
            self.flight.finish(eid, now)
            if eid in e.index:
                released += self._let_go(eid, out)
            self._end_span(eid, result)
            metrics.HANDOFF_DURATION.observe(now - out.sent_at)
            metrics.HANDOFFS.labels(result).inc()
        await self.store.send_many(aborts)
        return released

    def _let_go(self, eid: int, out: Outgoing) -> list[Release]:
        """A committed handoff: the entity belongs to ``out.target`` now."""
        self.neighbours.handed_away(eid, out.target, time.monotonic())
        extra = self.sim.ents.extra.get(eid)
        player = extra.player_id if extra else ""
        if not player:
            self.sim.remove_entity(eid)
            return []
        self.sim.remove_player(player)
        release = Release(player, out.target, out.epoch)
        self._inject(release.trace_context, eid)
        return [release]

    # --- inbox ------------------------------------------------------------

    def take(self, msgs: list[zone_pb2.InboxMessage]) -> Inbox:
        """A batch of inbox messages, each handled idempotently and in order: offers
        answered, answers matched, committed entities taken into the simulation."""
        now = time.monotonic()
        inbox = Inbox()
        for msg in msgs:
            which = msg.WhichOneof("msg")
            if which == "prepare":
                with self._received("handoff.prepare", msg, msg.prepare.entity.entity_id):
                    answer = self._on_prepare(msg.prepare, now)
                inbox.answers.append((messages.source(msg.prepare), answer))
            elif which == "ack":
                out = self.flight.on_ack(messages.ack(msg.ack))
                if out is None:
                    metrics.INBOX.labels("stale_ack").inc()
                elif msg.ack.accepted:
                    if out.entity_id in self.spans:
                        self.spans[out.entity_id].add_event("ack")
                    inbox.acked.append(out)
                else:
                    metrics.HANDOFFS.labels("refused").inc()
                    self.flight.finish(out.entity_id, now, aborted=True)
                    self._end_span(out.entity_id, "refused")
            elif which == "commit":
                with self._received("handoff.adopt", msg, msg.commit.entity_id):
                    inbox.receipts += self._on_commit(msg.commit)
            elif which == "abort":
                self.flight.drop(msg.abort.entity_id, msg.abort.epoch)
            elif which == "hit":
                self.neighbours.on_hit(msg.hit)
            else:
                metrics.INBOX.labels("unknown").inc()
                continue
            metrics.INBOX.labels(str(which)).inc()
        return inbox

    def _received(
        self, name: str, msg: zone_pb2.InboxMessage, eid: int
    ) -> AbstractContextManager[Span]:
        """The current span while handling another zone's traced handoff message
        (none for an untraced one)."""
        return tracing.continuing(
            name, msg.trace_context, {"tessera.zone": self.cfg.zone, "tessera.entity_id": eid}
        )

    async def reply(self, inbox: Inbox) -> list[Release]:
        """Send a taken batch's answers and commit its accepted handoffs (one round
        trip each)."""
        await self.store.send_many(inbox.answers)
        return await self.commit(inbox.acked)

    def _on_prepare(self, prep: zone_pb2.HandoffPrepare, now: float) -> zone_pb2.InboxMessage:
        e = self.sim.ents
        ent = prep.entity
        reason = ""
        if self.territory.state != State.ZONE_STATE_ACTIVE:
            reason = "not-active"
        elif (ent.entity_id in e.index and not self.neighbours.is_ghost(ent.entity_id)) or (
            ent.player_id and ent.player_id in e.players
        ):
            reason = "present"
        elif prep.epoch < 1 or ent.entity_id == 0:
            reason = "invalid"
        if not reason:
            self.flight.offer(messages.prepare(prep), now)
        get_current_span().set_attributes(
            {"tessera.handoff.accepted": not reason, "tessera.handoff.reason": reason}
        )
        ack = zone_pb2.HandoffAck(
            entity_id=ent.entity_id, epoch=prep.epoch, accepted=not reason, reason=reason
        )
        getattr(ack, "from").CopyFrom(self.ref)
        return zone_pb2.InboxMessage(ack=ack)

    def _on_commit(self, commit: zone_pb2.HandoffCommit) -> list[Receipt]:
        held = self.flight.take(commit.entity_id, commit.epoch)
        state: Record | None = held.state if held else None
        if commit.HasField("entity"):
            state = messages.record(commit.entity)
        e = self.sim.ents
        if self.neighbours.is_ghost(commit.entity_id):  # shown here as a ghost: now it is ours
            self.neighbours.drop(commit.entity_id)
        span = get_current_span()
        if (
            state is None
            or commit.entity_id in e.index
            or (state.player_id and state.player_id in e.players)
        ):
            metrics.INBOX.labels("stale_commit").inc()
            span.set_attribute("tessera.handoff.result", "stale")
            return []
        self.sim.adopt(state, epoch=commit.epoch, now=time.monotonic())
        span.set_attributes(
            {"tessera.handoff.result": "adopted", "tessera.player_id": state.player_id}
        )
        metrics.HANDOFFS_RECEIVED.inc()
        self.received += 1
        return [Receipt(state.player_id)] if state.player_id else []

    def expire(self) -> None:
        """Forget offers never committed nor aborted."""
        for held in self.flight.expire(time.monotonic()):
            metrics.INBOX.labels("offer_expired").inc()
            log.info("offer expired", extra={"entity": held.state.entity_id, "from": held.source})
