"""What the demo watches: zone heartbeats and the scaling event stream (read
with the shared readers of tessera.common.store), the relay's counters (as
service client ``demo-monitor``) and the ownership invariants."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from tessera.authclient.credentials import ServiceCredentials
from tessera.common import store
from tessera.common.store import Client
from tessera.v1 import relay_pb2, relay_pb2_grpc, zone_pb2
from tessera.zone import audit, invariants

STATES = {
    zone_pb2.ZONE_STATE_STARTING: "STARTING",
    zone_pb2.ZONE_STATE_STANDBY: "STANDBY",
    zone_pb2.ZONE_STATE_ACTIVE: "ACTIVE",
    zone_pb2.ZONE_STATE_DRAINING: "DRAINING",
    zone_pb2.ZONE_STATE_DRAINED: "DRAINED",
}


@dataclass
class ZoneSample:
    """One zone's heartbeat, reduced to what the demo shows."""

    name: str
    state: str
    bounds: tuple[float, float, float, float] | None
    players: int
    tick_p99_ms: float
    drain_remaining: int
    address: str
    xs: list[float] = field(default_factory=list)
    zs: list[float] = field(default_factory=list)
    instance: str = ""  # the match of an instance zone
    npcs: int = 0
    tick_hz: int = 30


@dataclass
class RelaySample:
    sessions: int = 0
    packets: int = 0
    bytes: int = 0
    reroutes: int = 0


def zone_sample(name: str, s: zone_pb2.ZoneStatus) -> ZoneSample:
    """A heartbeat as the sample the demo (and the scale run) shows."""
    b = s.bounds if s.HasField("bounds") else None
    return ZoneSample(
        name=name,
        state=STATES.get(s.state, "UNKNOWN"),
        bounds=(b.min_x, b.min_z, b.max_x, b.max_z) if b is not None else None,
        players=int(s.players),
        tick_p99_ms=float(s.tick_p99_ms),
        drain_remaining=int(s.drain_remaining),
        address=s.address,
        instance=s.instance,
        npcs=int(s.npcs),
        tick_hz=int(s.tick_hz) or 30,
        xs=[round(float(x), 1) for x in s.sample_x],
        zs=[round(float(z), 1) for z in s.sample_z],
    )


class Monitor:
    """Reads the world's state from Redis and the relay."""

    def __init__(
        self, redis_url: str, world: str, relay_address: str, credentials: ServiceCredentials
    ) -> None:
        self.redis: Client = store.connect(redis_url)
        self.world = world
        # The relay's status and the zones' entities need a service caller.
        self.credentials = credentials
        self.channel = credentials.channel_to(relay_address)
        self.relay: Any = relay_pb2_grpc.RelayStub(self.channel)
        self.event_id: str | None = None

    async def zones(self) -> list[ZoneSample]:
        """Every registered zone with a live heartbeat, by name."""
        statuses = await store.read_heartbeats(self.redis, self.world)
        return [zone_sample(name, status) for name, status in statuses.items()]

    async def events(self) -> list[dict[str, str]]:
        """Scaling events appended since the last call, oldest first."""
        entries = await store.read_events(self.redis, self.world, after=self.event_id)
        if entries:
            self.event_id = entries[-1][0]
        return [fields for _, fields in entries]

    async def relay_status(self) -> RelaySample:
        try:
            s = await self.relay.GetStatus(relay_pb2.GetRelayStatusRequest(), timeout=2.0)
        except grpc.aio.AioRpcError:
            return RelaySample()
        return RelaySample(
            sessions=sum(s.sessions.values()),
            packets=int(s.packets_in + s.packets_out),
            bytes=int(s.bytes_in + s.bytes_out),
            reroutes=int(s.reroutes),
        )

    async def invariants(self, timeout_s: float = 3.0) -> invariants.Report:
        """Scan every zone against the routing table (``tessera.zone.audit``),
        again with fresh heartbeats for up to ``timeout_s`` while it finds
        entities in flight: only a violation that persists (the same entity or
        player in every scan) is reported."""
        deadline = time.monotonic() + timeout_s
        persisting: invariants.Report | None = None
        while True:
            zones = await self.zones()
            addresses = {z.name: z.address for z in zones if z.address and z.state != "STANDBY"}
            report = await audit.scan(
                self.redis, self.world, addresses, channel=self.credentials.zone_channel
            )
            persisting = report if persisting is None else invariants.persisting(persisting, report)
            if persisting.ok or time.monotonic() >= deadline:
                return persisting
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        await self.channel.close(None)
        await self.credentials.close()
        await self.redis.aclose()
