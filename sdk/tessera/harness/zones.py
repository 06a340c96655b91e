"""A local world of real zone processes, for integration tests and benchmarks.

:class:`World` starts ``python -m tessera.zone`` processes against a Redis,
writes the zone map and restarts or kills zones; :class:`Driver` is a minimal
relay: one ZoneLink per zone (opened ahead of its players with ``warm_s``, as
the relay's warm links), players attached where their route points,
following ``Handover`` messages and ``routes:changed`` as the relay does and
re-attaching players after a zone restart, decoding and acknowledging every
snapshot. It counts what a client would see as trouble (a player with no
snapshots for too long) and explains each long gap (:class:`Gap`). Zones trust
the world's :class:`~tessera.harness.tokens.LocalIssuer`, whose ``service``
token every call to them carries.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import math
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tessera.common.process import ServiceProcess
from tessera.common.store import Client
from tessera.harness.redis import component_url
from tessera.harness.tokens import LOCAL, LocalIssuer
from tessera.relay.routing import Route, RouteCache
from tessera.relay.store import RelayStore
from tessera.relay.zones import warm_zones
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc
from tessera.wire.geometry import Rect
from tessera.wire.snapshot import Quantization, Replicated, SnapshotReceiver, announced
from tessera.zone.store import write_zone_map


@dataclass
class ZoneSpec:
    name: str
    bounds: Rect


class World:
    """Zone processes of one world plus its zone map."""

    def __init__(
        self,
        redis: Client,
        redis_url: str,
        *,
        world: str = "w",
        env: dict[str, str] | None = None,
        issuer: LocalIssuer = LOCAL,
        start_timeout_s: float = 20.0,
    ) -> None:
        self.redis = redis
        self.issuer = issuer
        self.redis_url = redis_url
        self.world = world
        self.env = env or {}
        self.start_timeout_s = start_timeout_s  # a zone's start-up, on a loaded machine longer
        self.procs: dict[str, ServiceProcess] = {}
        self.bounds: dict[str, Rect] = {}
        self.version = 0
        self.world_bounds = Rect(-1000, -1000, 1000, 1000)

    def zone_env(self, name: str, bounds: Rect | None) -> dict[str, str]:
        wb = self.world_bounds
        env = {
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_REDIS_URL": component_url(self.redis_url, "zone"),
            "TESSERA_WORLD": self.world,
            "TESSERA_ZONE": name,
            "TESSERA_WORLD_BOUNDS": f"{wb.min_x},{wb.min_z},{wb.max_x},{wb.max_z}",
            "TESSERA_CHECKPOINT_S": "0.2",
            "TESSERA_HEARTBEAT_S": "0.2",
            "TESSERA_MAP_POLL_S": "0.1",
            **self.issuer.env(),
            **self.env,
        }
        if bounds is not None:
            env["TESSERA_ZONE_BOUNDS"] = (
                f"{bounds.min_x},{bounds.min_z},{bounds.max_x},{bounds.max_z}"
            )
        return env

    async def start(self, name: str, bounds: Rect | None) -> ServiceProcess:
        """Start (or restart) a zone process and wait until it serves. The child is
        forked from the event loop's thread: it dies with the thread that forked it."""
        proc = ServiceProcess("tessera.zone", self.zone_env(name, bounds), name=name).start()
        await asyncio.to_thread(proc.wait_serving, self.start_timeout_s)
        self.procs[name] = proc
        if bounds is not None:
            self.bounds[name] = bounds
        return proc

    async def start_instance(
        self, name: str, match: str, env: dict[str, str] | None = None
    ) -> ServiceProcess:
        """Start an instance zone of ``match`` over the whole world, outside the map."""
        wb = self.world_bounds
        zone_env = {
            **self.zone_env(name, wb),
            "TESSERA_ZONE_INSTANCE": match,
            **(env or {}),
        }
        proc = ServiceProcess("tessera.zone", zone_env, name=name).start()
        await asyncio.to_thread(proc.wait_serving, self.start_timeout_s)
        self.procs[name] = proc
        return proc

    async def start_all(self, zones: list[ZoneSpec]) -> None:
        """Write the map first (so zones see their neighbours at once), then start them."""
        for z in zones:
            self.bounds[z.name] = z.bounds
        await self.publish_map()
        for z in zones:
            await self.start(z.name, z.bounds)

    def addresses(self) -> dict[str, str]:
        return {n: p.grpc_address for n, p in self.procs.items() if p.alive()}

    async def publish_map(self) -> int:
        self.version += 1
        wb = self.world_bounds
        zone_map = zone_pb2.ZoneMap(
            world=self.world,
            version=self.version,
            world_bounds=common_pb2.Bounds(
                min_x=wb.min_x, min_z=wb.min_z, max_x=wb.max_x, max_z=wb.max_z
            ),
        )
        for name, r in sorted(self.bounds.items()):
            proc = self.procs.get(name)
            zone_map.zones.append(
                zone_pb2.ZoneMapEntry(
                    zone=name,
                    address=proc.grpc_address if proc and proc.ports else "",
                    bounds=common_pb2.Bounds(
                        min_x=r.min_x, min_z=r.min_z, max_x=r.max_x, max_z=r.max_z
                    ),
                    state=zone_pb2.ZONE_STATE_ACTIVE,
                )
            )
        await write_zone_map(self.redis, zone_map)
        return self.version

    def stub(self, name: str) -> tuple[grpc.aio.Channel, Any]:
        """A channel and an aio stub (grpc-stubs types stubs as synchronous)."""
        channel = self.issuer.channel(self.procs[name].grpc_address)
        return channel, zone_pb2_grpc.ZoneStub(channel)

    async def join(
        self, name: str, player: str, *, x: float = 0.0, z: float = 0.0, relay_id: str = "testbed"
    ) -> zone_pb2.JoinResponse:
        """Join ``player`` to zone ``name`` (spawning at x, z unless it has data to resume)."""
        channel, stub = self.stub(name)
        async with channel:
            request = zone_pb2.JoinRequest(
                player_id=player, relay_id=relay_id, spawn=common_pb2.Vec3(x=x, z=z)
            )
            response: zone_pb2.JoinResponse = await stub.Join(request)
            return response

    async def leave(self, name: str, player: str, *, relay_id: str = "testbed") -> None:
        channel, stub = self.stub(name)
        async with channel:
            await stub.Leave(zone_pb2.LeaveRequest(player_id=player, relay_id=relay_id))

    async def set_bounds(self, name: str, bounds: Rect) -> int:
        """Re-bound a zone (map first, then the zone); returns handoffs started."""
        self.bounds[name] = bounds
        version = await self.publish_map()
        channel, stub = self.stub(name)
        async with channel:
            resp = await stub.SetBounds(
                zone_pb2.SetBoundsRequest(
                    bounds=common_pb2.Bounds(
                        min_x=bounds.min_x,
                        min_z=bounds.min_z,
                        max_x=bounds.max_x,
                        max_z=bounds.max_z,
                    ),
                    map_version=version,
                )
            )
        return int(resp.handoffs_started)

    async def drain(self, name: str, *, deadline_s: float = 0.0, target: str = "") -> None:
        """Remove the zone from the map and tell it to drain."""
        self.bounds.pop(name, None)
        await self.publish_map()
        channel, stub = self.stub(name)
        async with channel:
            await stub.Drain(
                zone_pb2.DrainRequest(
                    deadline_s=deadline_s, target=common_pb2.ZoneRef(world=self.world, zone=target)
                )
            )

    async def status(self, name: str, entities: bool = False) -> zone_pb2.ZoneStatus:
        channel, stub = self.stub(name)
        async with channel:
            status: zone_pb2.ZoneStatus = await stub.GetStatus(
                zone_pb2.GetStatusRequest(include_entities=entities), timeout=2.0
            )
        return status

    async def wait_status(
        self, name: str, done: Callable[[zone_pb2.ZoneStatus], bool], timeout_s: float = 30.0
    ) -> zone_pb2.ZoneStatus:
        """Poll the zone's status until ``done`` holds; TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    status = await self.status(name)
                    if done(status):
                        return status
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.01)

    def kill(self, name: str) -> None:
        """kill -9."""
        self.procs[name].kill()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()


@dataclass
class _Link:
    zone: str
    up: asyncio.Queue[zone_pb2.ZoneLinkUp]
    call: Any
    task: asyncio.Task[None]
    channel: grpc.aio.Channel
    quant: Quantization = field(default_factory=Quantization)
    welcomed: float | None = None  # monotonic time of the zone's welcome


@dataclass(frozen=True)
class Gap:
    """A snapshot gap of one player longer than the driver's ``gap_log_s``, and
    what it spanned. ``cause`` is the largest part of it: ``driver_stall`` (the
    driver's own event loop was blocked for at least half the gap),
    ``waiting_for_route`` (the last snapshot from the old zone until the driver
    learnt the new route, ``via`` a Handover, ``routes_changed`` or a ``resync``),
    ``first_snapshot`` (from the re-attach until the new zone's first snapshot),
    ``dropped_snapshots`` (same zone, snapshot sequence numbers missing: a zone's
    full link queue) or ``zone_silent`` (same zone, nothing missing: the zone sent
    nothing)."""

    player: str
    zone: str  # that sent the snapshot ending the gap
    at: float  # monotonic time of that snapshot
    gap_s: float
    cause: str
    since_move_s: float  # from the player's last move to the gap's end; -1 if never moved
    wait_s: float = 0.0
    via: str = ""
    stall_s: float = 0.0
    dropped: int = 0


def explain_gap(
    player: str,
    *,
    zone: str,
    prev: float,
    now: float,
    heard: tuple[str, int, int],
    stream: int,
    sequence: int,
    moved: tuple[float, str] | None,
    stall_s: float,
) -> Gap:
    """The gap between a player's snapshot at ``prev`` (zone, stream and sequence
    in ``heard``) and the one from ``zone`` at ``now``, given when and by what
    notice the driver last moved the player and the longest stall of its loop."""
    gap = now - prev
    zone_before, stream_before, sequence_before = heard
    moved_at, via = moved if moved is not None else (prev, "")
    since_move = now - moved_at if moved is not None else -1.0
    stalled = stall_s >= gap / 2
    if zone_before != zone:
        wait = min(gap, max(0.0, moved_at - prev))
        cause = "waiting_for_route" if wait >= gap - wait else "first_snapshot"
        return Gap(
            player,
            zone,
            now,
            gap,
            "driver_stall" if stalled else cause,
            since_move,
            wait_s=wait,
            via=via,
            stall_s=stall_s,
        )
    dropped = max(0, sequence - sequence_before - 1) if stream == stream_before else 0
    cause = "dropped_snapshots" if dropped else "zone_silent"
    return Gap(
        player,
        zone,
        now,
        gap,
        "driver_stall" if stalled else cause,
        since_move,
        stall_s=stall_s,
        dropped=dropped,
    )


@dataclass(frozen=True)
class Arrival:
    """One move of a player to another zone, timed through the path (monotonic
    seconds): the route notice reached the driver, the link to the zone was ready
    (the zone's welcome came; a link already open counts as ready when the move
    needed it), the Attach was queued (on a link still opening, before it was
    ready), the zone queued the player's first snapshot there (its batch's server
    time) and the driver received it."""

    player: str
    zone: str
    via: str
    noticed: float
    linked: float
    attached: float
    published: float
    received: float

    def phases(self) -> dict[str, float]:
        """Seconds spent in each step: ``link`` (opening the link to the zone: the
        channel, the stream and the zone's welcome), ``zone`` (the Attach queued on a
        ready link until the zone queued the first snapshot: the Attach's way there,
        the wait for the COMMIT and for the next tick; negative when the zone
        attached the player itself and sent first) and ``delivery`` (the zone's link
        queue, the stream and the driver's loop)."""
        return {
            "link": self.linked - self.noticed,
            "zone": self.published - max(self.attached, self.linked),
            "delivery": self.received - self.published,
        }


def arrival_report(arrivals: list[Arrival]) -> dict[str, Any]:
    """Each phase of the players' moves (``Arrival.phases``): p50 / p99 / max in ms."""
    phases: dict[str, list[float]] = collections.defaultdict(list)
    for a in arrivals:
        for phase, seconds in a.phases().items():
            phases[phase].append(seconds)
    return {
        phase: {
            "p50_ms": round(_percentile(v, 50) * 1000.0, 1),
            "p99_ms": round(_percentile(v, 99) * 1000.0, 1),
            "max_ms": round(max(v) * 1000.0, 1),
        }
        for phase, v in phases.items()
    } | {"moves_timed": len(arrivals)}


def zone_arrivals(address: str) -> dict[str, Any]:
    """A zone's ``tessera_zone_arrival_seconds`` per phase: count, mean and how many
    over 100 and 250 ms; and its link drops (``dropped``: messages a full link queue
    did not deliver), from its /metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, dict[str, float]] = collections.defaultdict(dict)
    dropped: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "tessera_zone_link_dropped":
            dropped = {
                s.labels["what"]: s.value for s in family.samples if s.name.endswith("_total")
            }
        if family.name != "tessera_zone_arrival_seconds":
            continue
        for sample in family.samples:
            phase = sample.labels["phase"]
            if sample.name.endswith("_bucket") and sample.labels["le"] in ("0.1", "0.25"):
                counts[phase]["le_" + sample.labels["le"]] = sample.value
            elif sample.name.endswith(("_count", "_sum")):
                counts[phase][sample.name.rsplit("_", 1)[1]] = sample.value
    return {
        phase: {
            "count": c.get("count", 0.0),
            "mean_ms": round(1000.0 * c.get("sum", 0.0) / max(1.0, c.get("count", 0.0)), 1),
            "over_100ms": c.get("count", 0.0) - c.get("le_0.1", 0.0),
            "over_250ms": c.get("count", 0.0) - c.get("le_0.25", 0.0),
        }
        for phase, c in counts.items()
    } | {"dropped": dropped}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


def coalesce(messages: list[zone_pb2.ZoneLinkUp], limit: int = 1024) -> list[zone_pb2.ZoneLinkUp]:
    """Messages queued for a link, each run of input batches merged into one of at
    most ``limit`` inputs and acks (as the relay's batching writes them), in order."""
    out: list[zone_pb2.ZoneLinkUp] = []
    for message in messages:
        last = out[-1] if out else None
        if (
            last is not None
            and message.WhichOneof("msg") == "inputs"
            and last.WhichOneof("msg") == "inputs"
            and len(last.inputs.inputs)
            + len(last.inputs.acks)
            + len(message.inputs.inputs)
            + len(message.inputs.acks)
            <= limit
        ):
            last.inputs.MergeFrom(message.inputs)
        else:
            out.append(message)
    return out


class Stalls:
    """How late the running event loop wakes from short sleeps: a blocked or
    CPU-starved loop delays everything the driver receives."""

    def __init__(self, period_s: float = 0.01, keep: int = 12_000) -> None:
        self.period_s = period_s
        self.keep = keep
        # Wake times and lags, oldest first; a stall began at its wake time minus
        # its lag, after the previous wake, so both orders agree.
        self.woke: list[float] = []
        self.lags: list[float] = []

    async def run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.period_s)
            woke = time.monotonic()
            self.add(woke, max(0.0, woke - before - self.period_s))

    def add(self, woke: float, lag: float) -> None:
        self.woke.append(woke)
        self.lags.append(lag)
        if len(self.woke) > 2 * self.keep:
            del self.woke[: self.keep], self.lags[: self.keep]

    def longest(self, since: float, until: float) -> float:
        """The longest stall that overlapped [since, until]."""
        longest = 0.0
        for i in range(bisect.bisect_left(self.woke, since), len(self.woke)):
            if self.woke[i] - self.lags[i] > until:
                break
            longest = max(longest, self.lags[i])
        return longest

    def since(self, start: float) -> list[float]:
        """Every lag measured after ``start``."""
        return self.lags[bisect.bisect_left(self.woke, start) :]


class Driver:
    """A minimal relay driving many players through a world's zones. Like the
    relay, it follows a player to a new zone on whichever notice comes first, the
    Handover on the old zone's link or ``routes:changed`` (the relay's own route
    parsing, epoch cache and subscription), and finds a zone's address in its
    heartbeat when the world did not start the zone itself."""

    def __init__(
        self,
        world: World,
        relay_id: str = "testbed",
        *,
        decode: bool = True,
        gap_log_s: float = 0.1,
        warm_s: float = 0.0,
    ) -> None:
        self.world = world
        # Every warm_s (0: never), open a link to each zone of the relay's warm_zones.
        self.warm_s = warm_s
        self.relay_id = relay_id
        # Without decoding, snapshots are acknowledged unread (position() and sees()
        # know nothing): a benchmark's relay then costs less than the zones it drives.
        self.decode = decode
        self.store = RelayStore(world.redis, world.world)
        self.routes = RouteCache()
        self.links: dict[str, _Link] = {}
        self.zone_of: dict[str, str] = {}
        self.entity: dict[str, int] = {}
        self.receivers: dict[str, SnapshotReceiver] = {}
        self.schema: tuple[Replicated, ...] = ()  # the world's replicated components
        self.last_snapshot: dict[str, float] = {}
        self.seq: dict[str, int] = {}
        self.handovers = 0
        self.link_breaks = 0
        # Gaps: the longest, each player's longest, and the long ones explained.
        self.gap_log_s = gap_log_s
        self.max_gap_s = 0.0
        self.player_gap_s: dict[str, float] = {}
        self.gaps: list[Gap] = []
        self.moves: collections.Counter[str] = collections.Counter()
        self.unroutable = 0
        self.stalls = Stalls()
        self._heard: dict[str, tuple[str, int, int]] = {}  # player -> zone, stream, sequence
        self._moved: dict[str, tuple[float, str]] = {}  # player -> when, via what
        self.arrivals: list[Arrival] = []
        # player -> zone, via, noticed, linked, attached: waiting for its first snapshot
        self._arriving: dict[str, tuple[str, str, float, float, float]] = {}
        self._wall = time.time() - time.monotonic()  # server_time_ms to monotonic
        self._opening: dict[str, asyncio.Task[_Link]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._closing = False

    async def follow_routes(self) -> None:
        """Subscribe to ``routes:changed`` (and start the stall monitor), once."""
        if self._watch is not None:
            return
        ready = asyncio.Event()
        self._watch = asyncio.create_task(self.store.watch_routes(self._on_route_change, ready))
        self._spawn(self.stalls.run())
        if self.warm_s > 0:
            self._spawn(self._warm_links())
        await ready.wait()

    async def _warm_links(self) -> None:
        """As the relay's ``Gateway.warm_links``: forever, a link to every zone of
        :func:`~tessera.relay.zones.warm_zones` before any player is routed there."""
        while True:
            statuses = await self.store.zone_statuses()
            for zone in warm_zones(await self.store.zone_map(), statuses):
                with contextlib.suppress(LookupError):
                    await self.link(zone)
            await asyncio.sleep(self.warm_s)

    def reset_gaps(self) -> None:
        """Start counting gaps and moves afresh (e.g. when a benchmark's operation begins)."""
        self.max_gap_s = 0.0
        self.player_gap_s.clear()
        self.gaps.clear()
        self.moves.clear()
        self.arrivals.clear()

    async def link(self, zone: str) -> _Link:
        """The live link to ``zone``, opened on first use or by the warm links
        (LookupError if the zone has no known address)."""
        existing = self.links.get(zone)
        if existing is not None and not existing.task.done():
            return existing
        opening = self._opening.get(zone)
        if opening is None:
            opening = asyncio.create_task(self._open(zone))
            self._opening[zone] = opening
            opening.add_done_callback(lambda _: self._opening.pop(zone, None))
        return await asyncio.shield(opening)

    async def _address(self, zone: str) -> str | None:
        proc = self.world.procs.get(zone)
        if proc is not None and proc.ports and proc.alive():
            return proc.grpc_address
        return await self.store.zone_address(zone)

    async def _open(self, zone: str) -> _Link:
        address = await self._address(zone)
        if address is None:
            raise LookupError(f"no address for zone {zone}")
        channel = self.world.issuer.channel(address)
        stub: Any = zone_pb2_grpc.ZoneStub(channel)
        up: asyncio.Queue[zone_pb2.ZoneLinkUp] = asyncio.Queue()
        up.put_nowait(zone_pb2.ZoneLinkUp(hello=zone_pb2.LinkHello(relay_id=self.relay_id)))

        async def upstream() -> AsyncIterator[zone_pb2.ZoneLinkUp]:
            while True:
                queued = [await up.get()]
                while not up.empty():
                    queued.append(up.get_nowait())
                for message in coalesce(queued):
                    yield message

        call: Any = stub.ZoneLink(upstream())
        link = _Link(zone, up, call, asyncio.create_task(asyncio.sleep(0)), channel)
        link.task = asyncio.create_task(self._down(link))
        self.links[zone] = link
        # The zone detached the players of a link that broke: attach them again
        # (as the relay does when a link comes back).
        for player, at in self.zone_of.items():
            if at == zone:
                up.put_nowait(zone_pb2.ZoneLinkUp(attach=zone_pb2.Attach(player_id=player)))
        return link

    async def _down(self, link: _Link) -> None:
        try:
            async for down in link.call:
                which = down.WhichOneof("msg")
                if which == "welcome":
                    link.welcomed = time.monotonic()
                    link.quant = Quantization.from_proto(down.welcome.quantization)
                elif which == "snapshots":
                    self._snapshots(link, down.snapshots)
                elif which == "handover" and down.handover.player_id in self.zone_of:
                    self.handovers += 1
                    route = Route(down.handover.to.zone, down.handover.epoch)
                    self._spawn(self._reroute(down.handover.player_id, route, "handover"))
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            if not self._closing:
                self.link_breaks += 1
                self.links.pop(link.zone, None) if self.links.get(link.zone) is link else None

    def _snapshots(self, link: _Link, batch: zone_pb2.SnapshotBatch) -> None:
        up = zone_pb2.ZoneLinkUp()
        ack = up.inputs.acks.add
        now = time.monotonic()
        for snap in batch.snapshots:
            player = snap.player_id
            if self.zone_of.get(player) != link.zone:
                continue
            if not self.decode or self._decoded(player, snap):
                ack(player_id=player, stream=snap.stream, sequence=snap.sequence)
            prev = self.last_snapshot.get(player)
            heard = self._heard.get(player)
            if prev is not None and heard is not None:
                gap = now - prev
                self.max_gap_s = max(self.max_gap_s, gap)
                self.player_gap_s[player] = max(self.player_gap_s.get(player, 0.0), gap)
                if gap >= self.gap_log_s:
                    self.gaps.append(
                        explain_gap(
                            player,
                            zone=link.zone,
                            prev=prev,
                            now=now,
                            heard=heard,
                            stream=snap.stream,
                            sequence=snap.sequence,
                            moved=self._moved.get(player),
                            stall_s=self.stalls.longest(prev, now),
                        )
                    )
            self.last_snapshot[player] = now
            self._heard[player] = (link.zone, snap.stream, snap.sequence)
        if up.inputs.acks:
            link.up.put_nowait(up)
        self._arrived(link, batch, now)

    def _decoded(self, player: str, snap: zone_pb2.PlayerSnapshot) -> bool:
        """Apply a snapshot to the player's receiver; False if it does not decode."""
        rec = self.receivers.get(player)
        if rec is None:
            rec = self.receivers[player] = SnapshotReceiver(schema=self.schema)
        try:
            rec.apply(snap.stream, snap.sequence, snap.baseline, snap.payload)
        except Exception:
            return False
        return True

    def _arrived(self, link: _Link, batch: zone_pb2.SnapshotBatch, now: float) -> None:
        """Complete the timing of players whose first snapshot from a new zone came
        (received ``now``, the time a gap it ends is recorded at)."""
        if not self._arriving:
            return
        published = batch.server_time_ms / 1000.0 - self._wall
        for snap in batch.snapshots:
            move = self._arriving.get(snap.player_id)
            if move is not None and move[0] == link.zone:
                del self._arriving[snap.player_id]
                zone, via, noticed, linked, attached = move
                if link.welcomed is not None:  # it came before any snapshot
                    linked = max(linked, link.welcomed)
                self.arrivals.append(
                    Arrival(snap.player_id, zone, via, noticed, linked, attached, published, now)
                )

    def _on_route_change(self, player: str, route: Route | None, _traceparent: str) -> None:
        if route is not None and player in self.zone_of:
            self._spawn(self._reroute(player, route, "routes_changed"))

    async def _reroute(self, player: str, route: Route, via: str) -> bool:
        """Attach ``player`` where ``route`` points unless an equal or newer route is
        known (the relay's rule: newest epoch wins); False if nothing moved."""
        noticed = time.monotonic()
        known = self.routes.get(player)
        if known is not None and (route.epoch < known.epoch or route == known):
            return False
        try:
            link = await self.link(route.zone)
        except LookupError:
            self.unroutable += 1
            return False
        if not self.routes.update(player, route) or self.zone_of.get(player) == route.zone:
            return False
        self._attach(player, link, via, noticed)
        return True

    def _attach(self, player: str, link: _Link, via: str, noticed: float | None = None) -> None:
        now = time.monotonic()
        self.zone_of[player] = link.zone
        self._moved[player] = (now, via)
        self._arriving[player] = (link.zone, via, now if noticed is None else noticed, now, now)
        self.moves[via] += 1
        link.up.put_nowait(zone_pb2.ZoneLinkUp(attach=zone_pb2.Attach(player_id=player)))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def join(self, player: str, zone: str, x: float, z: float) -> int:
        await self.follow_routes()
        request = zone_pb2.JoinRequest(
            player_id=player, relay_id=self.relay_id, spawn=common_pb2.Vec3(x=x, z=z)
        )
        channel, stub = self.world.stub(zone)
        async with channel:
            for attempt in range(5):
                try:
                    resp = await stub.Join(request)
                    break
                except grpc.aio.AioRpcError as err:
                    # ABORTED: the route changed during the join; the relay retries too.
                    if err.code() != grpc.StatusCode.ABORTED or attempt == 4:
                        raise
                    await asyncio.sleep(0.1)
        self.zone_of[player] = zone
        self.entity[player] = resp.entity_id
        self.schema = announced(resp.game.components)  # one module per world
        self.routes.update(player, Route(zone, int(resp.epoch)))
        link = await self.link(zone)
        link.up.put_nowait(zone_pb2.ZoneLinkUp(attach=zone_pb2.Attach(player_id=player)))
        return int(resp.entity_id)

    async def resync(self) -> int:
        """Follow the routing table: re-link and re-attach players whose zone moved or
        whose link broke (what a relay does after a link breaks). Returns how many
        players it moved to another zone (their Handover and route change had not
        come)."""
        moved = 0
        routes = await self.store.routes(sorted(self.zone_of))
        # Once per zone, not once per player (800 process polls a pass).
        dead = {zone for zone, proc in self.world.procs.items() if not proc.alive()}
        for player, route in routes.items():
            if route.zone in dead:
                continue
            self.routes.update(player, route)
            live = self.links.get(route.zone)
            if live is not None and not live.task.done() and self.zone_of[player] == route.zone:
                continue  # most players, every pass
            fresh = route.zone not in self.links
            try:
                link = await self.link(route.zone)
            except LookupError:
                self.unroutable += 1
                continue
            if self.zone_of[player] != route.zone:
                moved += 1
                self._attach(player, link, "resync")
            elif fresh:
                link.up.put_nowait(zone_pb2.ZoneLinkUp(attach=zone_pb2.Attach(player_id=player)))
        return moved

    def move(self, player: str, yaw: float, forward: float = 1.0) -> None:
        self.move_all({player: yaw}, forward)

    def move_all(self, yaws: dict[str, float], forward: float = 1.0) -> None:
        """One input for each player, one InputBatch per link (as a relay batches)."""
        batches: dict[str, list[zone_pb2.PlayerInput]] = {}
        for player, yaw in yaws.items():
            zone = self.zone_of.get(player, "")
            if zone not in self.links:
                continue
            self.seq[player] = self.seq.get(player, 0) + 1
            batches.setdefault(zone, []).append(
                zone_pb2.PlayerInput(
                    player_id=player, sequence=self.seq[player], move_z=forward, yaw=yaw, rtt_ms=20
                )
            )
        for zone, inputs in batches.items():
            self.links[zone].up.put_nowait(
                zone_pb2.ZoneLinkUp(inputs=zone_pb2.InputBatch(inputs=inputs))
            )

    def position(self, player: str) -> tuple[float, float] | None:
        """The player's own position from its latest snapshot."""
        rec = self.receivers.get(player)
        link = self.links.get(self.zone_of.get(player, ""))
        if rec is None or link is None:
            return None
        table = rec.table()
        eid = self.entity[player]
        if not np.any(table.ids == np.uint64(eid)):
            return None
        p = table.positions(link.quant)[table.index(eid)]
        return float(p[0]), float(p[2])

    def sees(self, viewer: str, entity_id: int) -> bool:
        rec = self.receivers.get(viewer)
        return rec is not None and bool(np.any(rec.table().ids == np.uint64(entity_id)))

    async def pace(self, players: list[str], xs: tuple[float, float], seconds: float) -> None:
        """Walk players back and forth along x between ``xs``, at 30 inputs/s."""
        heading = dict.fromkeys(players, math.pi / 2)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for p in players if self.decode else ():  # undecoded: no positions known
                pos = self.position(p)
                if pos is not None:
                    if pos[0] > xs[1]:
                        heading[p] = -math.pi / 2
                    elif pos[0] < xs[0]:
                        heading[p] = math.pi / 2
            self.move_all(heading)
            await asyncio.sleep(1 / 30)

    async def close(self) -> None:
        self._closing = True
        for task in [*self._tasks, *([self._watch] if self._watch else [])]:
            task.cancel()
        for link in list(self.links.values()):
            link.call.cancel()
            link.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await link.task
            await link.channel.close(None)
        if self._watch is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
