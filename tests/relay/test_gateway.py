"""Gateway routing logic on a real Redis (no zone processes needed): re-routes
move a player between links exactly once, replay its last inputs, and snapshots
from a zone the player left are dropped; tokens for another world or for a zone
that is not up are refused before anything moves; route removals of this
relay's own Leaves end nothing, and a reconnection waits for the ended session's
Leave. One test starts a real zone process: the warm link a relay opens to a zone
of the registry before any player is routed there."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from tessera.common import tls
from tessera.common.process import free_port
from tessera.common.store import Client, WorldKeys, connect
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import World, ZoneSpec
from tessera.relay import resume
from tessera.relay.admission import Grant
from tessera.relay.errors import Rejected
from tessera.relay.gateway import MAX_ACTION_ARGS, RESUME_RETRY_S, Gateway, GatewayConfig
from tessera.relay.metrics import Counters
from tessera.relay.routing import Route
from tessera.relay.session import Session
from tessera.relay.store import RelayStore
from tessera.relay.upstream import call_bound_s
from tessera.v1 import common_pb2, relay_pb2, zone_pb2
from tessera.wire.connect_token import ConnectGrant, new_token_id
from tessera.wire.geometry import Rect


def refuse(token: bytes, now: float) -> Grant:
    raise Rejected("malformed", "not used here")


@pytest.fixture
async def gateway(redis: Redis) -> AsyncIterator[Gateway]:
    gw = Gateway(
        GatewayConfig(relay_id="r1", world="w"),
        store=RelayStore(redis, "w"),
        opener=refuse,
        counters=Counters(),
    )
    yield gw
    await gw.close_all()


def add_session(gw: Gateway, player: str, zone: str, epoch: int) -> tuple[Session, list[bytes]]:
    sent: list[bytes] = []
    now = time.monotonic()
    session = Session(
        player_id=player,
        transport="udp",
        token_id=b"t",
        timeout_s=10.0,
        created=now,
        last_seen=now,
        send=sent.append,
        post=sent.append,
        zone=zone,
        epoch=epoch,
    )
    gw.sessions.add(session)
    gw.routes.update(player, Route(zone, epoch))
    gw.link(zone).attach(player)
    return session, sent


def outbox_kinds(gw: Gateway, zone: str) -> list[str]:
    link = gw.links[zone]
    link._close_batch()
    return [str(m.WhichOneof("msg")) for m in link._outbox]


def inputs_message(*seqs: int) -> relay_pb2.ClientMessage:
    return relay_pb2.ClientMessage(
        inputs=relay_pb2.ClientInputs(
            inputs=[relay_pb2.ClientInput(sequence=s, move_x=1.0) for s in seqs]
        )
    )


async def test_reroute_moves_player_once_and_replays_inputs(gateway: Gateway) -> None:
    session, _ = add_session(gateway, "alice", "zone-a", 1)
    gateway.handle(session, inputs_message(1, 2, 3), time.perf_counter())
    gateway.reroute("alice", Route("zone-b", 2))
    assert session.zone == "zone-b" and session.epoch == 2
    assert "alice" not in gateway.links["zone-a"].attached
    assert "alice" in gateway.links["zone-b"].attached
    assert outbox_kinds(gateway, "zone-b") == ["attach", "inputs"]
    replayed = gateway.links["zone-b"]._outbox[1].inputs.inputs
    assert [i.sequence for i in replayed] == [1, 2, 3]
    assert {i.player_id for i in replayed} == {"alice"}
    assert gateway.counters.reroutes == 1
    # The same change again (pub/sub after Handover) and an older one are no-ops.
    gateway.reroute("alice", Route("zone-b", 2))
    gateway.on_route_change("alice", Route("zone-a", 1))
    assert session.zone == "zone-b" and gateway.counters.reroutes == 1
    # Changes for players of other relays are ignored.
    gateway.on_route_change("bob", Route("zone-a", 9))
    assert "bob" not in gateway.sessions.by_player


async def test_snapshots_only_from_the_current_zone(gateway: Gateway) -> None:
    _, sent = add_session(gateway, "alice", "zone-a", 1)
    batch = zone_pb2.SnapshotBatch(
        tick=7,
        server_time_ms=1.0,
        snapshots=[zone_pb2.PlayerSnapshot(player_id="alice", stream=3, sequence=1, payload=b"x")],
    )
    gateway.on_snapshots(gateway.links["zone-a"], batch, time.perf_counter())
    assert len(sent) == 1
    message = relay_pb2.ServerMessage.FromString(sent[0])
    assert (message.snapshot.tick, message.snapshot.stream, message.snapshot.payload) == (
        7,
        3,
        b"x",
    )
    gateway.reroute("alice", Route("zone-b", 2))
    gateway.on_snapshots(gateway.links["zone-a"], batch, time.perf_counter())
    assert len(sent) == 1
    assert gateway.counters.drops["snapshot_unrouted"] == 1
    gateway.on_snapshots(gateway.links["zone-b"], batch, time.perf_counter())
    assert len(sent) == 2


async def test_each_snapshot_of_a_batch_is_its_own_message(gateway: Gateway) -> None:
    """The message reused across a batch carries each snapshot's fields only: a
    full snapshot (baseline 0) or an empty payload after a delta is sent as such."""
    sent = {p: add_session(gateway, p, "zone-a", 1)[1] for p in ("alice", "bob", "carol")}
    snapshots = [
        zone_pb2.PlayerSnapshot(player_id="alice", stream=3, sequence=9, baseline=7, payload=b"ab"),
        zone_pb2.PlayerSnapshot(player_id="bob", stream=4, sequence=1),
        zone_pb2.PlayerSnapshot(player_id="nobody", stream=5, sequence=2, payload=b"x"),
        zone_pb2.PlayerSnapshot(player_id="carol", sequence=3, baseline=2, payload=b"c"),
    ]
    batch = zone_pb2.SnapshotBatch(tick=11, server_time_ms=42.5, snapshots=snapshots)
    batches = REGISTRY.get_sample_value("tessera_relay_link_batch_snapshots_count") or 0.0
    total = REGISTRY.get_sample_value("tessera_relay_link_batch_snapshots_sum") or 0.0
    gateway.on_snapshots(gateway.links["zone-a"], batch, time.perf_counter())
    # The batch is counted with its size (the zone's chunks, or whole ticks when behind).
    assert REGISTRY.get_sample_value("tessera_relay_link_batch_snapshots_count") == batches + 1
    assert REGISTRY.get_sample_value("tessera_relay_link_batch_snapshots_sum") == total + 4
    for snap in snapshots[:2] + snapshots[3:]:
        expected = relay_pb2.ServerMessage(
            snapshot=relay_pb2.Snapshot(
                stream=snap.stream,
                sequence=snap.sequence,
                baseline=snap.baseline,
                tick=11,
                server_time_ms=42.5,
                payload=snap.payload,
            )
        )
        assert sent[snap.player_id] == [expected.SerializeToString()]
    assert gateway.counters.drops["snapshot_unrouted"] == 1


async def test_a_route_removal_by_another_connection_ends_the_session(
    gateway: Gateway,
) -> None:
    """A removal ("<player>||0") is published only by a zone's Leave. One this
    relay did not ask for means the player left through another connection: the
    session here ends with REPLACED and its zone link no longer carries the
    player, so the route change that follows cannot attach it anywhere."""
    stale, sent = add_session(gateway, "alice", "zone-a", 4)
    gateway.on_route_change("alice", None)
    assert stale.closed and "alice" not in gateway.sessions.by_player
    goodbye = relay_pb2.ServerMessage.FromString(sent[-1]).disconnected
    assert goodbye.reason == "REPLACED"
    assert gateway.links["zone-a"].attached == set()
    gateway.on_route_change("alice", Route("inst-x", 5))
    assert "inst-x" not in gateway.links
    gateway.on_route_change("nobody", None)  # not ours


async def test_a_route_removal_of_this_relays_own_leave_ends_nothing(
    gateway: Gateway,
) -> None:
    """This relay's own Leave for a transfer announces a removal while the
    player's session here lives on (it moves to the destination): that removal
    ends nothing; the next one, not expected, does."""
    current, sent = add_session(gateway, "alice", "zone-a", 5)
    gateway.placement.own_leaves.expect("alice", time.monotonic())  # a transfer's Leave
    gateway.on_route_change("alice", None)
    assert not current.closed and sent == []
    gateway.on_route_change("alice", None)  # nothing expected any more
    assert current.closed


async def test_a_new_session_joins_only_after_the_leave_of_the_one_that_ended(
    redis: Redis,
) -> None:
    """A session this relay ends leaves its zone in the background. A new session
    of the same player joins only after that Leave: joined first, it would find
    the player still in the zone (a no-op) and the Leave would then take them
    from it. Here zone-a never comes up, so the Leave and then the Join each wait
    out the 0.2 s bound for the link."""
    gw = Gateway(
        GatewayConfig(relay_id="r1", world="w", rpc_timeout_s=0.2),
        store=RelayStore(redis, "w"),
        opener=refuse,
        counters=Counters(),
    )
    try:
        await redis.hset(WorldKeys("w").routes, "alice", "zone-a|4")
        ended, _ = add_session(gw, "alice", "zone-a", 4)
        gw.close(ended, "IDLE_TIMEOUT", "idle")
        leave = gw.placement.leaving["alice"]
        started = time.monotonic()
        with pytest.raises(Rejected) as info:
            await gw.open_session(grant_for(), transport="udp", send=lambda _payload: None)
        assert info.value.reason == "zone_unavailable"
        assert time.monotonic() - started >= 0.35
        assert leave.done() and "alice" not in gw.placement.leaving
        # That Leave was never sent: no removal is expected of it any more.
        assert not gw.placement.own_leaves.claim("alice", time.monotonic())
    finally:
        await gw.close_all()


async def test_an_expected_removal_outlives_the_slowest_leave(gateway: Gateway) -> None:
    """A Leave may wait for its link and then for the RPC, each up to the RPC
    timeout: its removal stays expected longer than that."""
    slowest = call_bound_s(gateway.config.rpc_timeout_s)
    assert slowest == 2 * gateway.config.rpc_timeout_s
    assert gateway.placement.own_leaves.ttl_s > slowest
    gateway.placement.own_leaves.expect("alice", 0.0)
    assert gateway.placement.own_leaves.claim("alice", slowest + 1.0)


async def test_handover_message_reroutes(gateway: Gateway) -> None:
    session, _ = add_session(gateway, "alice", "zone-a", 4)
    handover = zone_pb2.Handover(player_id="alice", epoch=5)
    handover.to.world, handover.to.zone = "w", "zone-c"
    gateway.on_handover(gateway.links["zone-a"], handover)
    assert session.zone == "zone-c"


async def test_stalled_link_reroutes_from_redis_then_times_out(
    gateway: Gateway, redis: Redis
) -> None:
    keys = WorldKeys("w")
    moved, _ = add_session(gateway, "alice", "zone-a", 1)
    stuck, stuck_sent = add_session(gateway, "bob", "zone-a", 1)
    link = gateway.links["zone-a"]
    assert not link.connected and link.down_since is not None
    await redis.hset(keys.routes, "alice", "zone-b|2")
    now = link.down_since + 1.0
    await gateway.sweep(now)
    assert moved.zone == "zone-b" and stuck.zone == "zone-a"
    later = link.down_since + gateway.config.upstream_timeout_s + 1
    moved.last_seen = stuck.last_seen = later  # the clients keep sending
    gateway.links["zone-b"].down_since = later  # zone-b's link is only just starting
    await gateway.sweep(later)
    assert stuck.closed and "bob" not in gateway.sessions.by_player
    goodbye = relay_pb2.ServerMessage.FromString(stuck_sent[-1])
    assert goodbye.disconnected.reason == "ZONE_UNAVAILABLE"
    assert not moved.closed


async def test_idle_sessions_closed_and_kick(gateway: Gateway) -> None:
    idle, idle_sent = add_session(gateway, "idle", "zone-a", 1)
    _, kicked_sent = add_session(gateway, "kicked", "zone-a", 1)
    idle.last_seen -= 60
    await gateway.sweep(time.monotonic())
    assert idle.closed
    assert relay_pb2.ServerMessage.FromString(idle_sent[-1]).disconnected.reason == "IDLE_TIMEOUT"
    assert gateway.kick("kicked", "cheating")
    assert not gateway.kick("nobody", "")
    assert relay_pb2.ServerMessage.FromString(kicked_sent[-1]).disconnected.message == "cheating"
    assert len(gateway.sessions) == 0
    assert gateway.links["zone-a"].attached == set()


async def test_session_ends_counted_once_by_reason(gateway: Gateway) -> None:
    idle, _ = add_session(gateway, "idle", "zone-a", 1)
    add_session(gateway, "kicked", "zone-a", 1)
    idle.last_seen -= 60
    await gateway.sweep(time.monotonic())
    await gateway.sweep(time.monotonic())
    assert gateway.kick("kicked", "cheating")
    assert not gateway.kick("kicked", "again")
    gateway.close(idle, "KICKED", "already closed")
    assert gateway.counters.session_ends == {"IDLE_TIMEOUT": 1, "KICKED": 1}


async def test_too_many_inputs_dropped(gateway: Gateway) -> None:
    session, _ = add_session(gateway, "alice", "zone-a", 1)
    gateway.handle(session, inputs_message(*range(1, 10)), time.perf_counter())
    assert gateway.counters.drops["too_many_inputs"] == 1
    assert outbox_kinds(gateway, "zone-a") == ["attach"]


async def test_actions_go_to_the_zone_as_the_sessions_player_in_order_with_inputs(
    gateway: Gateway,
) -> None:
    session, _ = add_session(gateway, "alice", "zone-a", 1)
    action = relay_pb2.GameAction(id=5, args=[2.0, 3.0])
    gateway.handle(session, inputs_message(1), time.perf_counter())
    gateway.handle(session, relay_pb2.ClientMessage(action=action), time.perf_counter())
    gateway.handle(session, inputs_message(2), time.perf_counter())
    oversized = relay_pb2.GameAction(id=5, args=[0.0] * (MAX_ACTION_ARGS + 1))
    gateway.handle(session, relay_pb2.ClientMessage(action=oversized), time.perf_counter())
    assert gateway.counters.drops["action_too_large"] == 1
    assert outbox_kinds(gateway, "zone-a") == ["attach", "inputs", "action", "inputs"]
    sent = gateway.links["zone-a"]._outbox[2].action
    assert (sent.player_id, sent.action_id, list(sent.args)) == ("alice", 5, [2.0, 3.0])


async def test_ping_answered_in_session(gateway: Gateway) -> None:
    session, sent = add_session(gateway, "alice", "zone-a", 1)
    ping = relay_pb2.ClientMessage(ping=relay_pb2.Ping(id=9, client_time_ms=5.0))
    gateway.handle(session, ping, time.perf_counter())
    pong = relay_pb2.ServerMessage.FromString(sent[-1]).pong
    assert (pong.id, pong.client_time_ms) == (9, 5.0) and pong.server_time_ms > 0


def grant_for(world: str = "", zone: str = "") -> ConnectGrant:
    now = int(time.time())
    return ConnectGrant(
        token_id=new_token_id(),
        player_id="alice",
        session_id="s",
        relay_addresses=("127.0.0.1:7777",),
        client_to_server_key=b"\x01" * 32,
        server_to_client_key=b"\x02" * 32,
        issued_at=now,
        expires_at=now + 30,
        timeout_s=10,
        world=world,
        zone=zone,
    )


async def test_a_token_for_another_world_is_refused_and_not_spent(redis: Redis) -> None:
    grants = {b"here": grant_for("w"), b"any": grant_for(""), b"there": grant_for("elsewhere")}
    gw = Gateway(
        GatewayConfig(relay_id="r1", world="w"),
        store=RelayStore(redis, "w"),
        opener=lambda token, now: grants[token],
        counters=Counters(),
    )
    assert await gw.admission.admit(b"here", time.time()) is grants[b"here"]
    assert await gw.admission.admit(b"any", time.time()) is grants[b"any"]
    with pytest.raises(Rejected) as info:
        await gw.admission.admit(b"there", time.time())
    assert info.value.reason == "wrong_world" and "elsewhere" in str(info.value)
    store = gw.store
    assert await redis.exists(store.spent_token_key(grants[b"there"].token_id)) == 0
    for name in (b"here", b"any"):
        assert await redis.exists(store.spent_token_key(grants[name].token_id)) == 1


async def test_a_destination_zone_that_is_not_up_is_refused_before_anything_moves(
    gateway: Gateway, redis: Redis
) -> None:
    keys = WorldKeys("w")
    await redis.hset(keys.routes, "alice", "zone-a|3")
    draining = zone_pb2.ZoneStatus(state=zone_pb2.ZONE_STATE_DRAINING, address="127.0.0.1:1")
    await redis.set(keys.zone_status("inst-draining"), draining.SerializeToString())
    for zone in ("inst-missing", "inst-draining"):
        with pytest.raises(Rejected) as info:
            await gateway.open_session(
                grant_for("w", zone), transport="udp", send=lambda _payload: None
            )
        assert info.value.reason == "zone_unavailable" and zone in str(info.value)
    # No link was opened, no session made, the route is untouched.
    assert gateway.links == {} and len(gateway.sessions) == 0
    assert await redis.hget(keys.routes, "alice") == b"zone-a|3"
    assert gateway.counters.transfers == 0


async def test_revocation_ends_the_sessions_of_that_login_and_refuses_its_tokens(
    redis: Redis,
) -> None:
    revoked = grant_for("w")  # issued in auth session "s"
    gw = Gateway(
        GatewayConfig(relay_id="r1", world="w"),
        store=RelayStore(redis, "w"),
        opener=lambda token, now: revoked,
        counters=Counters(),
    )
    try:
        session, sent = add_session(gw, "alice", "zone-a", 1)
        session.session_id = "s"
        other, other_sent = add_session(gw, "bob", "zone-a", 1)
        other.session_id = "other"
        gw.revoke("s", time.time() + 60)
        assert session.closed and "alice" not in gw.sessions.by_player
        goodbye = relay_pb2.ServerMessage.FromString(sent[-1])
        assert goodbye.disconnected.reason == "REVOKED"
        assert "alice" not in gw.links["zone-a"].attached
        assert not other.closed and other_sent == []
        with pytest.raises(Rejected) as info:
            await gw.admission.admit(b"revoked", time.time())
        assert info.value.reason == "revoked"
        # Refused before it was spent.
        assert await redis.exists(gw.store.spent_token_key(revoked.token_id)) == 0
        # Once no token of the session can verify any more, the revocation is forgotten.
        gw.revoke("old", time.time() - 1)
        gw.admission.prune()
        assert set(gw.admission.revoked) == {"s"}
    finally:
        await gw.close_all()


async def test_presence_records_sessions_and_takes_over_gone_relays(
    gateway: Gateway, redis: Redis
) -> None:
    store = gateway.store
    now = time.time()
    # Left by this relay id's previous run, and by a relay silent for 100 s.
    await redis.hset(store.relay_players_key("r1"), "zed", "zone-a")
    await redis.hset(store.relays_key, mapping={"old": repr(now - 100), "live": repr(now - 1)})
    await redis.hset(store.relay_players_key("old"), "bob", "zone-a")
    await redis.hset(store.relay_players_key("live"), "carol", "zone-a")
    session, _ = add_session(gateway, "alice", "zone-a", 1)
    gateway.presence.changes["alice"] = "zone-a"
    await gateway.presence.update(now)
    assert gateway.presence.leftovers == {"zed": now + gateway.config.orphan_grace_s}
    assert await redis.hgetall(store.relay_players_key("r1")) == {b"alice": b"zone-a"}
    # The silent relay's record is taken (bob has no route: nothing to release);
    # the live one's is untouched.
    assert await redis.exists(store.relay_players_key("old")) == 0
    assert set(await store.relays_seen()) == {"r1", "live"}
    assert await redis.hgetall(store.relay_players_key("live")) == {b"carol": b"zone-a"}
    assert gateway.counters.orphans_released == 0
    gateway.close(session, "KICKED", "bye", leave=False)
    await gateway.presence.update(now + 1)
    assert await redis.exists(store.relay_players_key("r1")) == 0


async def test_a_resume_credential_works_once_only_if_newest_and_never_when_revoked(
    redis: Redis,
) -> None:
    """Bad input: forged, expired, replayed, superseded, wrong-world and revoked
    credentials are refused with their reason (the UDP endpoint drops them
    without reply); a credential whose resume failed can be used again."""
    key = resume.derive_key(os.urandom(32))
    here = Gateway(
        GatewayConfig(relay_id="a", world="w", resume_key=key),
        store=RelayStore(redis, "w"),
        opener=refuse,
        counters=Counters(),
    )
    there = Gateway(
        GatewayConfig(relay_id="b", world="w", resume_key=key),
        store=RelayStore(redis, "w"),
        opener=refuse,
        counters=Counters(),
    )
    now = time.time()

    def issue(world: str = "w", session: str = "s") -> tuple[resume.ResumeGrant, bytes]:
        made = resume.new_grant(
            player_id="alice", session_id=session, world=world, relay_id="a", timeout_s=10, now=now
        )
        return made, resume.seal(made, key)

    async def reason(blob: bytes, gateway: Gateway, at: float = now) -> str:
        with pytest.raises(Rejected) as info:
            await gateway.admission.admit_resume(blob, at)
        return info.value.reason

    old, old_blob = issue()
    await here.store.set_resume("alice", old.token_id, 60)
    newest, newest_blob = issue()
    await here.store.set_resume("alice", newest.token_id, 60)
    assert await reason(old_blob, there) == "replayed"  # superseded
    assert (await there.admission.admit_resume(newest_blob, now)).token_id == newest.token_id
    assert await reason(newest_blob, here) == "replayed"  # once, on any relay
    await there.admission.release(newest)  # its session could not be opened
    assert (await here.admission.admit_resume(newest_blob, now)).player_id == "alice"
    assert await reason(newest_blob, here, now + 120) == "expired"
    assert await reason(b"\x01" + os.urandom(100), here) == "forged"
    _, elsewhere = issue(world="other")
    assert await reason(elsewhere, here) == "wrong_world"
    revoked, revoked_blob = issue(session="gone")
    await here.store.set_resume("alice", revoked.token_id, 60)
    here.revoke("gone", now + 60)
    assert await reason(revoked_blob, here) == "revoked"
    await here.close_all()
    await there.close_all()


async def test_a_rotation_finds_out_that_the_player_resumed_elsewhere(
    gateway: Gateway, redis: Redis
) -> None:
    """The first credential replaces any; a rotation only the session's own. A
    session whose player resumed on another relay (newer credential in Redis)
    ends REPLACED at its next rotation instead of stealing the credential back."""
    store = gateway.store
    session, sent = add_session(gateway, "alice", "zone-a", 1)
    await redis.set(store.resume_key("alice"), b"older-login-cred")
    gateway.issue_resume(session)
    for _ in range(50):
        if session.resume_id:
            break
        await asyncio.sleep(0.01)
    first = session.resume_id
    assert await redis.get(store.resume_key("alice")) == first
    credential = relay_pb2.ServerMessage.FromString(sent[-1]).resume
    assert len(credential.client_to_server_key) == 32 and credential.credential
    gateway.issue_resume(session)  # rotation while still the newest: fine
    for _ in range(50):
        if session.resume_id != first:
            break
        await asyncio.sleep(0.01)
    assert await redis.get(store.resume_key("alice")) == session.resume_id != first
    await redis.set(store.resume_key("alice"), b"resumed-elsewhere")
    gateway.issue_resume(session)
    for _ in range(50):
        if session.closed:
            break
        await asyncio.sleep(0.01)
    goodbye = relay_pb2.ServerMessage.FromString(sent[-1])
    assert goodbye.disconnected.reason == "REPLACED"
    assert await redis.get(store.resume_key("alice")) == b"resumed-elsewhere"


async def test_a_drain_releases_the_movers_from_their_links(gateway: Gateway) -> None:
    """The players told to MOVE leave their link's attached set (no Detach): a link
    that reconnects during the drain (its watchdog saw the zone go quiet once they
    had resumed elsewhere) would otherwise join and attach them here again, taking
    them back from the relay they resumed on. Their snapshots still flow until
    they go; a player without a resume credential stays attached."""
    mover, mover_sent = add_session(gateway, "alice", "zone-a", 1)
    mover.resume = b"credential"
    add_session(gateway, "bob", "zone-a", 1)
    link = gateway.links["zone-a"]
    await gateway.drain(0.05)
    notice = relay_pb2.ServerMessage.FromString(mover_sent[-1]).notice
    assert notice.code == "MOVE"
    assert link.attached == {"bob"}
    batch = zone_pb2.SnapshotBatch(
        tick=1, snapshots=[zone_pb2.PlayerSnapshot(player_id="alice", stream=1, sequence=1)]
    )
    gateway.on_snapshots(link, batch, time.perf_counter())
    assert relay_pb2.ServerMessage.FromString(mover_sent[-1]).snapshot.tick == 1
    link.connected = True  # as if the stream were up: a Detach would be queued now
    link._outbox.clear()
    gateway._end(mover, "REPLACED", "resumed elsewhere", leave=False)
    assert outbox_kinds(gateway, "zone-a") == []


async def test_a_drain_moves_clients_to_a_relay_at_another_address(redis: Redis) -> None:
    """The MOVE names a live relay at another address, never this relay's own
    workers (same address: they stop with it) nor a silent one; "" when only those
    are left."""
    gw = Gateway(
        GatewayConfig(relay_id="a", world="w", public_address="10.0.0.1:7777"),
        store=RelayStore(redis, "w"),
        opener=refuse,
        counters=Counters(),
    )
    store, now = gw.store, time.time()
    await store.relay_alive("a-w1", now, {}, "10.0.0.1:7777")
    await store.relay_alive("b", now - 10.0, {}, "10.0.0.2:7777")
    assert await gw._other_relay(now) == ""
    await store.relay_alive("c", now, {}, "10.0.0.3:7777")
    assert await gw._other_relay(now) == "10.0.0.3:7777"
    await gw.close_all()


async def test_a_reconnect_ends_the_sessions_that_resumed_elsewhere(
    gateway: Gateway, redis: Redis
) -> None:
    """A link that reconnects (after the zone went quiet: it sends nothing for
    players who resumed on another relay) first ends, REPLACED and without a
    Leave, the sessions whose player holds a newer resume credential, so it does
    not join and attach them here again; the others it joins again as before."""
    store = gateway.store
    stale, stale_sent = add_session(gateway, "alice", "zone-a", 1)
    current, _ = add_session(gateway, "bob", "zone-a", 1)
    rotating, _ = add_session(gateway, "carol", "zone-a", 1)
    stale.resume_id, current.resume_id = b"alice-old", b"bob-now"
    rotating.resume_id, rotating.rotating = b"carol-old", True
    await redis.set(store.resume_key("alice"), b"alice-newer")
    await redis.set(store.resume_key("bob"), b"bob-now")
    await redis.set(store.resume_key("carol"), b"carol-next")  # its own rotation, under way
    link = gateway.links["zone-a"]
    link.rpc_timeout_s = 0.05  # no zone here: bob's Join fails fast
    await gateway.on_link_up(link, reconnect=True)
    goodbye = relay_pb2.ServerMessage.FromString(stale_sent[-1])
    assert goodbye.disconnected.reason == "REPLACED" and stale.closed
    assert "alice" not in gateway.sessions.by_player
    assert not gateway.placement.own_removal("alice", time.monotonic())  # no Leave
    assert not current.closed and gateway.sessions.by_player["bob"] is current
    assert not rotating.closed


async def test_a_stalled_link_ends_the_sessions_that_resumed_elsewhere(
    gateway: Gateway, redis: Redis
) -> None:
    """A link that stalls (its zone sends nothing: also what it does once its
    players resumed on another relay) keeps its stream, so no reconnect will
    find the stale sessions: the stall itself ends, REPLACED and without a
    Leave, those whose player holds a newer credential, and tells the others
    ZONE_STALLED."""
    store = gateway.store
    stale, stale_sent = add_session(gateway, "alice", "zone-a", 1)
    held, held_sent = add_session(gateway, "bob", "zone-a", 1)
    stale.resume_id, held.resume_id = b"alice-old", b"bob-now"
    await redis.set(store.resume_key("alice"), b"alice-newer")
    await redis.set(store.resume_key("bob"), b"bob-now")
    link = gateway.links["zone-a"]
    link.down_reason = "silent"
    gateway.on_link_down(link)
    for _ in range(100):
        if stale.closed:
            break
        await asyncio.sleep(0.01)
    assert relay_pb2.ServerMessage.FromString(stale_sent[-1]).disconnected.reason == "REPLACED"
    assert not gateway.placement.own_removal("alice", time.monotonic())  # no Leave
    assert gateway.sessions.by_player["bob"] is held
    assert relay_pb2.ServerMessage.FromString(held_sent[-1]).notice.code == "ZONE_STALLED"
    assert gateway.counters.zone_silences == 1


async def test_a_client_the_relay_no_longer_hears_is_told_to_move_once(
    gateway: Gateway,
) -> None:
    """A client holding a credential that has sent nothing for UNHEARD_S while the
    relay kept sweeping (its packets reach another worker now) is told to MOVE,
    once; one heard lately, or one without a credential, is not."""
    lost, lost_sent = add_session(gateway, "alice", "zone-a", 1)
    heard, heard_sent = add_session(gateway, "bob", "zone-a", 1)
    bare, bare_sent = add_session(gateway, "carol", "zone-a", 1)
    lost.resume = heard.resume = b"credential"
    start = lost.last_seen = heard.last_seen = bare.last_seen = time.monotonic()
    for step in range(1, 17):  # 4 s of sweeps every 0.25 s
        now = start + step * 0.25
        heard.last_seen = now
        await gateway.sweep(now)
    moves = [m for m in map(relay_pb2.ServerMessage.FromString, lost_sent) if m.notice.code]
    assert [(m.notice.code, m.notice.address) for m in moves] == [("MOVE", "")]
    assert gateway.counters.unheard_moves == 1
    assert not any(relay_pb2.ServerMessage.FromString(m).notice.code for m in heard_sent)
    assert not any(relay_pb2.ServerMessage.FromString(m).notice.code for m in bare_sent)


async def test_a_relay_that_was_not_running_does_not_count_its_clients_unheard(
    gateway: Gateway,
) -> None:
    """After a late sweep (the relay starved or stopped: what its clients sent is
    still unread) the UNHEARD_S clock starts again."""
    session, sent = add_session(gateway, "alice", "zone-a", 1)
    session.resume = b"credential"
    start = session.last_seen = time.monotonic()
    await gateway.sweep(start + 0.25)
    await gateway.sweep(start + 6.0)  # 5.75 s late
    await gateway.sweep(start + 6.25)
    assert gateway.counters.unheard_moves == 0
    assert not any(relay_pb2.ServerMessage.FromString(m).notice.code for m in sent)


async def test_a_credential_that_could_not_be_issued_is_issued_by_a_later_sweep(
    gateway: Gateway, redis: Redis
) -> None:
    """Redis refusing the first credential (e.g. its connection pool used up by a
    crowd resuming at once) no longer leaves the session without one until it
    ends: the sweep tries again after RESUME_RETRY_S."""
    session, sent = add_session(gateway, "alice", "zone-a", 1)
    session.accepted = b"accepted"
    store = gateway.store
    store.redis = connect(f"redis://127.0.0.1:{free_port()}", retries=0)  # nothing listens
    try:
        gateway.issue_resume(session)
        for _ in range(200):
            if session.resume_failed:
                break
            await asyncio.sleep(0.01)
    finally:
        await store.redis.aclose()
        store.redis = redis
    failed = session.resume_failed
    assert failed and session.resume == b""
    await gateway.sweep(failed + 0.5)  # too soon: no new try
    assert not session.rotating
    await gateway.sweep(failed + RESUME_RETRY_S + 0.1)
    for _ in range(200):
        if session.resume_id:
            break
        await asyncio.sleep(0.01)
    assert await redis.get(store.resume_key("alice")) == session.resume_id
    assert relay_pb2.ServerMessage.FromString(sent[-1]).resume.credential


async def test_a_resume_of_a_session_held_here_takes_it_over_without_a_zone(
    gateway: Gateway,
) -> None:
    """A resume whose credential is the current one of a session this relay
    holds takes that session over (same zone, entity, epoch, link attachment; the
    old connection ends REPLACED) without any zone: none runs here, so a Join
    would be refused. An older credential of the same session (or a session not
    held here) is placed the ordinary way, which has no zone to offer."""
    session, sent = add_session(gateway, "alice", "zone-a", 4)
    session.entity_id = 17
    session.resume_id = b"current"
    session.recent_inputs = [relay_pb2.ClientInput(sequence=3)]
    session.accepted = relay_pb2.ServerMessage(
        accepted=relay_pb2.Accepted(player_id="alice", entity_id=9, tick_hz=20, timeout_s=10)
    ).SerializeToString()

    def credential(token_id: bytes) -> resume.ResumeGrant:
        made = resume.new_grant(
            player_id="alice", session_id="", world="w", relay_id="r1", timeout_s=10, now=0
        )
        return resume.ResumeGrant(**{**made.__dict__, "token_id": token_id})

    got: list[bytes] = []
    with pytest.raises(Rejected) as info:
        await gateway.open_session(credential(b"older"), transport="udp", send=got.append)
    assert info.value.reason == "no_zone"
    assert gateway.sessions.by_player["alice"] is session
    assert sum(gateway.counters.session_ends.values()) == gateway.counters.takeovers == 0

    new, accepted = await gateway.open_session(
        credential(b"current"), transport="udp", send=got.append, address=("127.0.0.1", 9)
    )
    assert gateway.sessions.by_player["alice"] is new
    assert gateway.sessions.by_address[("127.0.0.1", 9)] is new
    assert (new.zone, new.epoch, new.entity_id, new.timeout_s) == ("zone-a", 4, 17, 10.0)
    assert new.recent_inputs == session.recent_inputs
    assert "alice" in gateway.links["zone-a"].attached
    assert (accepted.player_id, accepted.entity_id, accepted.tick_hz) == ("alice", 17, 20)
    assert gateway.counters.session_ends["REPLACED"] == 1
    assert session.closed
    assert relay_pb2.ServerMessage.FromString(sent[-1]).disconnected.reason == "REPLACED"
    assert gateway.counters.takeovers == 1
    # No Leave of the old connection: the player stays in its zone.
    assert "alice" not in gateway.placement.leaving


async def test_a_resume_with_the_credential_a_rotation_replaced_takes_the_session_over(
    redis: Redis,
) -> None:
    """The relay rotated the session's credential (C1 -> C2) but the client went
    silent before C2 reached it, and resumes with C1: the relay holding the
    session spends C2 for it and takes the session over. Nowhere else, and not
    twice: another relay refuses C1 as replayed, and so does this one once used;
    a credential older than C1 is refused too."""
    key = resume.derive_key(os.urandom(32))
    here, there = (
        Gateway(
            GatewayConfig(relay_id=relay, world="w", resume_key=key),
            store=RelayStore(redis, "w"),
            opener=refuse,
            counters=Counters(),
        )
        for relay in ("a", "b")
    )
    now = time.time()
    grants = [
        resume.new_grant(
            player_id="alice", session_id="s", world="w", relay_id="a", timeout_s=10, now=now
        )
        for _ in range(3)
    ]
    c0, c1, c2 = ((g, resume.seal(g, key)) for g in grants)
    session, _sent = add_session(here, "alice", "zone-a", 1)
    session.accepted = relay_pb2.ServerMessage(
        accepted=relay_pb2.Accepted(player_id="alice", timeout_s=10)
    ).SerializeToString()
    session.resume_previous, session.resume_id = c1[0].token_id, c2[0].token_id
    await here.store.set_resume("alice", c2[0].token_id, 60)

    async def reason(blob: bytes, gateway: Gateway) -> str:
        with pytest.raises(Rejected) as info:
            await gateway.admission.admit_resume(blob, now)
        return info.value.reason

    assert await reason(c1[1], there) == "replayed"
    assert await reason(c0[1], here) == "replayed"
    grant = await here.admission.admit_resume(c1[1], now)
    assert grant.token_id == c2[0].token_id
    assert grant.server_to_client_key == c1[0].server_to_client_key  # the client's keys
    assert await redis.get(here.store.resume_key("alice")) is None  # C2 spent
    new, _accepted = await here.open_session(grant, transport="udp", send=_sent.append)
    assert here.sessions.by_player["alice"] is new and session.closed
    assert here.counters.takeovers == 1
    assert await reason(c1[1], here) == "replayed"
    await here.close_all()
    await there.close_all()


async def test_a_move_to_a_zone_with_another_game_tells_the_client_its_schema(
    gateway: Gateway,
) -> None:
    arena = common_pb2.GameSchema(module="arena")
    world = common_pb2.GameSchema(
        module="world",
        components=[common_pb2.ComponentSchema(name="ore", dtype="uint8", step=1, bits=8)],
    )
    session, sent = add_session(gateway, "alice", "inst", 1)
    session.game = arena.SerializeToString()
    for zone, game in (("open-a", world), ("open-b", world), ("inst", arena)):
        gateway.link(zone).welcome = zone_pb2.LinkWelcome(game=game)

    def told() -> list[str]:
        games = [relay_pb2.ServerMessage.FromString(m) for m in sent]
        return [m.game.module for m in games if m.WhichOneof("msg") == "game"]

    gateway.reroute("alice", Route("open-a", 2))
    assert told() == ["world"]
    gateway.reroute("alice", Route("open-b", 3))  # the same module: nothing to tell
    assert told() == ["world"] and session.game == world.SerializeToString()
    # A link not welcomed yet tells its sessions once its welcome names the game.
    gateway.reroute("alice", Route("new", 4))
    assert told() == ["world"]
    link = gateway.links["new"]
    link.welcome = zone_pb2.LinkWelcome(game=arena)
    await gateway.on_link_up(link, reconnect=False)
    assert told() == ["world", "arena"] and gateway.counters.game_schemas == 2


@pytest.mark.integration
async def test_a_zone_in_the_registry_gets_a_warm_link_that_its_first_player_uses(
    redis: Client, redis_server: LocalRedis
) -> None:
    """A zone that heartbeats gets a link before any player is routed there; the
    first player routed to it is attached on that same stream (no second link, no
    reconnect) and its snapshots come over it."""
    world = World(redis, redis_server.url, world="w")
    gw = Gateway(
        GatewayConfig(relay_id="r1", world="w"),
        store=RelayStore(redis, "w"),
        opener=refuse,
        counters=Counters(),
        channel=LOCAL.channel,
    )
    try:
        assert await gw.warm() == [] and not gw.links  # no zone registered yet
        await world.start_all([ZoneSpec("a", Rect(-100, -100, 100, 100))])
        deadline = time.monotonic() + 20.0
        while "a" not in await gw.store.zone_statuses():
            assert time.monotonic() < deadline, "no heartbeat"
            await asyncio.sleep(0.05)
        gw.draining = True  # a stopping relay opens no link
        assert await gw.warm() == [] and not gw.links
        gw.draining = False
        assert await gw.warm() == ["a"]
        link = gw.links["a"]
        await link.ready()
        assert link.connected and not link.attached and gw.counters.warm_links == 1
        assert await gw.warm() == []  # one link per zone

        response = await world.join("a", "p1", relay_id="r1")
        _session, sent = add_session(gw, "p1", "a", int(response.epoch))
        while not any(
            relay_pb2.ServerMessage.FromString(m).WhichOneof("msg") == "snapshot" for m in sent
        ):
            assert time.monotonic() < deadline + 10.0, "no snapshot over the warm link"
            await asyncio.sleep(0.05)
        assert gw.links["a"] is link and link.reconnects == 0 and link.attached == {"p1"}
    finally:
        await gw.close_all()
        world.stop()


class _RefusedFirst:
    """A token source whose first token no zone accepts; once it is given back as
    refused, it hands out the harness's valid one."""

    def __init__(self) -> None:
        self.refused: list[str] = []

    async def access_token(self) -> str:
        return await LOCAL.access_token() if self.refused else "not.a.token"

    def rejected(self, token: str) -> None:
        self.refused.append(token)


