"""The zone's relay links: ZoneLink fan-in and fan-out, one stream per relay.

A relay multiplexes its players over one ZoneLink per zone. Upstream, a link
carries input batches, snapshot acks, game actions and attach / detach
requests; downstream, each tick's snapshot batch and events of its attached
players, and a Handover when one of them now belongs to another zone. A player
is attached to at most one link; a slow relay's queue overflows into a counted
drop, never a stall. A big batch is written in chunks spread over part of the
tick, so a relay fans it out in small bursts between its other work.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import grpc
import numpy as np

from tessera.v1 import common_pb2, zone_pb2
from tessera.zone import inputs, messages, metrics
from tessera.zone.game import NOT_ATTACHED
from tessera.zone.simulation import Frame, Simulation

log = logging.getLogger(__name__)

PENDING_S = 5.0  # how long an attach for a player not (yet) here waits for its handoff
PENDING_MAX = 100_000
# What a relay sends on a link after its hello (counted per kind).
LINK_KINDS = ("inputs", "attach", "detach", "action")


@dataclass(frozen=True)
class LinkSnapshots:
    """One tick's snapshots for one link, serialised as ``SnapshotBatch``
    entries (:func:`messages.snapshot_entries`): ``ends[i]`` is where entry i
    ends in ``entries``. Sent whole or in chunks, each a serialised ZoneLinkDown."""

    tick: int
    server_time_ms: float
    next_tick_ms: float
    entries: bytes | memoryview
    ends: list[int]

    def message(self, first: int, last: int) -> bytes:
        """The ZoneLinkDown of entries ``first`` to ``last - 1``."""
        start = self.ends[first - 1] if first else 0
        part = self.entries[start : self.ends[last - 1]]
        return messages.snapshot_chunk(self.tick, self.server_time_ms, self.next_tick_ms, part)


Outgoing = zone_pb2.ZoneLinkDown | LinkSnapshots


@dataclass
class Link:
    """One relay's ZoneLink stream."""

    id: int
    relay_id: str
    queue: asyncio.Queue[Outgoing | None]  # None ends the stream
    players: set[str] = field(default_factory=set)
    reader: asyncio.Task[None] | None = None


