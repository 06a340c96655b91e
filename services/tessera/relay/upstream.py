"""Multiplexed ZoneLink streams, one per zone, shared by all of the relay's players.

A :class:`ZoneLink` batches the inputs and acks of its players and writes them
once per batch window, or, while the zone's tick times are known, once shortly
before its next tick (the zone applies inputs at its ticks); it fans the zone's
snapshot batches, events and handovers out to its :class:`LinkHandler`, and
reconnects with jittered exponential backoff when the stream breaks (resolving
the zone's address again, since a restarted zone may listen elsewhere). While
it is down, inputs are kept (the last few per player) and replayed after the
players are attached again; the client sessions stay open, and the gateway
decides when a stall has lasted too long.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from tessera.authclient.bearer import bearer_metadata
from tessera.authclient.credentials import TokenSource
from tessera.common import tls, tracing
from tessera.relay.metrics import INPUT_HOLD, UP_LATENCY, observe_sampled
from tessera.v1 import relay_pb2, zone_pb2, zone_pb2_grpc

log = logging.getLogger(__name__)

MAX_BATCH_INPUTS = 4096
# Concurrent Join calls per zone.
MAX_JOINS = 32
# Queued upstream messages before old inputs are shed (a zone not reading).
MAX_OUTBOX = 256
# Inputs kept per player while a link is down (clients resend about as many).
REPLAY_INPUTS = 8
# Of a zone's tick period: how long before its next tick held inputs are written.
INPUT_LEAD = 0.25
# Tick times older than this many of the zone's periods are not relied on.
TICK_STALE_PERIODS = 4
# The zone's clock is read against the relay's over windows of this many seconds.
SKEW_WINDOW_S = 5.0


class ClockSkew:
    """The least (arrival here - sent there) over the last one or two windows:
    the other clock's offset plus the least delay (delays only ever add), which
    follows a clock that drifts."""

    def __init__(self, window_s: float = SKEW_WINDOW_S) -> None:
        self.window_s = window_s
        self._since = -math.inf
        self._current = math.inf
        self._previous = math.inf

    def add(self, sample_ms: float, now: float) -> float:
        """Take one sample (``now``: monotonic seconds); the least of the windows."""
        if now - self._since >= 2 * self.window_s:  # after a gap, nothing older counts
            self._since, self._previous, self._current = now, math.inf, math.inf
        elif now - self._since >= self.window_s:
            self._since, self._previous, self._current = now, self._current, math.inf
        self._current = min(self._current, sample_ms)
        return min(self._current, self._previous)


def call_bound_s(rpc_timeout_s: float) -> float:
    """The longest a Join or Leave over a link can take: waiting for the link to
    come up, then the RPC itself, each bounded by ``rpc_timeout_s``."""
    return 2 * rpc_timeout_s


class UpstreamUnavailable(Exception):
    """The zone's link is not connected."""


class ZoneMoved(ConnectionError):
    """A stalled zone's address changed (it was replaced): the stream to the old
    one is given up for a new one."""


class LinkHandler(Protocol):
    """What the gateway does with a link's traffic."""

    def on_snapshots(self, link: ZoneLink, batch: zone_pb2.SnapshotBatch, received: float) -> None:
        """Fan a tick's snapshots out to the players' sessions."""

    def on_event(self, link: ZoneLink, event: zone_pb2.PlayerEvent) -> None:
        """Forward a player event."""

    def on_handover(self, link: ZoneLink, handover: zone_pb2.Handover) -> None:
        """A player now belongs to another zone."""

    async def on_link_up(self, link: ZoneLink, reconnect: bool) -> None:
        """The stream is (again) up; re-join players if the zone restarted."""

    def on_link_down(self, link: ZoneLink) -> None:
        """The stream broke, or the zone fell silent on it (stalled)."""

    def on_link_resumed(self, link: ZoneLink) -> None:
        """A stalled zone spoke again on the same stream."""

    def on_shed(self, link: ZoneLink, inputs: int) -> None:
        """``inputs`` stale inputs were dropped because the zone was not reading."""


