"""Placement on a real Redis with scripted zone links (no zone processes): a
transfer leaves the live zone before joining the destination, and a transfer
whose Join fails is undone in the zone the player left, else wherever the
ordinary join path takes them, else not at all; what failed zone calls mean; and
an expected removal is forgotten only when its Leave surely did nothing."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from redis.asyncio import Redis

from tessera.common.errors import DETAIL_KEY
from tessera.common.store import WorldKeys
from tessera.relay.errors import Rejected
from tessera.relay.metrics import Counters
from tessera.relay.placement import (
    Adopted,
    Placed,
    Placement,
    Returned,
    Stranded,
    TransferUndone,
    destination_join_failure,
    join_failure,
    join_request,
    leave_removed_nothing,
    served_by_other_relay,
    why_failed,
)
from tessera.relay.store import RelayStore
from tessera.relay.upstream import UpstreamUnavailable, ZoneLink
from tessera.v1 import common_pb2, zone_pb2
from tessera.wire.connect_token import MatchContext

KEYS = WorldKeys("w")
Code = grpc.StatusCode


def rpc_error(code: grpc.StatusCode, reason: str = "") -> grpc.aio.AioRpcError:
    detail = common_pb2.ErrorDetail(reason=reason).SerializeToString()
    trailers = grpc.aio.Metadata((DETAIL_KEY, detail)) if reason else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, "x", "")


class Handler:
    def on_snapshots(self, *args: object) -> None: ...
    def on_event(self, *args: object) -> None: ...
    def on_handover(self, *args: object) -> None: ...
    async def on_link_up(self, *args: object) -> None: ...
    def on_link_down(self, *args: object) -> None: ...
    def on_link_resumed(self, *args: object) -> None: ...
    def on_shed(self, *args: object) -> None: ...


async def no_address(zone: str) -> str | None:
    return None


class ScriptedLink(ZoneLink):
    """A link whose zone answers Join and Leave from a script: ``join_error``
    refuses every Join, ``leave_errors`` the next Leaves (one each), and
    ``on_leave`` runs on a Leave that succeeds (e.g. the route removal a real zone
    makes). Never connects."""

    def __init__(
        self,
        zone: str,
        *,
        join_error: Exception | None = None,
        on_leave: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        super().__init__(zone, relay_id="r1", resolve=no_address, handler=Handler())
        self.join_error = join_error
        self.leave_errors: list[Exception] = []
        self.on_leave = on_leave
        self.calls: list[str] = []
        self.requests: list[zone_pb2.JoinRequest] = []

    async def ready(self) -> None:
        return None

    async def join(self, request: zone_pb2.JoinRequest) -> zone_pb2.JoinResponse:
        self.calls.append(f"join {request.player_id}")
        self.requests.append(request)
        if self.join_error is not None:
            raise self.join_error
        return zone_pb2.JoinResponse(entity_id=42, epoch=9)

    async def leave(self, player: str, relay_id: str = "") -> None:
        self.calls.append(f"leave {player}" + (f" as {relay_id}" if relay_id else ""))
        if self.leave_errors:
            raise self.leave_errors.pop(0)
        if self.on_leave is not None:
            await self.on_leave(player)


class World:
    """Scripted links by zone, and the placement that uses them."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.links: dict[str, ScriptedLink] = {}
        self.counters = Counters()
        self.placement = Placement(
            relay_id="r1",
            rpc_timeout_s=3.0,
            store=RelayStore(redis, "w"),
            link=self.links.__getitem__,
            counters=self.counters,
        )

    async def zone(
        self,
        name: str,
        *,
        state: zone_pb2.ZoneState.ValueType = zone_pb2.ZONE_STATE_ACTIVE,
        instance: str = "",
        join_error: Exception | None = None,
    ) -> ScriptedLink:
        """A registered zone with a heartbeat; its Leave removes the player's route,
        as a zone does."""
        status = zone_pb2.ZoneStatus(state=state, instance=instance, address="127.0.0.1:1")
        await self.redis.sadd(KEYS.zones, name)
        await self.redis.set(KEYS.zone_status(name), status.SerializeToString())
        link = ScriptedLink(name, join_error=join_error, on_leave=self.release_route)
        self.links[name] = link
        return link

    async def release_route(self, player: str) -> None:
        await self.redis.hdel(KEYS.routes, player)