class Links:
    """Every relay link of one zone, and which link each player is attached to."""

    def __init__(
        self,
        *,
        sim: Simulation,
        world: str,
        queue_size: int,
        chunk: int = 32,
        spread_s: float = 0.0,
    ) -> None:
        self.sim = sim
        self.world = world
        self.queue_size = queue_size
        self.chunk = chunk
        self.spread_s = spread_s
        self.links: dict[int, Link] = {}
        self.player_link: dict[str, int] = {}
        self.pending_attach: dict[str, tuple[int, float]] = {}  # player -> (link id, since)
        # Arrivals timed for metrics.ARRIVAL: adopted, no Attach yet; attached, no snapshot yet.
        self.unattached: dict[str, float] = {}
        self.first_due: dict[str, tuple[float, str]] = {}  # player -> since, phase
        # Attached by the zone to their relay's link, that relay's Attach not read yet.
        self.unasked: set[str] = set()
        self._ids = itertools.count(1)
        # Set by close(): a stream that arrives after it is refused, not held open
        # until the server's grace runs out.
        self.closed = False

    # --- streams -------------------------------------------------------------

    def open(self, relay_id: str, upstream: AsyncIterator[zone_pb2.ZoneLinkUp]) -> Link:
        """A relay's stream after its hello: register it, attach the players here that
        this relay serves and no link does (handed here before the relay linked to this
        zone: their snapshots start on the next tick instead of after each one's Attach
        has come down the new stream), and start reading it."""
        link = Link(next(self._ids), relay_id, asyncio.Queue(self.queue_size))
        self.links[link.id] = link
        extra = self.sim.ents.extra
        for player, eid in list(self.sim.ents.players.items()) if relay_id else []:
            if player not in self.player_link and extra[eid].relay_id == relay_id:
                self._attach(link, player, asked=False)
        log.info("link opened", extra={"link": link.id, "relay": link.relay_id})
        link.reader = asyncio.create_task(self._read(link, upstream))
        return link

    def end(self, link: Link) -> None:
        """A stream is over: stop reading it and detach its players."""
        if link.reader is not None:
            link.reader.cancel()
        for player in list(link.players):
            self._detach(link, player)
        self.links.pop(link.id, None)
        log.info("link closed", extra={"link": link.id, "relay": link.relay_id})

    def close(self) -> None:
        """End every stream and refuse new ones (relays reconnect elsewhere or later)."""
        self.closed = True
        for link in self.links.values():
            while not link.queue.empty():  # a slow relay loses its backlog, not the close
                link.queue.get_nowait()
            link.queue.put_nowait(None)

    # --- fan-in ---------------------------------------------------------------

    async def _read(self, link: Link, upstream: AsyncIterator[zone_pb2.ZoneLinkUp]) -> None:
        counted = {k: metrics.LINK_MESSAGES.labels(k) for k in LINK_KINDS}
        try:
            async for up in upstream:
                which = up.WhichOneof("msg")
                if which in counted:
                    counted[which].inc()
                if which == "inputs":
                    self._inputs(link, up.inputs)
                elif which == "attach":
                    since = self.unattached.pop(up.attach.player_id, None)
                    if since is not None:
                        metrics.ARRIVAL.labels("unattached").observe(time.monotonic() - since)
                    self._attach(link, up.attach.player_id)
                elif which == "detach":
                    if up.detach.player_id in link.players:
                        self._detach(link, up.detach.player_id)
                elif which == "action":
                    self._action(link, up.action)
                else:
                    metrics.LINK_ERRORS.labels("unexpected_" + str(which)).inc()
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        except Exception:
            log.exception("link reader failed", extra={"link": link.id})
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                link.queue.put_nowait(None)

    def _inputs(self, link: Link, batch: zone_pb2.InputBatch) -> None:
        """Inputs of players attached to this link go to the simulation; acks too.
        A batch held for a tick that has run already is counted late: its inputs
        wait for the next one."""
        if len(batch.inputs) > inputs.MAX_BATCH:
            metrics.INPUTS_REJECTED.labels(inputs.OVERSIZED).inc(len(batch.inputs))
            log.warning("oversized input batch", extra={"link": link.id, "n": len(batch.inputs)})
            return
        if batch.for_tick:
            late = self.sim.tick >= batch.for_tick
            metrics.HELD_INPUTS.labels("late" if late else "on_time").inc()
        cols, acks = messages.input_batch(batch)
        if len(cols):  # a batch of acknowledgements only is common
            self._submit(link, cols)
        if acks.players:
            mine = [player in link.players for player in acks.players]
            self.sim.ack_many(acks if all(mine) else acks.take(np.flatnonzero(mine)))

    def _submit(self, link: Link, cols: inputs.Inputs) -> None:
        """Inputs of players attached to ``link`` go to the simulation; the others
        are counted."""
        now = time.monotonic()
        keep = [player in link.players for player in cols.players]
        if not all(keep):
            for player, kept in zip(cols.players, keep, strict=True):
                if not kept:
                    known = player in self.sim.ents.players
                    reason = inputs.NOT_ATTACHED if known else inputs.UNKNOWN_PLAYER
                    metrics.INPUTS_REJECTED.labels(reason).inc()
            cols = cols.take(np.flatnonzero(keep))
        if len(cols):
            self.sim.submit_many(cols, now)

    def _action(self, link: Link, action: zone_pb2.PlayerAction) -> None:
        """A game action of a player attached to this link goes to the simulation
        (which checks and counts it); one of any other player is dropped, counted."""
        if action.player_id not in link.players:
            self.sim.counts["game_action:" + NOT_ATTACHED] += 1
            return
        self.sim.act(action.player_id, action.action_id, list(action.args), time.monotonic())

    def _attach(self, link: Link, player: str, *, asked: bool = True) -> None:
        """Attach ``player`` to ``link`` (``asked``: by that relay, so it reads the
        snapshots), or hold the request until the player's COMMIT is read. The
        relay's first Attach of a player the zone attached to that same link keeps
        the stream: no snapshot of it can have been acknowledged before (the relay
        acknowledges only what it forwards, after it sent the Attach), so its next
        snapshot is full either way, and acknowledgements already on their way
        stay valid."""
        if asked and player in self.unasked and self.player_link.get(player) == link.id:
            self.unasked.discard(player)
            if len(self.first_due) < PENDING_MAX:
                self.first_due[player] = (time.monotonic(), "first_snapshot")
            return
        self.unasked.discard(player)
        if not self.sim.attach(player):
            # The relay may follow a route change before the COMMIT is read here.
            now = time.monotonic()
            self.pending_attach = {
                p: w for p, w in self.pending_attach.items() if now - w[1] < PENDING_S
            }
            if len(self.pending_attach) < PENDING_MAX:
                self.pending_attach[player] = (link.id, now)
            metrics.LINK_ERRORS.labels("attach_unknown_player").inc()
            return
        self.pending_attach.pop(player, None)
        if len(self.first_due) < PENDING_MAX:
            phase = "first_snapshot" if asked else "self_attached"
            self.first_due[player] = (time.monotonic(), phase)
        old = self.player_link.get(player)
        if old is not None and old in self.links:
            self.links[old].players.discard(player)
        self.player_link[player] = link.id
        link.players.add(player)
        if not asked:
            self.unasked.add(player)

    def _detach(self, link: Link, player: str) -> None:
        link.players.discard(player)
        self.unasked.discard(player)
        self.pending_attach.pop(player, None)
        self.first_due.pop(player, None)
        if self.player_link.get(player) == link.id:
            del self.player_link[player]
            self.sim.detach(player)

    # --- players arriving and leaving -----------------------------------------

    def arrived(self, player: str) -> None:
        """A player handed to this zone: attach it to the link its relay already asked
        on, else to the newest link of the relay that served it (the entity carries its
        relay id), so an Attach that came too early or was lost cannot strand the
        player, and its snapshots do not wait for the Attach; that relay drops them
        until it follows the route, then attaches (the stream goes on: see _attach)."""
        waiting = self.pending_attach.pop(player, None)
        if waiting is not None and waiting[0] in self.links:
            metrics.ARRIVAL.labels("pending").observe(time.monotonic() - waiting[1])
            self._attach(self.links[waiting[0]], player)
            return
        if len(self.unattached) < PENDING_MAX:
            self.unattached[player] = time.monotonic()
        eid = self.sim.ents.players.get(player)
        relay_id = self.sim.ents.extra[eid].relay_id if eid is not None else ""
        served = [link for link in self.links.values() if relay_id and link.relay_id == relay_id]
        if served:
            self._attach(max(served, key=lambda link: link.id), player, asked=False)

    def forget(self, player: str) -> Link | None:
        """A player leaving this zone: no link serves it any more; the one that did."""
        self.unattached.pop(player, None)
        self.first_due.pop(player, None)
        self.unasked.discard(player)
        link_id = self.player_link.pop(player, None)
        if link_id is None or link_id not in self.links:
            return None
        link = self.links[link_id]
        link.players.discard(player)
        return link

    def handover(
        self, player: str, target: str, epoch: int, trace_context: Mapping[str, str] | None = None
    ) -> None:
        """A player now owned by ``target``: tell the relay that served it (with the
        handoff's trace context)."""
        link = self.forget(player)
        if link is not None:
            handover = zone_pb2.Handover(
                player_id=player,
                to=common_pb2.ZoneRef(world=self.world, zone=target),
                epoch=epoch,
                trace_context=trace_context or {},
            )
            self._send(link, zone_pb2.ZoneLinkDown(handover=handover), "handover")

    # --- fan-out ----------------------------------------------------------------

    def publish(self, frame: Frame, next_tick_ms: float = 0.0) -> None:
        """Group the frame's snapshots and events per link and queue them;
        ``next_tick_ms`` (server clock, 0: unknown) is when the next tick is due."""
        by_link: dict[int, list[int]] = {}
        queued = time.monotonic()
        for i, player in enumerate(frame.players):
            link_id = self.player_link.get(player)
            if link_id is None:
                continue
            if self.first_due and (due := self.first_due.pop(player, None)) is not None:
                metrics.ARRIVAL.labels(due[1]).observe(queued - due[0])
            by_link.setdefault(link_id, []).append(i)
        if by_link:
            rows = [i for order in by_link.values() for i in order]
            entries, ends = messages.snapshot_entries(frame.players, frame.batch, frame.tick, rows)
            now_ms, first, shared = time.time() * 1000.0, 0, len(by_link) > 1
            for link_id, order in by_link.items():
                last = first + len(order)
                start = ends[first - 1] if first else 0
                mine = entries[start : ends[last - 1]]
                part = LinkSnapshots(
                    frame.tick,
                    now_ms,
                    next_tick_ms,
                    bytes(mine) if shared else mine,  # a slow link holds only its own
                    [end - start for end in ends[first:last]],
                )
                self._send(self.links[link_id], part, "snapshots")
                first = last
        for ev in frame.events:
            link_id = self.player_link.get(ev.player_id)
            if link_id is not None:
                event = messages.player_event(ev)
                self._send(self.links[link_id], zone_pb2.ZoneLinkDown(event=event), "event")

    async def outgoing(self, link: Link) -> AsyncIterator[zone_pb2.ZoneLinkDown | bytes]:
        """A link's queued messages until it ends, a tick's snapshots in chunks of
        at most ``chunk`` spread evenly over ``spread_s`` (serialised: bytes).
        While newer messages wait, nothing is split or paced (the rest of a tick's
        snapshots goes out in one message): a link that fell behind catches up
        with the fewest writes, as before chunking."""
        while (msg := await link.queue.get()) is not None:
            if not isinstance(msg, LinkSnapshots):
                yield msg
                continue
            n = len(msg.ends)
            if not n:
                continue
            cuts = [*range(0, n, self.chunk), n] if link.queue.empty() else [0, n]
            gap = self.spread_s / (len(cuts) - 1)
            for i, (first, last) in enumerate(itertools.pairwise(cuts)):
                if i and not link.queue.empty():
                    yield msg.message(first, n)
                    break
                if i and gap > 0:
                    await asyncio.sleep(gap)
                yield msg.message(first, last)

    def _send(self, link: Link, msg: Outgoing, what: str) -> None:
        """Queue ``msg`` for a link; a full queue drops snapshots (the newest batch,
        or the oldest one to make room for an event or a handover)."""
        try:
            link.queue.put_nowait(msg)
        except asyncio.QueueFull:
            if what != "snapshots" and _evict_oldest_snapshots(link.queue):
                metrics.LINK_DROPS.labels("snapshots").inc()
                link.queue.put_nowait(msg)
            else:
                metrics.LINK_DROPS.labels(what).inc()


def _evict_oldest_snapshots(queue: asyncio.Queue[Outgoing | None]) -> bool:
    """Remove the oldest tick's snapshots from a queue, keeping the rest in order."""
    kept = [queue.get_nowait() for _ in range(queue.qsize())]
    for i, msg in enumerate(kept):
        if isinstance(msg, LinkSnapshots):
            del kept[i]
            break
    for msg in kept:
        queue.put_nowait(msg)
    return len(kept) < queue.maxsize
