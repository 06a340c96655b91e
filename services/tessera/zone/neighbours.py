"""The zone's ghost exchange with its neighbours.

Publishes the zone's aura (owned entities near a neighbour) as ghost batches on
its channel, shows the neighbours' batches here as read-only ghosts, lets the
ghosts a neighbour stopped sending fade out, sends hits on ghosts to their owners and
applies the hits neighbours send about entities owned here. Runs as asyncio
tasks in the zone's single thread, between ticks. Formats and the pure rules:
:mod:`tessera.zone.ghosts`; docs/HANDOFF.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np

from tessera.v1 import common_pb2, zone_pb2
from tessera.zone import ghosts, metrics
from tessera.zone.config import ZoneConfig
from tessera.zone.entities import DEAD, GHOST, Extra, owned
from tessera.zone.simulation import Simulation
from tessera.zone.store import ZoneStore
from tessera.zone.territory import Territory
from tessera.zone.tick import Beat

log = logging.getLogger(__name__)

GHOST_POLL_S = 0.5  # the longest between updates of the neighbours followed, no tick coming


class Neighbours:
    """Ghosts shown here and shown of this zone, and hits across the border."""

    def __init__(
        self,
        *,
        cfg: ZoneConfig,
        store: ZoneStore,
        sim: Simulation,
        territory: Territory,
        beat: Beat | None = None,
    ) -> None:
        self.cfg = cfg
        self.beat = beat or Beat()  # bumped by each tick and zone-map change
        self.store = store
        self.sim = sim
        self.territory = territory
        self.ghosts: dict[int, tuple[str, float]] = {}  # ghost id -> (owner zone, last seen)
        # Entities handed away lately -> (the zone they went to, when), and hits on
        # them that neighbours still sent here, to pass on there.
        self.handed: dict[int, tuple[str, float]] = {}
        self.passing: list[tuple[str, zone_pb2.InboxMessage]] = []

    def handed_away(self, entity_id: int, zone: str, now: float) -> None:
        """An owned entity now belongs to ``zone``: for a ghost lifetime (while the
        neighbours' ghosts of it may still name this zone as its owner) hits on it
        are passed on there."""
        self.handed[entity_id] = (zone, now)

    def is_ghost(self, entity_id: int) -> bool:
        """True for a neighbour's entity shown here."""
        return entity_id in self.ghosts

    def drop(self, entity_id: int) -> None:
        """Stop showing a ghost."""
        self.ghosts.pop(entity_id, None)
        if entity_id in self.sim.ents.index:
            self.sim.remove_entity(entity_id)

    # --- ghosts out ------------------------------------------------------------

    def batch(self) -> tuple[bytes, int]:
        """This zone's aura as one ghost batch, and its row count."""
        e, aura_m = self.sim.ents, self.cfg.aura_m
        rows = np.flatnonzero(owned(e))
        near = [r for _z, r in self.territory.nearby(aura_m)]
        if near and rows.size:
            rows = rows[ghosts.aura(e.pos[rows][:, [0, 2]], near, aura_m)]
        else:
            rows = rows[:0]
        topo = self.territory.topo
        payload = ghosts.encode(
            ids=e.id[rows],
            pos=e.pos[rows],
            vel=e.vel[rows],
            yaw=e.yaw[rows],
            health=e.health[rows],
            team=e.team[rows],
            kind=e.kind[rows],
            flags=e.flags[rows],
            map_version=topo.version if topo else 0,
            sent_ms=time.time() * 1000,
        )
        return payload, int(rows.size)

    async def run_out(self) -> None:
        """Publish the aura up to ``ghost_hz`` times a second while there are
        neighbours, but only when it may have changed: after a tick (between ticks
        nothing moves; an entity that came or went in between is in the next
        tick's batch, and the neighbours' copies of one handed away fade meanwhile)
        or when the zone map changed (a new neighbour), and otherwise after half
        the ghosts' lifetime, so a late tick does not let those copies expire. An
        empty aura is published once (the neighbours' copies fade), not again
        until it has an entity."""
        period = 1.0 / self.cfg.ghost_hz
        published = (-1, -1)  # (tick, zone map) when last looked at
        published_at = 0.0
        empty = False  # the last batch published held no entity
        seen = self.beat.count
        while True:
            began = time.monotonic()
            try:
                state = (self.sim.tick, self.territory.map_version)
                if state != published or began - published_at >= self.cfg.ghost_ttl_s / 2:
                    if self.territory.bounds is not None and self.territory.nearby(self.cfg.aura_m):
                        payload, count = self.batch()
                        if count or not empty:
                            await self.store.publish_ghosts(payload)
                            metrics.GHOSTS_OUT.inc(count)
                        empty = count == 0
                    published, published_at = state, began
            except Exception:
                log.exception("ghost publish failed")
            seen = await self.beat.past(seen, self.cfg.ghost_ttl_s / 2)
            rest = period - (time.monotonic() - began)
            if rest > 0:  # ticks faster than ghost_hz: a batch every few ticks
                await asyncio.sleep(rest)

    # --- ghosts in ---------------------------------------------------------------

    def apply(self, sender: str, payload: bytes, now: float) -> int:
        """Insert or refresh the sender's ghosts near us. Its ghosts not in the batch
        fade: kept, unmoved, for about half the ghost lifetime more, so an entity
        the sender handed to another neighbour does not blink out here between the
        two zones' batches (the other's batch takes it over)."""
        own = self.territory.bounds
        try:
            _version, _sent, rows = ghosts.decode(payload)
        except ghosts.GhostFormatError:
            metrics.GHOST_BATCHES_REJECTED.inc()
            return 0
        if own is None:
            return 0
        rows = ghosts.relevant(rows, own, self.cfg.aura_m)
        e, held = self.sim.ents, self.ghosts
        at, kept = [], []  # entity rows written, from these batch rows
        last = {eid: k for k, eid in enumerate(rows["id"].tolist())}  # a repeated id: its last row
        kinds = rows["kind"].tolist()
        for eid, k in last.items():
            row = e.index.get(eid)
            if row is None:
                row = e.add(eid, kinds[k], (0.0, 0.0, 0.0))
                e.extra[eid] = Extra()
            elif eid not in held:
                continue  # ours (a handoff to us finished before the sender's batch)
            held[eid] = (sender, now)
            at.append(row)
            kept.append(k)
        got, to = rows[kept], np.array(at, np.int64)
        e.pos[to] = np.stack([got["x"], got["y"], got["z"]], 1)
        e.vel[to] = np.stack([got["vx"], got["vy"], got["vz"]], 1)
        e.yaw[to], e.health[to], e.team[to] = got["yaw"], got["health"], got["team"]
        e.flags[to] = (got["flags"] & DEAD) | GHOST
        seen = set(got["id"].tolist())
        fade = now - self.cfg.ghost_ttl_s / 2  # expire() drops it half a lifetime on
        for eid, (src, t) in list(held.items()):
            if src == sender and t > fade and eid not in seen:
                held[eid] = (src, fade)
                e.vel[e.index[eid]] = 0.0  # unmoved: nobody extrapolates it on
        metrics.GHOSTS_IN.inc(len(seen))
        return len(seen)

    def expire(self, now: float) -> None:
        """Drop ghosts their owner has not sent for ``ghost_ttl_s``, and forget
        entities handed away that long ago."""
        ttl = self.cfg.ghost_ttl_s
        for eid in [i for i, (_s, t) in self.ghosts.items() if now - t > ttl]:
            self.drop(eid)
        for eid in [i for i, (_z, t) in self.handed.items() if now - t > ttl]:
            del self.handed[eid]
        metrics.GHOSTS.set(len(self.ghosts))

    async def run_in(self, on_map: Callable[[], object] | None = None) -> None:
        """Follow the nearby zones' ghost channels and show what they send: each
        batch is applied as it is read, between the loop's other callbacks. After
        each tick (or every ``GHOST_POLL_S`` if none comes): update the
        zones followed, expire ghosts. ``on_map`` is called on each zone-map notice."""
        feed = self.store.ghost_feed(
            lambda sender, payload: self.apply(sender, payload, time.monotonic()), on_map
        )
        seen = self.beat.count
        try:
            while True:
                try:
                    await feed.follow({z for z, _r in self.territory.nearby(self.cfg.aura_m)})
                    self.expire(time.monotonic())
                    seen = await self.beat.past(seen, GHOST_POLL_S)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("ghost feed failed; resubscribing")
                    await asyncio.sleep(0.5)
                    await feed.close()
                    self.expire(time.monotonic())  # none stays shown, frozen, meanwhile
        finally:
            await feed.close()

    # --- hits across the border -----------------------------------------------------

    async def forward_hits(self) -> None:
        """Send hits on ghosts that the last ticks produced to the ghosts' owners,
        and pass on hits on entities handed away lately."""
        hits, self.sim.forwarded = self.sim.forwarded, []
        outbox, self.passing = self.passing, []
        for hit in hits:
            owner = self.ghosts.get(hit.target)
            if owner is None:
                metrics.HITS_FORWARDED.labels("no_owner").inc()
                continue
            msg = zone_pb2.ForwardedHit(
                attacker_id=hit.attacker,
                target_id=hit.target,
                damage=hit.damage,
                attacker_position=common_pb2.Vec3(x=hit.x, y=0.0, z=hit.z),
                view_time_ms=time.time() * 1000,
                attack=hit.attack,
            )
            outbox.append((owner[0], zone_pb2.InboxMessage(hit=msg)))
            metrics.HITS_FORWARDED.labels("sent").inc()
        await self.store.send_many(outbox)

    def on_hit(self, hit: zone_pb2.ForwardedHit) -> None:
        """A neighbour's hit on one of our entities it shows as a ghost: check, apply;
        one handed away lately is passed on to where it went (following its
        handoffs, so a hit is passed on at most once per handoff)."""
        e = self.sim.ents
        row = e.index.get(hit.target_id)
        if row is None and (went := self.handed.get(hit.target_id)) is not None:
            self.passing.append((went[0], zone_pb2.InboxMessage(hit=hit)))
            metrics.HITS_FORWARDED.labels("passed_on").inc()
            return
        if row is None or hit.target_id in self.ghosts or e.flags[row] & DEAD:
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
        self.sim.take_hit(row, hit.attacker_id, hit.damage)