@pytest.fixture
async def world(redis: Redis) -> World:
    return World(redis)


async def test_a_transfer_leaves_the_live_zone_then_joins_the_destination(world: World) -> None:
    source = await world.zone("zone-a")
    destination = await world.zone("inst-x", instance="match-1")
    await world.redis.hset(KEYS.routes, "alice", "zone-a|3")
    placed = await world.placement.place("alice", "inst-x")
    assert placed == Placed(destination, zone_pb2.JoinResponse(entity_id=42, epoch=9))
    assert source.calls == ["leave alice"] and destination.calls == ["join alice"]
    assert world.counters.transfers == 1
    # The removal that Leave announced is this relay's own, once.
    assert world.placement.own_removal("alice", time.monotonic())
    assert not world.placement.own_removal("alice", time.monotonic())


async def test_a_route_to_the_destination_or_to_a_dead_zone_needs_no_leave(world: World) -> None:
    destination = await world.zone("inst-x", instance="match-1")
    for route in ("inst-x|3", "gone|3"):
        await world.redis.hset(KEYS.routes, "alice", route)
        await world.placement.place("alice", "inst-x")
    assert destination.calls == ["join alice", "join alice"]
    assert world.counters.transfers == 0


async def test_an_open_world_destination_only_places_a_player_with_no_live_zone(
    world: World,
) -> None:
    home = await world.zone("zone-a")
    booked = await world.zone("zone-b")
    await world.redis.hset(KEYS.routes, "alice", "zone-a|3")
    assert (await world.placement.place("alice", "zone-b")).link is home
    assert (await world.placement.place("bob", "zone-b")).link is booked
    assert home.calls == ["join alice"] and booked.calls == ["join bob"]


async def test_a_refused_transfer_returns_the_player_to_the_zone_they_left(world: World) -> None:
    source = await world.zone("zone-a")
    await world.zone("inst-x", instance="match-1", join_error=rpc_error(Code.PERMISSION_DENIED))
    await world.redis.hset(KEYS.routes, "alice", "zone-a|3")
    with pytest.raises(TransferUndone) as info:
        await world.placement.place("alice", "inst-x")
    assert info.value.reason == "join_failed"
    assert info.value.rollback == Returned(source)
    assert source.calls == ["leave alice", "join alice"]
    assert world.counters.transfers == 0


def test_a_join_request_carries_the_match_context_with_team_from_one() -> None:
    plain = join_request("alice", "r1", None)
    assert (plain.player_id, plain.relay_id, plain.team, plain.match_id, plain.role) == (
        "alice",
        "r1",
        0,
        "",
        "",
    )
    matched = join_request("alice", "r1", MatchContext("match-1", 0, "tank"))
    assert (matched.team, matched.match_id, matched.role) == (1, "match-1", "tank")
    assert join_request("bob", "r1", MatchContext("match-1", 255)).team == 256


async def test_the_match_context_goes_to_the_destination_never_back(world: World) -> None:
    """A transfer's Join carries the token's match context; the Join that undoes a
    refused transfer does not (the match was the destination's)."""
    source = await world.zone("zone-a")
    refused = rpc_error(Code.PERMISSION_DENIED)
    destination = await world.zone("inst-x", instance="match-1", join_error=refused)
    await world.redis.hset(KEYS.routes, "alice", "zone-a|3")
    match = MatchContext("match-1", 1, "healer")
    with pytest.raises(TransferUndone):
        await world.placement.place("alice", "inst-x", match)
    (tried,) = destination.requests
    assert (tried.match_id, tried.team, tried.role) == ("match-1", 2, "healer")
    (back,) = source.requests
    assert (back.match_id, back.team, back.role) == ("", 0, "")
    # Without a destination the ordinary Join carries it (an open-world match).
    await world.redis.hset(KEYS.routes, "bob", "zone-a|1")
    await world.placement.place("bob", "", MatchContext("match-2", 0))
    assert (source.requests[-1].match_id, source.requests[-1].team) == ("match-2", 1)


