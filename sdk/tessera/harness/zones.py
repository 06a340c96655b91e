"""A local world of real zone processes, for integration tests and benchmarks.

:class:`World` starts ``python -m tessera.zone`` processes against a Redis,
writes the zone map and restarts or kills zones; :class:`Driver` is a minimal
relay: one ZoneLink per zone, players attached where their route points,
following ``Handover`` messages and re-joining players after a zone restart,
decoding and acknowledging every snapshot. It counts what a client would see
as trouble (a player with no snapshots for too long).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from tessera.common.process import ServiceProcess
from tessera.common.store import Client
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc
from tessera.wire.geometry import Rect
from tessera.wire.snapshot import Quantization, SnapshotReceiver
from tessera.zone.store import read_routes, write_zone_map


@dataclass
class ZoneSpec:
    name: str
    bounds: Rect


class World:
    """Zone processes of one world plus its zone map."""

    def __init__(
        self, redis: Client, redis_url: str, *, world: str = "w", env: dict[str, str] | None = None
    ) -> None:
        self.redis = redis
        self.redis_url = redis_url
        self.world = world
        self.env = env or {}
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
            "TESSERA_REDIS_URL": self.redis_url,
            "TESSERA_WORLD": self.world,
            "TESSERA_ZONE": name,
            "TESSERA_WORLD_BOUNDS": f"{wb.min_x},{wb.min_z},{wb.max_x},{wb.max_z}",
            "TESSERA_CHECKPOINT_S": "0.2",
            "TESSERA_HEARTBEAT_S": "0.2",
            "TESSERA_MAP_POLL_S": "0.1",
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
        await asyncio.to_thread(proc.wait_serving)
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
        await asyncio.to_thread(proc.wait_serving)
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
        channel = grpc.aio.insecure_channel(self.procs[name].grpc_address)
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


class Driver:
    """A minimal relay driving many players through a world's zones."""

    def __init__(self, world: World, relay_id: str = "testbed", *, decode: bool = True) -> None:
        self.world = world
        self.relay_id = relay_id
        # Without decoding, snapshots are acknowledged unread (position() and sees()
        # know nothing): a benchmark's relay then costs less than the zones it drives.
        self.decode = decode
        self.links: dict[str, _Link] = {}
        self.zone_of: dict[str, str] = {}
        self.entity: dict[str, int] = {}
        self.receivers: dict[str, SnapshotReceiver] = {}
        self.last_snapshot: dict[str, float] = {}
        self.seq: dict[str, int] = {}
        self.handovers = 0
        self.max_gap_s = 0.0
        self.link_breaks = 0
        self._closing = False

    async def link(self, zone: str) -> _Link:
        existing = self.links.get(zone)
        if existing is not None and not existing.task.done():
            return existing
        address = self.world.procs[zone].grpc_address
        channel = grpc.aio.insecure_channel(address)
        stub: Any = zone_pb2_grpc.ZoneStub(channel)
        up: asyncio.Queue[zone_pb2.ZoneLinkUp] = asyncio.Queue()
        up.put_nowait(zone_pb2.ZoneLinkUp(hello=zone_pb2.LinkHello(relay_id=self.relay_id)))

        async def upstream() -> AsyncIterator[zone_pb2.ZoneLinkUp]:
            while True:
                yield await up.get()

        call: Any = stub.ZoneLink(upstream())
        link = _Link(zone, up, call, asyncio.create_task(asyncio.sleep(0)), channel)
        link.task = asyncio.create_task(self._down(link))
        self.links[zone] = link
        return link

    async def _down(self, link: _Link) -> None:
        try:
            async for down in link.call:
                which = down.WhichOneof("msg")
                if which == "welcome":
                    link.quant = Quantization.from_proto(down.welcome.quantization)
                elif which == "snapshots":
                    self._snapshots(link, down.snapshots)
                elif which == "handover":
                    await self._handover(link, down.handover)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            if not self._closing:
                self.link_breaks += 1
                self.links.pop(link.zone, None) if self.links.get(link.zone) is link else None

    def _snapshots(self, link: _Link, batch: zone_pb2.SnapshotBatch) -> None:
        acks = []
        now = time.monotonic()
        for snap in batch.snapshots:
            if self.zone_of.get(snap.player_id) != link.zone:
                continue
            rec = self.receivers.setdefault(snap.player_id, SnapshotReceiver())
            with contextlib.suppress(Exception):
                if self.decode:
                    rec.apply(snap.stream, snap.sequence, snap.baseline, snap.payload)
                acks.append(
                    zone_pb2.SnapshotAck(
                        player_id=snap.player_id, stream=snap.stream, sequence=snap.sequence
                    )
                )
            prev = self.last_snapshot.get(snap.player_id)
            if prev is not None:
                self.max_gap_s = max(self.max_gap_s, now - prev)
            self.last_snapshot[snap.player_id] = now
        if acks:
            link.up.put_nowait(zone_pb2.ZoneLinkUp(inputs=zone_pb2.InputBatch(acks=acks)))

    async def _handover(self, link: _Link, handover: zone_pb2.Handover) -> None:
        player = handover.player_id
        if self.zone_of.get(player) != link.zone:
            return
        self.handovers += 1
        self.zone_of[player] = handover.to.zone
        new = await self.link(handover.to.zone)
        new.up.put_nowait(zone_pb2.ZoneLinkUp(attach=zone_pb2.Attach(player_id=player)))

    async def join(self, player: str, zone: str, x: float, z: float) -> int:
        channel, stub = self.world.stub(zone)
        async with channel:
            resp = await stub.Join(
                zone_pb2.JoinRequest(
                    player_id=player, relay_id=self.relay_id, spawn=common_pb2.Vec3(x=x, z=z)
                )
            )
        self.zone_of[player] = zone
        self.entity[player] = resp.entity_id
        link = await self.link(zone)
        link.up.put_nowait(zone_pb2.ZoneLinkUp(attach=zone_pb2.Attach(player_id=player)))
        return int(resp.entity_id)

    async def resync(self) -> None:
        """Follow the routing table: re-link and re-attach players whose zone moved or
        restarted (what a relay does after a link breaks)."""
        routes = await read_routes(self.world.redis, self.world.world)
        for player, route in routes.items():
            if player not in self.zone_of or route.zone not in self.world.procs:
                continue
            proc = self.world.procs[route.zone]
            if not proc.alive():
                continue
            moved = self.zone_of[player] != route.zone
            fresh = route.zone not in self.links
            if moved or fresh:
                self.zone_of[player] = route.zone
            link = await self.link(route.zone)
            if moved or fresh:
                link.up.put_nowait(zone_pb2.ZoneLinkUp(attach=zone_pb2.Attach(player_id=player)))

    def move(self, player: str, yaw: float, forward: float = 1.0) -> None:
        link = self.links.get(self.zone_of.get(player, ""))
        if link is None:
            return
        self.seq[player] = self.seq.get(player, 0) + 1
        inp = zone_pb2.PlayerInput(
            player_id=player, sequence=self.seq[player], move_z=forward, yaw=yaw, rtt_ms=20
        )
        link.up.put_nowait(zone_pb2.ZoneLinkUp(inputs=zone_pb2.InputBatch(inputs=[inp])))

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
            for p in players:
                pos = self.position(p)
                if pos is not None:
                    if pos[0] > xs[1]:
                        heading[p] = -math.pi / 2
                    elif pos[0] < xs[0]:
                        heading[p] = math.pi / 2
                self.move(p, heading[p])
            await asyncio.sleep(1 / 30)

    async def close(self) -> None:
        self._closing = True
        for link in list(self.links.values()):
            link.call.cancel()
            link.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await link.task
            await link.channel.close(None)