def keep_recent(batches: list[zone_pb2.InputBatch], per_player: int) -> zone_pb2.InputBatch:
    """Merge buffered batches, keeping the last ``per_player`` inputs of each player
    (in arrival order) and the newest ack of each player and stream."""
    inputs: list[zone_pb2.PlayerInput] = []
    counts: dict[str, int] = {}
    for batch in reversed(batches):
        for item in reversed(batch.inputs):
            n = counts.get(item.player_id, 0)
            if n < per_player:
                counts[item.player_id] = n + 1
                inputs.append(item)
    acks: dict[tuple[str, int], zone_pb2.SnapshotAck] = {}
    for batch in batches:
        for ack in batch.acks:
            key = (ack.player_id, ack.stream)
            if key not in acks or ack.sequence > acks[key].sequence:
                acks[key] = ack
    inputs.reverse()
    return zone_pb2.InputBatch(inputs=inputs, acks=list(acks.values()))


class ZoneLink:
    """The relay's stream to one zone; see the module docstring."""

    def __init__(
        self,
        zone: str,
        *,
        relay_id: str,
        resolve: Callable[[str], Awaitable[str | None]],
        handler: LinkHandler,
        batch_s: float = 0.0005,
        lead: float = INPUT_LEAD,
        backoff_s: tuple[float, float] = (0.05, 1.0),
        rpc_timeout_s: float = 3.0,
        silence_s: float = 1.0,
        channel: Callable[[str], grpc.aio.Channel] = tls.zone_channel,
        tokens: TokenSource | None = None,
    ) -> None:
        self.zone = zone
        # Opens the channel to the zone's address (the relay's: with its service
        # token on Join and Leave). The stream brings its own from ``tokens`` (None:
        # the channel's interceptors add any the zone asks for), and gives back
        # a token the zone refused, so the next attempt logs in again.
        self.open_channel = channel
        self.tokens = tokens
        self._token = ""
        self.relay_id = relay_id
        self.resolve = resolve
        self.handler = handler
        self.batch_s = batch_s
        # Held inputs go this fraction of the zone's tick period before its next
        # tick (1 or more: inputs are never held).
        self.lead = lead
        self.backoff_s = backoff_s
        self.rpc_timeout_s = rpc_timeout_s
        self.silence_s = silence_s
        self.silences = 0
        # Why the link last went down: "silent" (stalled: the zone sent nothing) or
        # "broken" (the stream ended).
        self.down_reason = ""
        # When the zone last sent anything (or the first player was attached).
        self.last_heard = time.monotonic()
        self.address = ""
        self.connected = False
        self.ever_connected = False
        self.reconnects = 0
        self.shed_inputs = 0
        self.down_since: float | None = time.monotonic()
        self.attached: set[str] = set()
        self.welcome: zone_pb2.LinkWelcome | None = None
        self._channel: grpc.aio.Channel | None = None
        # The generated aio stub is typed as the sync one by grpc-stubs.
        self._stub: Any = None
        self._outbox: list[zone_pb2.ZoneLinkUp] = []
        self._batch = zone_pb2.InputBatch()
        self._wake = asyncio.Event()
        self._flush: asyncio.TimerHandle | None = None
        # perf_counter time the pending batch is due to go (held until then), or 0;
        # the zone tick it is held for (InputBatch.for_tick), or 0. A flush hands
        # both to the writer (_released): a packet that comes before the writer
        # runs schedules the next batch, not this one.
        self._due = 0.0
        self._for_tick = 0
        self._released = (0.0, 0)
        # The zone's tick period, and its next tick (its number, and when it is due
        # on the monotonic clock) when that was last learnt, from a snapshot batch.
        self._period = 0.0
        self._tick_at = 0.0
        self._tick_no = 0
        self._tick_seen = -math.inf
        self._skew = ClockSkew()
        # Receive times (perf_counter) of the client packets in the pending batch.
        self._received: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.up = asyncio.Event()
        self._joins = asyncio.Semaphore(MAX_JOINS)

    # -- the relay's side -------------------------------------------------

    def start(self) -> None:
        """Run the link (detached from the trace of the join that first needed it:
        its later re-joins are traces of their own)."""
        if self._task is None:
            with tracing.detached():
                self._task = asyncio.create_task(self._run(), name=f"zonelink-{self.zone}")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close(None)

    def attach(self, player: str) -> None:
        """Route ``player``'s snapshots over this link (queued in order with inputs)."""
        if not self.attached:
            self.last_heard = time.monotonic()
        self.attached.add(player)
        self._control(zone_pb2.ZoneLinkUp(attach=zone_pb2.Attach(player_id=player)))

    def detach(self, player: str) -> None:
        """Stop ``player``'s snapshots on this link; no-op if not attached."""
        if player in self.attached:
            self.attached.discard(player)
            if self._stub is not None:  # the stream is up (stalled or not)
                self._control(zone_pb2.ZoneLinkUp(detach=zone_pb2.Detach(player_id=player)))

    def release(self, player: str) -> None:
        """Stop counting ``player`` as this link's without a Detach: it is moving to
        another relay (a drain), and the zone keeps sending its snapshots until that
        relay attaches it. A reconnect then neither joins nor attaches it here again
        (which would take it back from the relay it resumed on), and the silence
        watchdog ignores it (the zone rightly sends nothing once it has moved)."""
        self.attached.discard(player)

    def send_inputs(self, items: list[zone_pb2.PlayerInput], received: float) -> None:
        """Queue a client's inputs; ``received`` (perf_counter) times the relay's delay."""
        self._batch.inputs.extend(items)
        if len(self._batch.inputs) >= MAX_BATCH_INPUTS:
            self._close_batch()
        self._note(received)

    def send_action(self, action: zone_pb2.PlayerAction) -> None:
        """Queue a game action, after the inputs queued before it; unlike inputs it is
        never merged away when the zone falls behind (it is lost if the stream breaks)."""
        self._control(zone_pb2.ZoneLinkUp(action=action))

    def send_ack(self, ack: zone_pb2.SnapshotAck, received: float) -> None:
        self._batch.acks.append(ack)
        self._note(received)

    def _note(self, received: float) -> None:
        self._received.append(received)
        if self._flush is None:  # a flush already due takes this input too, no sooner
            self._schedule()

    async def join(self, request: zone_pb2.JoinRequest) -> zone_pb2.JoinResponse:
        """The zone's Join RPC over this link's channel (at most MAX_JOINS at a time,
        so a crowd connecting at once queues here instead of timing out at the zone)."""
        stub = await self._ready_stub()
        async with self._joins:
            response: zone_pb2.JoinResponse = await stub.Join(
                request, timeout=self.rpc_timeout_s, metadata=tracing.metadata()
            )
        return response

    async def ready(self) -> None:
        """Wait until the link is up; UpstreamUnavailable after ``rpc_timeout_s``."""
        await self._ready_stub()

    async def leave(self, player: str, relay_id: str = "") -> None:
        """The zone's Leave RPC, naming this relay (or ``relay_id``, a relay that is
        gone): a zone whose player another relay now serves refuses it
        (FAILED_PRECONDITION, SERVED_BY_OTHER_RELAY). UpstreamUnavailable means
        nothing was sent."""
        stub = await self._ready_stub()
        request = zone_pb2.LeaveRequest(player_id=player, relay_id=relay_id or self.relay_id)
        await stub.Leave(request, timeout=self.rpc_timeout_s)

    def status(self) -> relay_pb2.UpstreamLink:
        return relay_pb2.UpstreamLink(
            zone=self._zone_ref(),
            address=self.address,
            connected=self.connected,
            players=len(self.attached),
            reconnects=self.reconnects,
        )

    # -- internals --------------------------------------------------------

    def _zone_ref(self) -> Any:
        if self.welcome is not None:
            return self.welcome.zone
        return None

    async def _ready_stub(self) -> Any:
        if self._stub is None:
            try:
                await asyncio.wait_for(self.up.wait(), self.rpc_timeout_s)
            except TimeoutError:
                raise UpstreamUnavailable(f"zone {self.zone} is not reachable") from None
        assert self._stub is not None
        return self._stub

    def _control(self, message: zone_pb2.ZoneLinkUp) -> None:
        self._close_batch()
        self._outbox.append(message)
        self._schedule()

    def _close_batch(self) -> None:
        if self._batch.inputs or self._batch.acks:
            self._outbox.append(zone_pb2.ZoneLinkUp(inputs=self._batch))
            self._batch = zone_pb2.InputBatch()
            if len(self._outbox) > MAX_OUTBOX:
                self._shed()

    def _shed(self) -> None:
        """A zone that stopped reading: merge the queued input batches down to the
        recent inputs of each player (older ones are stale anyway), keep control."""
        batches = [m.inputs for m in self._outbox if m.WhichOneof("msg") == "inputs"]
        control = [m for m in self._outbox if m.WhichOneof("msg") != "inputs"]
        merged = keep_recent(batches, REPLAY_INPUTS)
        shed = sum(len(b.inputs) for b in batches) - len(merged.inputs)
        self.shed_inputs += shed
        self.handler.on_shed(self, shed)
        self._outbox = [*control, zone_pb2.ZoneLinkUp(inputs=merged)]

    def _schedule(self) -> None:
        # Also while stalled: the stream is up, and what the zone has not read
        # yet waits in it (a zone that stops reading has its inputs shed here).
        if self._stub is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        hold, tick = self._hold(now)
        at = now + hold
        if self._flush is not None:
            if self._flush.when() <= at:
                return
            self._flush.cancel()  # sooner now: a control message, or newer tick times
        self._due = time.perf_counter() + hold if hold > self.batch_s else 0.0
        self._for_tick = tick
        self._flush = loop.call_at(at, self._wake_writer)

    def _hold(self, now: float) -> tuple[float, int]:
        """How long what is queued at ``now`` (monotonic) waits, and the zone tick it
        is held for: the batch window (tick 0), or while the zone's tick times are
        known, until ``lead`` of a period before its next tick (never more than a
        period; tick 0 for a slot past a tick whose snapshots have not come).
        Control messages wait only the batch window."""
        stale = now - self._tick_seen > TICK_STALE_PERIODS * self._period
        if self._outbox or self.lead >= 1.0 or stale:
            return self.batch_s, 0
        tick_at, tick = self._tick_at, self._tick_no
        if tick_at < now:  # the zone ticks on a fixed grid: the next slot on it
            tick_at += math.ceil((now - tick_at) / self._period) * self._period
            tick = 0  # a step that overran skips slots: which tick is not known
        hold = max(self.batch_s, min(tick_at - self.lead * self._period - now, self._period))
        return hold, tick if hold > self.batch_s else 0

    def _note_tick(self, batch: zone_pb2.SnapshotBatch, now: float, wall_ms: float) -> None:
        """Learn when the zone's next tick falls on this relay's clock (``now``,
        monotonic; ``wall_ms``, the wall clock) from a snapshot batch: its server
        time and next tick time on the zone's clock. A batch held for a tick
        estimated later than this one now is brought forward."""
        ahead_s = (batch.next_tick_ms - batch.server_time_ms) / 1000.0
        if batch.next_tick_ms <= 0 or self._period <= 0 or not 0 <= ahead_s <= 2 * self._period:
            return  # unknown, or not a time the zone's own grid can give
        skew_ms = self._skew.add(wall_ms - batch.server_time_ms, now)
        self._tick_at = now + (batch.next_tick_ms + skew_ms - wall_ms) / 1000.0
        self._tick_no = batch.tick + 1
        self._tick_seen = now
        if self._due:
            self._schedule()

    def _wake_writer(self) -> None:
        self._flush = None
        self._released = (self._due, self._for_tick)
        self._due, self._for_tick = 0.0, 0
        self._wake.set()

    def _take_outbox(self) -> list[zone_pb2.ZoneLinkUp]:
        self._close_batch()
        out, self._outbox = self._outbox, []
        return out

    def _buffer_for_replay(self) -> None:
        """On a broken stream keep only recent inputs and acks; control is redone."""
        self._close_batch()
        self._received = []
        batches = [m.inputs for m in self._outbox if m.WhichOneof("msg") == "inputs"]
        self._outbox = []
        if batches:
            merged = keep_recent(batches, REPLAY_INPUTS)
            if merged.inputs or merged.acks:
                self._outbox.append(zone_pb2.ZoneLinkUp(inputs=merged))

    async def _run(self) -> None:
        low, high = self.backoff_s
        delay = low
        while not self._closed:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except ZoneMoved as err:
                log.warning("zone link moved", extra={"zone": self.zone, "error": str(err)})
            except grpc.aio.AioRpcError as err:
                log.warning(
                    "zone link broken",
                    extra={"zone": self.zone, "address": self.address, "code": err.code().name},
                )
                if err.code() == grpc.StatusCode.UNAUTHENTICATED and self.tokens is not None:
                    self.tokens.rejected(self._token)
            except (ConnectionError, TimeoutError, OSError) as err:
                log.warning("zone link unavailable", extra={"zone": self.zone, "error": str(err)})
            except Exception:
                log.exception("zone link failed", extra={"zone": self.zone})
            finally:
                self._mark_down()
            if time.monotonic() - started > 5.0:
                delay = low
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(high, delay * 2)

    def _mark_down(self) -> None:
        if self.down_reason != "silent":
            self.down_reason = "broken"
        was_connected = self.connected
        self.connected = False
        self.up.clear()
        self._stub = None
        self._tick_seen = -math.inf  # a zone back on a new stream may tick on another grid
        if self._flush is not None:  # the next stream's writer schedules what is queued
            self._flush.cancel()
            self._flush = None
        self._due, self._for_tick, self._released = 0.0, 0, (0.0, 0)
        self._buffer_for_replay()
        if was_connected:
            self.down_since = time.monotonic()
            self.handler.on_link_down(self)

    async def _session(self) -> None:
        address = await self.resolve(self.zone)
        if address is None:
            raise ConnectionError(f"no address for zone {self.zone}")
        if address != self.address or self._channel is None:
            if self._channel is not None:
                await self._channel.close(None)
            self._channel = self.open_channel(address)
            self.address = address
        stub: Any = zone_pb2_grpc.ZoneStub(self._channel)
        metadata: tuple[tuple[str, str], ...] = ()
        if self.tokens is not None:
            self._token = await self.tokens.access_token()
            metadata = bearer_metadata(self._token)
        call = stub.ZoneLink(metadata=metadata)
        await call.write(zone_pb2.ZoneLinkUp(hello=zone_pb2.LinkHello(relay_id=self.relay_id)))
        first = await asyncio.wait_for(call.read(), self.rpc_timeout_s)
        if not isinstance(first, zone_pb2.ZoneLinkDown) or first.WhichOneof("msg") != "welcome":
            raise ConnectionError(f"zone {self.zone} did not welcome the link")
        self.welcome = first.welcome
        self._period = 1.0 / first.welcome.tick_hz if first.welcome.tick_hz else 0.0
        self._skew = ClockSkew()  # another zone process, perhaps on another host's clock
        reconnect = self.ever_connected
        if reconnect:
            self.reconnects += 1
        self.ever_connected = True
        self._stub = stub
        self.up.set()
        await self.handler.on_link_up(self, reconnect)
        # Players first; the buffered inputs stay in the outbox, written after them.
        for player in sorted(self.attached):
            await call.write(zone_pb2.ZoneLinkUp(attach=zone_pb2.Attach(player_id=player)))
        self.connected = True
        self.down_since = None
        self.down_reason = ""
        log.info("zone link up", extra={"zone": self.zone, "address": self.address})
        self.last_heard = time.monotonic()
        writer = asyncio.create_task(self._write_loop(call))
        reader = asyncio.create_task(self._read_loop(call))
        watchdog = asyncio.create_task(self._watch())
        try:
            await asyncio.wait((reader, writer, watchdog), return_when=asyncio.FIRST_COMPLETED)
            if watchdog.done():
                raise ZoneMoved(f"stalled zone {self.zone} now listens at another address")
            for task in (reader, writer):
                if task.done():
                    task.result()  # the error that ended the stream
        finally:
            for task in (reader, writer, watchdog):
                task.cancel()
            await asyncio.gather(reader, writer, watchdog, return_exceptions=True)
            call.cancel()

    async def _write_loop(self, call: Any) -> None:
        self._schedule_if_pending()
        while True:
            await self._wake.wait()
            self._wake.clear()
            received, self._received = self._received, []
            (due, for_tick), self._released = self._released, (0.0, 0)
            if due:
                observe_sampled(INPUT_HOLD, received, due)
            for message in self._take_outbox():
                if for_tick and message.WhichOneof("msg") == "inputs":
                    message.inputs.for_tick = for_tick
                await call.write(message)
            observe_sampled(UP_LATENCY, received, time.perf_counter(), due)

    def _schedule_if_pending(self) -> None:
        if self._outbox or self._batch.inputs or self._batch.acks:
            self._schedule()

    async def _watch(self) -> None:
        """Mark the link stalled once the zone has been silent for ``silence_s``
        with players attached (it sends them snapshots every snapshot interval, so
        it is frozen or too overloaded to tick), without breaking the stream: a
        slow zone that ticks again carries on where it was, with no reconnect and
        no Join of every player, which an overloaded zone could not answer in time.
        Return (the stream is given up) only if a stalled zone's address changed."""
        while True:
            await asyncio.sleep(self.silence_s / 4)
            if self.connected:
                if self.attached and time.monotonic() - self.last_heard > self.silence_s:
                    self._stall()
            elif await self._moved():
                return

    async def _moved(self) -> bool:
        """Whether the zone's address is now another (a replaced zone)."""
        try:
            address = await self.resolve(self.zone)
        except Exception as err:  # the store's: look again at the next check
            log.warning("zone address not resolved", extra={"zone": self.zone, "error": str(err)})
            return False
        return address is not None and address != self.address

    def _stall(self) -> None:
        self.connected = False
        self.silences += 1
        self.down_reason = "silent"
        self.down_since = time.monotonic()
        log.warning("zone link silent", extra={"zone": self.zone, "silence_s": self.silence_s})
        self.handler.on_link_down(self)

    def _unstall(self) -> None:
        """The stalled zone spoke again on the same stream."""
        self.connected = True
        self.down_since = None
        self.down_reason = ""
        log.info("zone link resumed", extra={"zone": self.zone})
        self.handler.on_link_resumed(self)

    async def _read_loop(self, call: Any) -> None:
        handler = self.handler
        while True:
            down = await call.read()
            self.last_heard = time.monotonic()
            if down is grpc.aio.EOF:  # type: ignore[attr-defined]
                raise ConnectionError(f"zone {self.zone} closed the link")
            if not self.connected:
                self._unstall()
            kind = down.WhichOneof("msg")
            if kind == "snapshots":
                self._note_tick(down.snapshots, time.monotonic(), time.time() * 1000.0)
                handler.on_snapshots(self, down.snapshots, time.perf_counter())
            elif kind == "event":
                handler.on_event(self, down.event)
            elif kind == "handover":
                handler.on_handover(self, down.handover)