async def test_a_transfer_the_left_zone_refuses_to_undo_is_adopted_elsewhere(
    world: World,
) -> None:
    draining = zone_pb2.ZONE_STATE_DRAINING
    refused = rpc_error(Code.FAILED_PRECONDITION, "DRAINING")
    source = await world.zone("zone-a", state=draining, join_error=refused)
    other = await world.zone("zone-b")
    await world.zone("inst-x", instance="match-1", join_error=rpc_error(Code.UNAVAILABLE))
    await world.redis.hset(KEYS.routes, "alice", "zone-a|3")
    with pytest.raises(TransferUndone) as info:
        await world.placement.place("alice", "inst-x")
    assert info.value.reason == "zone_unavailable"
    rollback = info.value.rollback
    assert isinstance(rollback, Adopted) and rollback.placed.link is other
    assert source.calls == ["leave alice", "join alice"] and other.calls == ["join alice"]


async def test_a_transfer_no_zone_takes_back_is_stranded(world: World) -> None:
    draining = zone_pb2.ZONE_STATE_DRAINING
    refused = rpc_error(Code.FAILED_PRECONDITION, "DRAINING")
    await world.zone("zone-a", state=draining, join_error=refused)
    await world.zone("inst-x", instance="match-1", join_error=rpc_error(Code.UNAVAILABLE))
    await world.redis.hset(KEYS.routes, "alice", "zone-a|3")
    with pytest.raises(TransferUndone) as info:
        await world.placement.place("alice", "inst-x")
    assert info.value.rollback == Stranded("no active zone in this world")


async def test_a_leave_that_fails_moves_nothing_and_keeps_its_removal_if_it_may_have_run(
    world: World,
) -> None:
    source = await world.zone("zone-a")
    destination = await world.zone("inst-x", instance="match-1")
    await world.redis.hset(KEYS.routes, "alice", "zone-a|3")
    for error, expected in (
        (rpc_error(Code.NOT_FOUND), False),
        (rpc_error(Code.DEADLINE_EXCEEDED), True),
    ):
        source.leave_errors = [error]
        with pytest.raises(Rejected) as info:
            await world.placement.place("alice", "inst-x")
        assert not isinstance(info.value, TransferUndone)
        assert info.value.reason == "zone_unavailable" and "cannot leave zone zone-a" in str(
            info.value
        )
        assert world.placement.own_removal("alice", time.monotonic()) is expected
    assert destination.calls == []


async def test_a_leave_refused_for_another_relay_claims_the_player_first(world: World) -> None:
    """The player's last Join came through another relay: this one claims them
    with a Join on the zone they are in, then leaves."""
    source = await world.zone("zone-a")
    await world.zone("inst-x", instance="match-1")
    await world.redis.hset(KEYS.routes, "alice", "zone-a|3")
    source.leave_errors = [rpc_error(Code.FAILED_PRECONDITION, "SERVED_BY_OTHER_RELAY")]
    await world.placement.place("alice", "inst-x")
    assert source.calls == ["leave alice", "join alice", "leave alice"]
    assert world.counters.transfers == 1


async def test_without_a_route_an_unreachable_zone_is_skipped(world: World) -> None:
    # Equally loaded: zone-a, first by name, is chosen first.
    unreachable = await world.zone("zone-a", join_error=UpstreamUnavailable("down"))
    fallback = await world.zone("zone-b")
    assert (await world.placement.place("alice")).link is fallback
    assert unreachable.calls == ["join alice"]


async def test_a_routed_zone_that_is_unreachable_refuses_the_session(world: World) -> None:
    await world.zone("zone-a", join_error=UpstreamUnavailable("zone-a is down"))
    await world.zone("zone-b")
    await world.redis.hset(KEYS.routes, "alice", "zone-a|3")
    with pytest.raises(Rejected) as info:
        await world.placement.place("alice")
    assert (info.value.reason, str(info.value)) == ("zone_unavailable", "zone-a is down")


async def test_no_active_zone_refuses_the_session(world: World) -> None:
    with pytest.raises(Rejected) as info:
        await world.placement.place("alice")
    assert info.value.reason == "no_zone"


async def test_rejoin_reports_the_players_a_reconnected_zone_refused(world: World) -> None:
    link = await world.zone("zone-a")
    assert await world.placement.rejoin(link, ["a", "b"]) == {
        "a": zone_pb2.JoinResponse(entity_id=42, epoch=9),
        "b": zone_pb2.JoinResponse(entity_id=42, epoch=9),
    }
    link.join_error = rpc_error(Code.FAILED_PRECONDITION)
    assert await world.placement.rejoin(link, ["a"]) == {"a": None}


