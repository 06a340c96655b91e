"""The zone's border work: zone map, two-phase handoffs, drain and re-bounding.

The adapter between :mod:`tessera.zone.topology` / :mod:`tessera.zone.handoff`
(pure) and the servicer, the simulation and the store. Runs as two asyncio
tasks in the zone's single thread, between ticks: ``scan`` (zone map, entities
that must leave, timeouts, drain deadline) and ``inbox`` (PREPARE / ACK /
COMMIT / ABORT from other zones). Protocol and failure cases: docs/HANDOFF.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tessera.v1 import common_pb2, zone_pb2
from tessera.wire.geometry import Rect
from tessera.zone import ghosts, messages, metrics, topology
from tessera.zone.entities import DEAD, GHOST, PLAYER, Extra, export_state, owned
from tessera.zone.handoff import Handoffs, Outgoing
from tessera.zone.store import Commit
from tessera.zone.topology import Topology

if TYPE_CHECKING:
    from tessera.zone.servicer import ZoneServicer

log = logging.getLogger(__name__)
State = zone_pb2.ZoneState


class Border:
    """Zone map, handoffs, drain and re-bounding of one zone."""

    def __init__(self, zone: ZoneServicer) -> None:
        self.zone = zone
        self.cfg = zone.cfg
        self.store = zone.store
        self.topo: Topology | None = None
        self.flight = Handoffs(timeout_s=self.cfg.handoff_timeout_s)
        self.strict = False  # after SetBounds: hand off everything outside, no hysteresis
        self.drain_target = ""
        self.drain_deadline = 0.0
        self.drain_started = 0.0
        self.ghost_src: dict[int, tuple[str, float]] = {}  # ghost id -> (owner, last seen)

    def owned(self) -> npt.NDArray[np.bool_]:
        """Rows this zone is authoritative for (everything but ghosts)."""
        return owned(self.zone.sim.ents)

    def neighbour_rects(self, margin: float) -> list[tuple[str, Rect]]:
        if self.topo is None:
            return []
        return [(a.zone, a.rect) for a in self.topo.neighbours(self.cfg.zone, margin)]

    # --- zone map ------------------------------------------------------------

    def apply_map(self, zone_map: zone_pb2.ZoneMap) -> bool:
        """Adopt a newer zone map; True if it changed anything."""
        if self.topo is not None and zone_map.version <= self.topo.version:
            return False
        self.topo = messages.topology(zone_map)
        self.zone.map_version = max(self.zone.map_version, zone_map.version)
        self.update_area()
        return True

    def update_area(self) -> None:
        """Movement may carry entities past the border (by the hysteresis plus some
        slack) only where a neighbour can take them."""
        own = self.zone.bounds
        if own is not None:
            reach = self.cfg.hysteresis_m + 10.0
            self.zone.sim.area = topology.movement_area(own, self.topo, self.cfg.zone, reach)

    async def refresh_map(self) -> None:
        zone_map = await self.store.zone_map()
        if zone_map is not None and zone_map.world == self.cfg.world:
            self.apply_map(zone_map)

    # --- owner side ------------------------------------------------------------

    def rebound(self) -> None:
        """New bounds: everything outside them leaves, without hysteresis."""
        self.strict = True
        self.update_area()

    def drain(self, target: str, deadline_s: float) -> None:
        self.drain_target = target
        now = time.monotonic()
        if not self.drain_started:
            self.drain_started = now
            metrics.DRAINS.inc()
        self.drain_deadline = now + (deadline_s or self.cfg.drain_timeout_s)

    def departures(self) -> list[tuple[int, str]]:
        """(entity id, target) for every entity that must leave now."""
        z, topo, own = self.zone, self.topo, self.zone.bounds
        draining = z.state == State.ZONE_STATE_DRAINING
        if own is None or (topo is None and not self.drain_target):
            return []
        if self.cfg.instance and not draining:
            return []  # an instance zone is outside the partition: it hands over only at its end
        e = z.sim.ents
        rows = np.flatnonzero(self.owned())
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

    async def scan(self) -> None:
        """Start handoffs for departing entities, abort timed-out ones, force the
        rest after a drain deadline (each kind batched into one Redis round trip)."""
        now = time.monotonic()
        outbox: list[tuple[str, zone_pb2.InboxMessage]] = []
        for out in self.flight.timed_out(now):
            metrics.HANDOFFS.labels("timeout").inc()
            outbox.append((out.target, self._abort_msg(out, "timeout")))
        forced = bool(
            self.zone.state == State.ZONE_STATE_DRAINING
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
                    metrics.HANDOFFS.labels("error").inc()
        await self.commit(late, result="forced")
        metrics.HANDOFFS_PENDING.set(len(self.flight.outgoing))

    def _begin(
        self, eid: int, target: str, now: float, *, ignore_rest: bool = False
    ) -> Outgoing | None:
        e = self.zone.sim.ents
        extra = e.extra.get(eid)
        if extra is None:
            return None
        if ignore_rest:
            self.flight.resting.pop(eid, None)
        return self.flight.begin(eid, extra.player_id, target, extra.epoch + 1, now)

    def _prepare_msg(self, out: Outgoing) -> zone_pb2.InboxMessage:
        prep = zone_pb2.HandoffPrepare(
            entity=self._export(out.entity_id, out.epoch),
            to=common_pb2.ZoneRef(world=self.cfg.world, zone=out.target),
            epoch=out.epoch,
            sent_at_ms=time.time() * 1000,
        )
        getattr(prep, "from").CopyFrom(self.zone.zone_ref)
        return zone_pb2.InboxMessage(prepare=prep)

    def _abort_msg(self, out: Outgoing, reason: str) -> zone_pb2.InboxMessage:
        msg = zone_pb2.HandoffAbort(entity_id=out.entity_id, epoch=out.epoch, reason=reason)
        return zone_pb2.InboxMessage(abort=msg)

    def _export(self, eid: int, epoch: int) -> zone_pb2.EntityState:
        e = self.zone.sim.ents
        return messages.entity_state(export_state(e, e.index[eid], zone=self.cfg.zone, epoch=epoch))

    async def commit(self, outs: list[Outgoing], *, result: str = "committed") -> None:
        """Switch the routes and queue the COMMITs (one script each, one round trip),
        then let go of the entities whose commit succeeded; abort the others."""
        z, e = self.zone, self.zone.sim.ents
        now = time.monotonic()
        todo: list[tuple[Outgoing, Commit]] = []
        for out in outs:
            eid = out.entity_id
            extra = e.extra.get(eid)
            if extra is None or eid not in e.index or eid in self.ghost_src:
                self.flight.finish(eid, now)
                metrics.HANDOFFS.labels("vanished").inc()
                continue
            state = self._export(eid, out.epoch)
            state.zone = out.target
            msg = zone_pb2.HandoffCommit(entity_id=eid, epoch=out.epoch, entity=state)
            getattr(msg, "from").CopyFrom(z.zone_ref)
            expected = f"{self.cfg.zone}|{extra.epoch}" if extra.player_id else ""
            todo.append(
                (
                    out,
                    Commit(
                        out.target,
                        extra.player_id,
                        expected,
                        out.epoch,
                        state,
                        zone_pb2.InboxMessage(commit=msg),
                    ),
                )
            )
        try:
            results = await self.store.commit_handoffs([c for _o, c in todo])
        except Exception:
            log.exception("commit failed", extra={"handoffs": len(todo)})
            results = [False] * len(todo)
        now = time.monotonic()
        aborts: list[tuple[str, zone_pb2.InboxMessage]] = []
        for (out, _c), ok in zip(todo, results, strict=True):
            eid = out.entity_id
            if not ok:
                metrics.HANDOFFS.labels("cas_failed").inc()
                aborts.append((out.target, self._abort_msg(out, "route-changed")))
                self.flight.finish(eid, now, aborted=True)
                continue
            self.flight.finish(eid, now)
            if eid in e.index:
                z.release(eid, out.target, out.epoch)
            metrics.HANDOFF_DURATION.observe(now - out.sent_at)
            metrics.HANDOFFS.labels(result).inc()
        await self.store.send_many(aborts)

    # --- inbox ------------------------------------------------------------

    async def handle(self, msgs: list[zone_pb2.InboxMessage]) -> None:
        """A batch of inbox messages, each idempotently; answers and commits are
        sent in one round trip each."""
        now = time.monotonic()
        answers: list[tuple[str, zone_pb2.InboxMessage]] = []
        acked: list[Outgoing] = []
        for msg in msgs:
            which = msg.WhichOneof("msg")
            if which == "prepare":
                answers.append((messages.source(msg.prepare), self._on_prepare(msg.prepare, now)))
            elif which == "ack":
                out = self.flight.on_ack(messages.ack(msg.ack))
                if out is None:
                    metrics.INBOX.labels("stale_ack").inc()
                elif msg.ack.accepted:
                    acked.append(out)
                else:
                    metrics.HANDOFFS.labels("refused").inc()
                    self.flight.finish(out.entity_id, now, aborted=True)
            elif which == "commit":
                self._on_commit(msg.commit)
            elif which == "abort":
                self.flight.drop(msg.abort.entity_id, msg.abort.epoch)
            elif which == "hit":
                self._on_hit(msg.hit)
            else:
                metrics.INBOX.labels("unknown").inc()
                continue
            metrics.INBOX.labels(str(which)).inc()
        await self.store.send_many(answers)
        await self.commit(acked)

    def _on_prepare(self, prep: zone_pb2.HandoffPrepare, now: float) -> zone_pb2.InboxMessage:
        z, e = self.zone, self.zone.sim.ents
        ent = prep.entity
        reason = ""
        if z.state != State.ZONE_STATE_ACTIVE:
            reason = "not-active"
        elif (ent.entity_id in e.index and ent.entity_id not in self.ghost_src) or (
            ent.player_id and ent.player_id in e.players
        ):
            reason = "present"
        elif prep.epoch < 1 or ent.entity_id == 0:
            reason = "invalid"
        if not reason:
            self.flight.offer(messages.prepare(prep), now)
        ack = zone_pb2.HandoffAck(
            entity_id=ent.entity_id, epoch=prep.epoch, accepted=not reason, reason=reason
        )
        getattr(ack, "from").CopyFrom(z.zone_ref)
        return zone_pb2.InboxMessage(ack=ack)

    def _on_commit(self, commit: zone_pb2.HandoffCommit) -> None:
        held = self.flight.take(commit.entity_id, commit.epoch)
        state = messages.record(commit.entity) if commit.HasField("entity") else None
        state = state or (held.state if held else None)
        e = self.zone.sim.ents
        if commit.entity_id in self.ghost_src:  # it was shown here as a ghost: now it is ours
            self._drop_ghost(commit.entity_id)
        if state is None or commit.entity_id in e.index:
            metrics.INBOX.labels("stale_commit").inc()
            return
        if state.player_id and state.player_id in e.players:
            metrics.INBOX.labels("stale_commit").inc()
            return
        self.zone.receive(state, commit.epoch)

    def _on_hit(self, hit: zone_pb2.ForwardedHit) -> None:
        """A neighbour's hit on one of our entities it shows as a ghost: validate, apply."""
        sim = self.zone.sim
        e = sim.ents
        row = e.index.get(hit.target_id)
        if row is None or hit.target_id in self.ghost_src or e.flags[row] & DEAD:
            metrics.HITS_FORWARDED.labels("gone").inc()
            return
        a = hit.attacker_position
        ok = ghosts.hit_plausible(
            attack=hit.attack,
            damage=hit.damage,
            attacker=(a.x, a.z),
            target=(float(e.pos[row, 0]), float(e.pos[row, 2])),
            weapons=self.cfg.weapons,
            slack_m=2.0 * self.cfg.limits.max_speed * 0.5,
        )
        if not ok:
            metrics.HITS_FORWARDED.labels("rejected").inc()
            return
        metrics.HITS_FORWARDED.labels("applied").inc()
        sim.take_hit(row, hit.attacker_id, hit.damage)

    async def forward_hits(self) -> None:
        """Send hits on ghosts that the last ticks produced to the ghosts' owners."""
        hits, self.zone.sim.forwarded = self.zone.sim.forwarded, []
        outbox: list[tuple[str, zone_pb2.InboxMessage]] = []
        for target, attacker, attack, damage, x, z in hits:
            owner = self.ghost_src.get(target)
            if owner is None:
                metrics.HITS_FORWARDED.labels("no_owner").inc()
                continue
            msg = zone_pb2.ForwardedHit(
                attacker_id=attacker,
                target_id=target,
                damage=damage,
                attacker_position=common_pb2.Vec3(x=x, y=0.0, z=z),
                view_time_ms=time.time() * 1000,
                attack=attack,
            )
            outbox.append((owner[0], zone_pb2.InboxMessage(hit=msg)))
            metrics.HITS_FORWARDED.labels("sent").inc()
        await self.store.send_many(outbox)

    # --- ghosts ------------------------------------------------------------------

    def ghost_batch(self) -> tuple[bytes, int]:
        """This zone's aura as one ghost batch, and its row count."""
        e = self.zone.sim.ents
        rows = np.flatnonzero(self.owned())
        near = [r for _z, r in self.neighbour_rects(self.cfg.aura_m)]
        if near and rows.size:
            rows = rows[ghosts.aura(e.pos[rows][:, [0, 2]], near, self.cfg.aura_m)]
        else:
            rows = rows[:0]
        payload = ghosts.encode(
            ids=e.id[rows],
            pos=e.pos[rows],
            vel=e.vel[rows],
            yaw=e.yaw[rows],
            health=e.health[rows],
            team=e.team[rows],
            kind=e.kind[rows],
            flags=e.flags[rows],
            map_version=self.topo.version if self.topo else 0,
            sent_ms=time.time() * 1000,
        )
        return payload, int(rows.size)

    def apply_ghosts(self, sender: str, payload: bytes, now: float) -> int:
        """Insert or refresh the sender's ghosts near us; drop its ghosts not in the batch."""
        own = self.zone.bounds
        try:
            _version, _sent, rows = ghosts.decode(payload)
        except ghosts.GhostFormatError:
            metrics.GHOST_BATCHES_REJECTED.inc()
            return 0
        if own is None:
            return 0
        rows = ghosts.relevant(rows, own, self.cfg.aura_m)
        e = self.zone.sim.ents
        seen: set[int] = set()
        for r in rows.tolist():
            eid, x, y, z, vx, vy, vz, yaw, health, team, kind, flags = r
            row = e.index.get(eid)
            if row is not None and eid not in self.ghost_src:
                continue  # ours (a handoff to us finished before the sender's batch)
            if row is None:
                row = e.add(eid, kind, (x, y, z))
                e.extra[eid] = Extra()
            e.pos[row] = (x, y, z)
            e.vel[row] = (vx, vy, vz)
            e.yaw[row], e.health[row], e.team[row] = yaw, health, team
            e.flags[row] = (flags & DEAD) | GHOST
            self.ghost_src[eid] = (sender, now)
            seen.add(eid)
        for eid in [
            i for i, (src, _t) in self.ghost_src.items() if src == sender and i not in seen
        ]:
            self._drop_ghost(eid)
        metrics.GHOSTS_IN.inc(len(seen))
        return len(seen)

    def expire_ghosts(self, now: float) -> None:
        ttl = self.cfg.ghost_ttl_s
        for eid in [i for i, (_s, t) in self.ghost_src.items() if now - t > ttl]:
            self._drop_ghost(eid)
        metrics.GHOSTS.set(len(self.ghost_src))

    def _drop_ghost(self, eid: int) -> None:
        self.ghost_src.pop(eid, None)
        if eid in self.zone.sim.ents.index:
            self.zone.sim.remove_entity(eid)

    async def run_ghosts_out(self) -> None:
        period = 1.0 / self.cfg.ghost_hz
        while True:
            began = time.monotonic()
            try:
                if self.zone.bounds is not None and self.neighbour_rects(self.cfg.aura_m):
                    payload, count = self.ghost_batch()
                    await self.store.publish_ghosts(payload)
                    metrics.GHOSTS_OUT.inc(count)
            except Exception:
                log.exception("ghost publish failed")
            await asyncio.sleep(max(0.0, period - (time.monotonic() - began)))

    async def run_ghosts_in(self) -> None:
        feed = self.store.ghost_feed()
        try:
            while True:
                try:
                    await feed.follow({z for z, _r in self.neighbour_rects(self.cfg.aura_m)})
                    got = await feed.next(0.05)
                    now = time.monotonic()
                    if got is not None:
                        self.apply_ghosts(got[0], got[1], now)
                    self.expire_ghosts(now)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("ghost feed failed")
                    await asyncio.sleep(0.5)
        finally:
            await feed.close()

    def expire(self) -> None:
        for held in self.flight.expire(time.monotonic()):
            metrics.INBOX.labels("offer_expired").inc()
            log.info("offer expired", extra={"entity": held.state.entity_id, "from": held.source})

    # --- loops ----------------------------------------------------------------

    async def run_scan(self) -> None:
        last_map = 0.0
        while True:
            try:
                now = time.monotonic()
                if now - last_map >= self.cfg.map_poll_s:
                    last_map = now
                    await self.refresh_map()
                await self.scan()
                await self.forward_hits()
                self.expire()
            except Exception:
                log.exception("handoff scan failed")
            await asyncio.sleep(self.cfg.handoff_scan_s)

    async def run_inbox(self) -> None:
        while True:
            try:
                entries = await self.store.receive()
                msgs = [m for _e, m in entries if m is not None]
                metrics.INBOX.labels("malformed").inc(len(entries) - len(msgs))
                try:
                    await self.handle(msgs)
                except Exception:
                    metrics.INBOX.labels("error").inc()
                    log.exception("inbox batch failed")
                await self.store.done([entry for entry, _ in entries])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("inbox read failed")
                await asyncio.sleep(0.5)
