"""Commands to zone processes over gRPC (tessera.v1.Zone SetBounds and Drain),
shared by the kopf operator and the local runtime.

The zone map in Redis is the declarative source of truth; these calls tell a
zone at once instead of waiting for it to notice a new map. A call that fails
(zone not up yet, restarting) is reported, not raised: the runtimes repeat it on
their next pass until the zone's heartbeat shows the change. Channels come from
the runtime's ``channel`` opener, so every call carries the operator's service
token (``service`` may call ``SetBounds`` and ``Drain``, docs/AUTH.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import grpc

from tessera.operator.planner.model import Desired, ZoneView
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc
from tessera.wire.bounds import to_bounds

log = logging.getLogger(__name__)


class ZoneControl:
    """One cached channel per zone address, opened by ``channel``."""

    def __init__(
        self, channel: Callable[[str], grpc.aio.Channel], *, timeout_s: float = 2.0
    ) -> None:
        self.open_channel = channel
        self.timeout_s = timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> zone_pb2_grpc.ZoneAsyncStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self.open_channel(address)
            self._channels[address] = channel
        return zone_pb2_grpc.ZoneStub(channel)

    async def set_bounds(self, address: str, bounds: common_pb2.Bounds, map_version: int) -> bool:
        """Tell the zone its new bounds; True if it accepted them."""
        try:
            await self._stub(address).SetBounds(
                zone_pb2.SetBoundsRequest(bounds=bounds, map_version=map_version),
                timeout=self.timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            log.warning(
                "SetBounds failed",
                extra={"address": address, "code": err.code().name, "detail": err.details()},
            )
            return False
        return True

    async def drain(
        self, address: str, *, world: str, target: str | None, deadline_s: float
    ) -> int | None:
        """Tell the zone to drain (into ``target``, or by position); the entities
        still to hand away, or None if the call failed."""
        request = zone_pb2.DrainRequest(deadline_s=deadline_s)
        if target:
            request.target.CopyFrom(common_pb2.ZoneRef(world=world, zone=target))
        try:
            response = await self._stub(address).Drain(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            log.warning(
                "Drain failed",
                extra={"address": address, "code": err.code().name, "detail": err.details()},
            )
            return None
        return int(response.remaining)

    async def converge(
        self,
        world: str,
        zones: Sequence[ZoneView],
        *,
        statuses: Mapping[str, zone_pb2.ZoneStatus],
        targets: Mapping[str, str | None],
        version: int,
        drain_deadline_s: float,
    ) -> None:
        """Tell zones what the zone map already says, when their heartbeat shows
        they have not acted on it yet: new bounds, or drain."""
        for z in zones:
            status = statuses.get(z.name)
            if status is None or not status.address:
                continue
            if z.desired == Desired.ACTIVE and z.bounds is not None:
                wanted = to_bounds(z.bounds)
                if not status.HasField("bounds") or status.bounds != wanted:
                    await self.set_bounds(status.address, wanted, version)
            elif z.desired == Desired.DRAINING and status.state not in (
                zone_pb2.ZONE_STATE_DRAINING,
                zone_pb2.ZONE_STATE_DRAINED,
            ):
                await self.drain(
                    status.address,
                    world=world,
                    target=targets.get(z.name),
                    deadline_s=drain_deadline_s,
                )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