def test_only_a_leave_that_surely_did_nothing_forgets_its_removal() -> None:
    """A Leave never sent, or answered NOT_FOUND / FAILED_PRECONDITION, removed
    nothing. One that timed out or lost its connection may have released the
    route: its expected removal stays (and lapses), so the removal, when it
    comes, is not taken for another connection's."""
    served = rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "SERVED_BY_OTHER_RELAY")
    assert leave_removed_nothing(UpstreamUnavailable("down"))
    assert leave_removed_nothing(rpc_error(grpc.StatusCode.NOT_FOUND, "UNKNOWN_PLAYER"))
    assert leave_removed_nothing(served)
    assert not leave_removed_nothing(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert not leave_removed_nothing(rpc_error(grpc.StatusCode.UNAVAILABLE))
    assert not leave_removed_nothing(rpc_error(grpc.StatusCode.CANCELLED))
    assert served_by_other_relay(served)
    assert not served_by_other_relay(rpc_error(grpc.StatusCode.FAILED_PRECONDITION))
    assert not served_by_other_relay(UpstreamUnavailable("down"))


@pytest.mark.parametrize(
    ("error", "routed", "verdict"),
    [
        (UpstreamUnavailable("down"), True, "zone_unavailable"),
        (UpstreamUnavailable("down"), False, "skip"),
        (rpc_error(Code.UNAVAILABLE), False, "skip"),
        (rpc_error(Code.UNAVAILABLE), True, "join_failed"),
        (rpc_error(Code.FAILED_PRECONDITION), True, "retry"),
        (rpc_error(Code.FAILED_PRECONDITION), False, "retry"),
        (rpc_error(Code.ABORTED), True, "join_failed"),
        (rpc_error(Code.DEADLINE_EXCEEDED), False, "join_failed"),
        (rpc_error(Code.PERMISSION_DENIED), True, "join_failed"),
        (rpc_error(Code.RESOURCE_EXHAUSTED), False, "join_failed"),
    ],
)
def test_what_a_failed_join_on_the_routed_or_chosen_zone_means(
    error: Exception, routed: bool, verdict: str
) -> None:
    assert join_failure(error, routed=routed) == verdict


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (UpstreamUnavailable("down"), "zone_unavailable"),
        (rpc_error(Code.FAILED_PRECONDITION), "retry"),
        (rpc_error(Code.ABORTED), "retry"),
        (rpc_error(Code.UNAVAILABLE), "zone_unavailable"),
        (rpc_error(Code.DEADLINE_EXCEEDED), "zone_unavailable"),
        (rpc_error(Code.PERMISSION_DENIED), "join_failed"),
        (rpc_error(Code.RESOURCE_EXHAUSTED), "join_failed"),
        (rpc_error(Code.INVALID_ARGUMENT), "join_failed"),
    ],
)
def test_what_a_failed_join_on_a_destination_means(error: Exception, verdict: str) -> None:
    assert destination_join_failure(error) == verdict


def test_why_a_zone_call_failed() -> None:
    assert why_failed(UpstreamUnavailable("zone-a is down")) == "zone-a is down"
    assert why_failed(rpc_error(Code.NOT_FOUND)) == "x"
    no_details = grpc.aio.AioRpcError(
        Code.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "", ""
    )
    assert why_failed(no_details) == "UNAVAILABLE"


async def test_an_orphan_is_released_in_its_routes_zone_naming_the_gone_relay(
    world: World,
) -> None:
    zone = await world.zone("zone-b")
    await world.redis.hset(KEYS.routes, "alice", "zone-b|4")
    assert await world.placement.release_orphan("alice", "dead-relay")
    assert zone.calls == ["leave alice as dead-relay"]
    assert await world.redis.hget(KEYS.routes, "alice") is None
    # The removal it announces is this relay's own (no session elsewhere ends).
    assert world.placement.own_removal("alice", time.monotonic())
    # No route: nothing to release. Back through another relay: the zone refuses.
    assert not await world.placement.release_orphan("alice", "dead-relay")
    await world.redis.hset(KEYS.routes, "bob", "zone-b|4")
    zone.leave_errors.append(rpc_error(Code.FAILED_PRECONDITION, "SERVED_BY_OTHER_RELAY"))
    assert not await world.placement.release_orphan("bob", "dead-relay")
    assert await world.redis.hget(KEYS.routes, "bob") == b"zone-b|4"
    assert not world.placement.own_removal("bob", time.monotonic())