@pytest.mark.integration
async def test_a_link_whose_token_a_zone_refuses_gives_it_back_and_comes_up_with_a_new_one(
    redis: Client, redis_server: LocalRedis
) -> None:
    """The ZoneLink brings its own token (its channel does not intercept streams):
    a zone's UNAUTHENTICATED goes back to the token source, whose next token the
    reconnect uses, so a revoked or unknown service token does not keep the link
    down until its renewal is due."""
    world = World(redis, redis_server.url, world="w")
    tokens = _RefusedFirst()
    gw = Gateway(
        GatewayConfig(relay_id="r1", world="w"),
        store=RelayStore(redis, "w"),
        opener=refuse,
        counters=Counters(),
        channel=tls.zone_channel,  # no interceptors: the stream's token is its own
        tokens=tokens,
    )
    try:
        await world.start_all([ZoneSpec("a", Rect(-100, -100, 100, 100))])
        deadline = time.monotonic() + 20.0
        while "a" not in await gw.store.zone_statuses():
            assert time.monotonic() < deadline, "no heartbeat"
            await asyncio.sleep(0.05)
        assert await gw.warm() == ["a"]
        await asyncio.wait_for(gw.links["a"].ready(), 10.0)
        assert gw.links["a"].connected and tokens.refused == ["not.a.token"]
    finally:
        await gw.close_all()
        world.stop()
