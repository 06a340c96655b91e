"""Auth + zone + relay as real processes on a real Redis: bots log in, connect
over UDP, move and see each other; bad tokens and garbage are refused and
counted; a zone killed and restarted under load disconnects nobody; a handoff
re-routes without a disconnect; a token that names an instance zone moves the
player there with their state (also through a second relay, whose transfer ends
the first relay's stale session), one naming an open-world zone only places
newcomers, tokens for another world or for a zone that is not running change
nothing, a stale session's Leave through another relay spares the live
session, an arena match made by a real matchmaker puts its players in the
instance zone with their match id and teams (kept through a zone restart and a
handoff), a reconnection to the same relay waits for the old session's Leave,
and a transfer that cannot be undone in the zone it left still leaves the
player in exactly one zone (or their session ended); a resume to the relay
still holding the session survives a frozen zone, and a relay that does not run
for seconds keeps its sessions; and bots behind a lossy, jittery network shim
keep playing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from tessera.auth import sessions
from tessera.auth.keys import KeyRing, SigningKey
from tessera.authclient.issuer import AuthIssuer
from tessera.client.bot import Bot, hotspot, random_walk
from tessera.client.client import GameClient, Intent
from tessera.client.login import connect_token, guest_connect_token, guest_login
from tessera.client.transport import ConnectError, PlayTransport, UdpTransport, ping
from tessera.client.world import WorldView
from tessera.common.audit import AuditLog, AuditRecord
from tessera.common.database import Pool, open_database
from tessera.common.process import ServiceProcess, free_udp_port
from tessera.common.store import WorldKeys, instance_zone
from tessera.common.store import connect as redis_connect
from tessera.harness.netem import Conditions, NetemProxy
from tessera.harness.redis import LocalRedis, component_url
from tessera.harness.relays import metric as relay_metric
from tessera.harness.tokens import LOCAL, access_metadata, relay_login_env, service_clients
from tessera.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    matchmaking_pb2,
    matchmaking_pb2_grpc,
    relay_pb2,
    relay_pb2_grpc,
    zone_pb2,
    zone_pb2_grpc,
)
from tessera.wire import access_token, packet
from tessera.wire.connect_token import ConnectGrant, issue_connect_token, new_token_id
from tessera.wire.connection import Connection
from tessera.zone.audit import settle

pytestmark = pytest.mark.integration

WORLD = "itest"
SERVICE_SECRET = "relay-itest-secret-0123456789"


@dataclass
class Stack:
    auth: ServiceProcess
    zone: ServiceProcess
    relay: ServiceProcess
    zone_env: dict[str, str]
    relay_env: dict[str, str]
    udp_address: str
    # A second relay's UDP address, also in auth's relay list (started by a test).
    spare_udp_address: str
    connect_key: bytes
    signing_key: SigningKey
    redis_url: str

    async def restart_zone(self) -> None:
        """kill -9 the zone and start it again. The child is forked from this
        (the main) thread: children die with the thread that forked them."""
        self.zone.kill()
        self.zone = ServiceProcess("tessera.zone", self.zone_env, name="zone").start()
        await asyncio.to_thread(self.zone.wait_serving)

    def metric(self, name: str, **labels: str) -> float:
        return relay_metric(self.relay, name, **labels)

    async def status(self) -> relay_pb2.RelayStatus:
        return await relay_status(self.relay, self.service_md())

    def service_md(self) -> tuple[tuple[str, str], ...]:
        """Call metadata of a service caller (the relay's admin RPCs need one)."""
        return access_metadata(self.signing_key.kid, self.signing_key.private_key, "service")


async def relay_status(
    relay: ServiceProcess, md: tuple[tuple[str, str], ...]
) -> relay_pb2.RelayStatus:
    async with grpc.aio.insecure_channel(relay.grpc_address) as channel:
        stub: Any = relay_pb2_grpc.RelayStub(channel)
        status: relay_pb2.RelayStatus = await stub.GetStatus(
            relay_pb2.GetRelayStatusRequest(), metadata=md
        )
        return status


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("relay-stack")
    (tmp / "redis").mkdir()
    redis = LocalRedis(tmp / "redis")
    redis.start()
    key_dir = tmp / "keys"
    auth_keys = LOCAL.auth_env(key_dir)  # the key the zones trust signs auth's tokens
    signing_key = KeyRing.from_directory(key_dir, overlap_s=3600).current(time.time())
    connect_key = os.urandom(32)
    connect_b64 = base64.b64encode(connect_key).decode()
    udp_port = free_udp_port()
    spare_udp_port = free_udp_port()
    common = {
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_GRPC_PORT": "0",
        "TESSERA_METRICS_PORT": "0",
        "TESSERA_HOST": "127.0.0.1",
        "TESSERA_WORLD": WORLD,
        "TESSERA_SHUTDOWN_GRACE_S": "1",
    }
    auth = ServiceProcess(
        "tessera.auth",
        {
            **common,
            "TESSERA_REDIS_URL": redis.url_for("auth"),
            **auth_keys,
            "TESSERA_CONNECT_KEY": connect_b64,
            "TESSERA_AUTH_RELAYS": f"default=127.0.0.1:{udp_port},127.0.0.1:{spare_udp_port}",
            "TESSERA_AUTH_REGISTRATIONS_PER_ADDRESS": "1000",
            "TESSERA_AUTH_SERVICE_CLIENTS": service_clients(f"matchmaking={SERVICE_SECRET}"),
        },
        name="auth",
    ).start()
    zone_env = {
        **os.environ,
        **common,
        "TESSERA_REDIS_URL": redis.url_for("zone"),
        "TESSERA_ZONE": "zone-a",
        "TESSERA_ZONE_BOUNDS": "-100,-100,100,100",
        "TESSERA_WORLD_BOUNDS": "-100,-100,100,100",
        "TESSERA_TICK_HZ": "20",
        "TESSERA_CHECKPOINT_S": "0.2",
        **LOCAL.env(),
    }
    zone = ServiceProcess("tessera.zone", zone_env, name="zone").start()
    auth.wait_serving()
    zone.wait_serving()
    relay_env = {
        **common,
        "TESSERA_REDIS_URL": redis.url_for("relay"),
        "TESSERA_UDP_HOST": "127.0.0.1",
        "TESSERA_UDP_PORT": str(udp_port),
        "TESSERA_AUTH_ADDRESS": auth.grpc_address,
        "TESSERA_CONNECT_KEY": connect_b64,
        "TESSERA_RELAY_CONNECT_TIMEOUT_S": "0.5",
        "TESSERA_RELAY_ZONE_SILENCE_S": "1.0",
        "TESSERA_RELAY_ORPHAN_GRACE_S": "2",
        **relay_login_env(),
    }
    relay = ServiceProcess("tessera.relay", relay_env, name="relay").start()
    relay.wait_serving()
    s = Stack(
        auth,
        zone,
        relay,
        zone_env,
        relay_env,
        f"127.0.0.1:{udp_port}",
        f"127.0.0.1:{spare_udp_port}",
        connect_key,
        signing_key,
        redis.url,
    )
    yield s
    for proc in (s.relay, s.zone, s.auth):
        proc.terminate()
    redis.stop()


async def connect_bot(stack: Stack, name: str, pattern: Any, seed: int, *, via: str = "") -> Bot:
    """A bot playing through the relay, or through the UDP proxy at ``via`` (its
    token still names the relay, which is what the relay checks)."""
    token = await guest_connect_token(stack.auth.grpc_address, f"device-{name}-0123456789")
    if via:
        del token.relay_addresses[:]
        token.relay_addresses.append(via)
    client = GameClient(UdpTransport())
    await client.connect(token)
    bot = Bot(client, pattern, seed=seed)
    bot.start()
    return bot


async def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def eventually(check: Any, timeout_s: float, what: str) -> None:
    """Poll the async predicate ``check`` until it holds."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def bots(stack: Stack) -> AsyncIterator[list[Bot]]:
    made = [
        await connect_bot(stack, f"b{i}", hotspot((0.0, 0.0), 8.0) if i % 2 else random_walk, i)
        for i in range(10)
    ]
    yield made
    for bot in made:
        await bot.client.close()


def world_of(bot: Bot) -> WorldView:
    assert bot.client.world is not None
    return bot.client.world


def accepted_of(bot: Bot) -> relay_pb2.Accepted:
    assert bot.client.accepted is not None
    return bot.client.accepted


def own_position(bot: Bot) -> npt.NDArray[np.float64]:
    position = world_of(bot).own_position()
    assert position is not None
    return position


async def test_bots_move_and_see_each_other(stack: Stack, bots: list[Bot]) -> None:
    ids = {accepted_of(b).entity_id for b in bots}
    assert len(ids) == len(bots)

    def everyone_sees_everyone() -> bool:
        return all(ids - {accepted_of(b).entity_id} <= set(world_of(b).others()) for b in bots)

    await wait_for(everyone_sees_everyone, 10.0, "bots to see each other")
    start = {id(b): own_position(b).copy() for b in bots}
    await asyncio.sleep(1.5)
    moved = [float(np.linalg.norm(own_position(b) - start[id(b)])) for b in bots]
    assert min(moved) > 0.5, moved
    # Interpolated (100 ms in the past) positions cover the same entities.
    for b in bots:
        assert ids - {accepted_of(b).entity_id} <= set(b.client.others())
    # Inputs are acknowledged (reconciliation ran) and the prediction stays close.
    for b in bots:
        assert b.client.world is not None and b.client.world.last_input_seq > 0
        assert b.client.predictor.error_stats()["samples"] > 0
        assert b.client.predictor.error_stats()["p95_m"] < 2.0
    # Per-connection statistics are measured from acks.
    async with grpc.aio.insecure_channel(stack.relay.grpc_address) as channel:
        stub: Any = relay_pb2_grpc.RelayStub(channel)
        listing = await stub.ListSessions(
            relay_pb2.ListSessionsRequest(), metadata=stack.service_md()
        )
    infos = {s.player_id: s for s in listing.sessions}
    for b in bots:
        info = infos[accepted_of(b).player_id]
        assert info.transport == "udp" and info.zone.zone == "zone-a"
        assert info.packets_in > 10 and info.packets_out > 10 and info.rtt_ms > 0
        assert info.bytes_in > 0 and info.bytes_out > 0 and 0 <= info.loss < 0.5


async def test_held_inputs_are_applied_at_the_first_tick_after_they_came(stack: Stack) -> None:
    """The relay holds a zone's inputs until a quarter of a tick before its next
    tick (docs/RELAY.md, "Input batches"). The zone applies inputs at its ticks,
    so an input still comes back acknowledged in about half a tick on average;
    held inputs that missed their tick would take a tick and a half."""
    token = await guest_connect_token(stack.auth.grpc_address, "device-held-0123456789")
    client = GameClient(UdpTransport())
    await client.connect(token)
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}
    snapshot = client._snapshot

    def timed(snap: relay_pb2.Snapshot) -> None:  # when each input is first acknowledged
        snapshot(snap)
        assert client.world is not None
        last = client.world.last_input_seq
        for seq in [s for s in sent if s <= last and s not in acked]:
            acked[seq] = time.monotonic()

    client._snapshot = timed  # type: ignore[method-assign]
    held = stack.metric("tessera_relay_input_hold_seconds_count")
    zone_held = {k: zone_held_batches(stack, k) for k in ("on_time", "late")}
    period = 1 / 20  # the stack's zone
    try:
        await asyncio.sleep(0.5)  # the relay learns the zone's ticks from its snapshots
        for _ in range(40):  # 2.3 periods apart: at every phase of the tick
            client.send_intent(Intent(move_x=1.0), period)
            sent[client.sequence] = time.monotonic()
            await asyncio.sleep(2.3 * period)
        await asyncio.sleep(0.3)
    finally:
        await client.close()
    rtts = sorted(acked[s] - sent[s] for s in acked)
    assert len(rtts) >= 36, (len(rtts), len(sent))
    assert stack.metric("tessera_relay_input_hold_seconds_count") > held
    # Acknowledged within a tick and the trip (5-55 ms in a quiet run, with or
    # without holding); written 1 ms before the tick, a quarter took 60-100 ms.
    late = [r for r in rtts if r > period + 0.025]
    assert len(late) <= len(rtts) // 10, rtts
    # The zone read the held batches before the ticks they were held for.
    on_time = zone_held_batches(stack, "on_time") - zone_held["on_time"]
    missed = zone_held_batches(stack, "late") - zone_held["late"]
    assert on_time >= 36 and missed <= on_time // 10, (on_time, missed)


def zone_held_batches(stack: Stack, outcome: str) -> float:
    return relay_metric(stack.zone, "tessera_zone_held_input_batches_total", outcome=outcome)


def test_the_relay_process_times_its_collections(stack: Stack) -> None:
    """Start-up's collections, the full one before the freeze among them
    (docs/RELAY.md, "Garbage collection"), are on the relay's pause histogram."""
    port = stack.relay.ports["metrics_port"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    full = [
        line
        for line in text.splitlines()
        if line.startswith('tessera_relay_gc_pause_seconds_count{generation="2"}')
    ]
    assert full and float(full[0].rsplit(" ", 1)[1]) >= 1, full


async def test_play_transport_and_ping(stack: Stack) -> None:
    result = await ping(stack.udp_address)
    assert result.rtt_ms < 1000
    token = await guest_connect_token(stack.auth.grpc_address, "device-play-0123456789")
    client = GameClient(PlayTransport(stack.relay.grpc_address))
    await client.connect(token)
    client.start(lambda _client: Intent(move_x=1.0))
    await wait_for(lambda: client.snapshots >= 5, 10.0, "snapshots over Play")
    status = await stack.status()
    assert status.sessions["grpc"] == 1
    await client.close()

    async def grpc_sessions_are(n: int) -> bool:
        return (await stack.status()).sessions["grpc"] == n

    await eventually(lambda: grpc_sessions_are(0), 5.0, "the Play session to end")


def mint(stack: Stack, *, expires_in: int, key: SigningKey | None = None) -> bytes:
    now = int(time.time())
    grant = ConnectGrant(
        token_id=new_token_id(),
        player_id="mallory",
        session_id="s",
        relay_addresses=(stack.udp_address,),
        client_to_server_key=os.urandom(32),
        server_to_client_key=os.urandom(32),
        issued_at=now - 100,
        expires_at=now + expires_in,
        timeout_s=10,
    )
    return issue_connect_token(
        grant, signing_key=key or stack.signing_key, sealing_key=stack.connect_key
    )


async def raw_handshake(stack: Stack, token: bytes, address: str = "") -> bool:
    """Send a handshake from a fresh socket; True if anything came back."""
    host, port = (address or stack.udp_address).split(":")
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            got.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=(host, int(port)))
    try:
        transport.sendto(packet.encode_handshake(token))
        await asyncio.sleep(0.5)
        return not got.empty()
    finally:
        transport.close()


async def test_bad_tokens_and_garbage_rejected_and_counted(stack: Stack) -> None:
    before = {
        r: stack.metric("tessera_relay_handshakes_total", result=r)
        for r in ("bad_signature", "expired", "replayed", "accepted")
    }
    assert not await raw_handshake(stack, mint(stack, expires_in=60, key=SigningKey.generate()))
    assert not await raw_handshake(stack, mint(stack, expires_in=-5))
    # A real token, used once by a real client, then replayed from elsewhere.
    token = await guest_connect_token(stack.auth.grpc_address, "device-replay-0123456789")
    client = GameClient(UdpTransport())
    await client.connect(token)
    assert not await raw_handshake(stack, token.token)
    # Garbage from an unknown address: no reply, counted.
    unknown = stack.metric("tessera_relay_drops_total", reason="unknown_address")
    host, port = stack.udp_address.split(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        for _ in range(20):
            s.sendto(b"\x02" + os.urandom(100), (host, int(port)))
        with pytest.raises(TimeoutError):
            s.recvfrom(2048)
    assert stack.metric("tessera_relay_drops_total", reason="unknown_address") >= unknown + 20
    after = {
        r: stack.metric("tessera_relay_handshakes_total", result=r)
        for r in ("bad_signature", "expired", "replayed", "accepted")
    }
    assert after["bad_signature"] == before["bad_signature"] + 1
    assert after["expired"] == before["expired"] + 1
    assert after["replayed"] == before["replayed"] + 1
    assert after["accepted"] == before["accepted"] + 1
    assert client.connected
    player = token.player_id
    await client.close()  # a clean goodbye ends the session at once, not after the timeout

    async def no_session() -> bool:
        async with grpc.aio.insecure_channel(stack.relay.grpc_address) as channel:
            stub: Any = relay_pb2_grpc.RelayStub(channel)
            listing = await stub.ListSessions(
                relay_pb2.ListSessionsRequest(), metadata=stack.service_md()
            )
        return all(s.player_id != player for s in listing.sessions)

    await eventually(no_session, 3.0, "the UDP session to end")


async def test_zone_restart_under_load_disconnects_nobody(stack: Stack, bots: list[Bot]) -> None:
    await wait_for(lambda: all(b.client.snapshots > 5 for b in bots), 10.0, "snapshots")
    streams = {id(b): world_of(b).stream for b in bots}
    await stack.restart_zone()  # the bots keep playing meanwhile
    counts = {id(b): b.client.snapshots for b in bots}
    await wait_for(
        lambda: all(b.client.snapshots > counts[id(b)] + 10 for b in bots),
        15.0,
        "snapshots after the zone restart",
    )
    assert all(b.client.connected for b in bots), [b.client.disconnected for b in bots]
    assert all(world_of(b).stream != streams[id(b)] for b in bots)
    assert stack.metric("tessera_relay_upstream_reconnects_total", zone="zone-a") >= 1
    status = await stack.status()
    assert status.sessions["udp"] >= len(bots)


async def test_a_handoff_reroutes_without_disconnect(stack: Stack) -> None:
    """A real handoff: the player is in zone-b, which drains into zone-c (the route
    moves from zone to zone by compare-and-set, it is never removed; zone-b sends
    a Handover on the link): the relay switches the upstream, the client only sees
    snapshots of a new stream."""
    zone_b, zone_c = start_zone(stack, "zone-b"), start_zone(stack, "zone-c")
    redis = redis_connect(stack.redis_url, decode_responses=True)
    client = GameClient(UdpTransport())
    try:
        await zones_up(stack, zone_b, zone_c)
        # A newcomer whose token names an open-world zone starts there.
        await client.connect(await service_token(stack, "mover", world=WORLD, zone="zone-b"))
        client.start(lambda _client: Intent(move_x=0.5))
        await wait_for(lambda: client.snapshots > 5, 10.0, "snapshots from zone-b")
        assert client.world is not None
        ((info,),) = [(await sessions_by_player(stack))["mover"]]
        assert info.zone.zone == "zone-b"
        stream_b = client.world.stream
        reroutes = stack.metric("tessera_relay_reroutes_total")
        transfers = stack.metric("tessera_relay_transfers_total")
        async with LOCAL.channel(zone_b.grpc_address) as channel:
            stub: Any = zone_pb2_grpc.ZoneStub(channel)
            target = common_pb2.ZoneRef(world=WORLD, zone="zone-c")
            await stub.Drain(zone_pb2.DrainRequest(target=target))
        await wait_for(
            lambda: client.world is not None and client.world.stream != stream_b,
            10.0,
            "snapshots from zone-c",
        )
        before = client.snapshots
        await wait_for(lambda: client.snapshots > before + 5, 10.0, "a steady zone-c stream")
        assert client.connected, client.disconnected
        assert client.world.own_position() is not None
        assert stack.metric("tessera_relay_reroutes_total") == reroutes + 1
        assert stack.metric("tessera_relay_transfers_total") == transfers
        ((info,),) = [(await sessions_by_player(stack))["mover"]]
        assert info.zone.zone == "zone-c"
        addresses = {"zone-b": zone_b.grpc_address, "zone-c": zone_c.grpc_address}
        report = await settle(redis, WORLD, addresses, {"mover"}, channel=LOCAL.channel)
        assert report.ok, report
    finally:
        await client.close()
        await stop_zones(stack, zone_b, zone_c)
        await redis.aclose()


def start_zone(stack: Stack, zone: str, *, instance: bool = False, **env: str) -> ServiceProcess:
    """Start another zone of the world (an instance zone reports its match id)."""
    extra = {"TESSERA_ZONE": zone, **env}
    if instance:
        extra["TESSERA_ZONE_INSTANCE"] = zone.removeprefix("inst-")
    return ServiceProcess("tessera.zone", {**stack.zone_env, **extra}, name=zone).start()


async def zone_states(stack: Stack, *zones: str) -> list[zone_pb2.ZoneState.ValueType]:
    """The state each zone's heartbeat reports (UNSPECIFIED without a heartbeat)."""
    redis = redis_connect(stack.redis_url)
    try:
        raws = await redis.mget([WorldKeys(WORLD).zone_status(z) for z in zones])
    finally:
        await redis.aclose()
    return [
        zone_pb2.ZONE_STATE_UNSPECIFIED
        if raw is None
        else zone_pb2.ZoneStatus.FromString(raw if isinstance(raw, bytes) else raw.encode()).state
        for raw in raws
    ]


async def zones_in_state(
    stack: Stack, states: set[zone_pb2.ZoneState.ValueType], *zones: str
) -> None:
    async def reached() -> bool:
        return all(s in states for s in await zone_states(stack, *zones))

    await eventually(reached, 5.0, f"zones {zones} to report a state in {states}")


async def zones_up(stack: Stack, *zones: ServiceProcess) -> None:
    """Wait until the zones serve and their heartbeats say ACTIVE."""
    await asyncio.gather(*(asyncio.to_thread(z.wait_serving) for z in zones))
    await zones_in_state(stack, {zone_pb2.ZONE_STATE_ACTIVE}, *(z.name for z in zones))


async def stop_zones(stack: Stack, *zones: ServiceProcess) -> None:
    """Stop the zones and drop their heartbeats at once (instead of after their
    TTL), so later tests do not try to place players in them."""
    for zone in zones:
        zone.terminate()
    redis = redis_connect(stack.redis_url)
    try:
        await redis.delete(*(WorldKeys(WORLD).zone_status(z.name) for z in zones))
    finally:
        await redis.aclose()


async def test_raw_protocol_retransmit_rate_limit_and_replay(stack: Stack) -> None:
    """Speak the wire protocol by hand: Accepted is the first DATA packet (sequence
    1, reliable message 1) even after refusals, a retransmitted handshake gets it
    again while unacknowledged, a flood is cut by the per-connection limit, a
    replayed DATA packet and a tampered one are dropped, and each drop is counted."""
    token = await guest_connect_token(stack.auth.grpc_address, "device-raw-0123456789")
    host, port = stack.udp_address.split(":")
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            got.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=(host, int(port)))
    connection = Connection(token.client_to_server_key, token.server_to_client_key)

    async def next_datagram() -> bytes:
        return await asyncio.wait_for(got.get(), 5.0)

    try:
        handshake = packet.encode_handshake(token.token)
        transport.sendto(handshake)
        first = await next_datagram()
        while first[0] == packet.REFUSED:
            # Refused but not spent (e.g. the zone it picked was just stopped): retry.
            await asyncio.sleep(0.2)
            transport.sendto(handshake)
            first = await next_datagram()
        assert first[0] == packet.DATA and first[1:9] == (1).to_bytes(8, "little")
        ((payload, reliable),) = connection.receive(first, time.monotonic()).messages
        accepted = relay_pb2.ServerMessage.FromString(payload)
        assert reliable and accepted.WhichOneof("msg") == "accepted"
        transport.sendto(handshake)  # as if the Accepted had been lost
        async with asyncio.timeout(5):  # snapshots and resume credentials come too
            while connection.receiver.duplicates == 0:
                connection.receive(await next_datagram(), time.monotonic())

        names = ("replay", "decrypt", "rate_packets")
        before = {n: stack.metric("tessera_relay_drops_total", reason=n) for n in names}
        (data,) = connection.send(b"", time.monotonic())
        transport.sendto(data)
        transport.sendto(data)  # replayed
        (other,) = connection.send(b"", time.monotonic())
        transport.sendto(other[:-1] + bytes([other[-1] ^ 0xFF]))  # tampered
        for _ in range(40):  # 800 packets in well under a second: beyond 200/s, 2 s burst
            for _ in range(20):
                transport.sendto(connection.send(b"", time.monotonic())[0])
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.5)
        after = {n: stack.metric("tessera_relay_drops_total", reason=n) for n in names}
        assert after["replay"] == before["replay"] + 1
        assert after["decrypt"] == before["decrypt"] + 1
        assert after["rate_packets"] > before["rate_packets"]
        goodbye = relay_pb2.ClientMessage(disconnect=relay_pb2.Disconnect(reason="done"))
        transport.sendto(connection.send_reliable(goodbye.SerializeToString(), time.monotonic())[0])
    finally:
        transport.close()


async def test_events_arrive_exactly_once_and_in_order_while_datagrams_are_dropped(
    stack: Stack,
) -> None:
    """Every third datagram from the relay is lost on arrival (deterministically),
    handshake included: each SPEED_CLAMPED event (one per over-long move, its
    amount the excess) still arrives once, in order, through retransmissions."""
    arrivals = iter(range(1_000_000))
    transport = UdpTransport(drop_inbound=lambda _datagram: next(arrivals) % 3 == 2)
    token = await guest_connect_token(stack.auth.grpc_address, "device-lossy-0123456789")
    client = GameClient(transport)
    resent = stack.metric("tessera_relay_retransmissions_total")
    await client.connect(token)
    count = 30

    def clamps() -> list[float]:
        kind = zone_pb2.PlayerEvent.SPEED_CLAMPED
        return [m.event.amount for m in client.events if m.event.kind == kind]

    try:
        for k in range(1, count + 1):
            client.send_intent(Intent(move_x=1.0 + k / 100.0), 0.05)
            await asyncio.sleep(0.05)
        await wait_for(lambda: len(clamps()) >= count, 15.0, "every event")
        await asyncio.sleep(1.0)  # room for a duplicate to show up
        assert clamps() == pytest.approx([k / 100.0 for k in range(1, count + 1)], abs=1e-4)
        assert stack.metric("tessera_relay_retransmissions_total") > resent
        assert client.connected
    finally:
        await client.close()


async def service_token(
    stack: Stack, player: str, *, world: str, zone: str
) -> auth_pb2.ConnectToken:
    """A token naming a destination, issued as the matchmaker issues them."""
    issuer = AuthIssuer(stack.auth.grpc_address, "matchmaking", SERVICE_SECRET)
    try:
        return await issuer.issue(player, "default", world=world, zone=zone)
    finally:
        await issuer.close()


async def sessions_by_player(
    stack: Stack, relay: ServiceProcess | None = None
) -> dict[str, list[relay_pb2.SessionInfo]]:
    async with grpc.aio.insecure_channel((relay or stack.relay).grpc_address) as channel:
        stub: Any = relay_pb2_grpc.RelayStub(channel)
        listing = await stub.ListSessions(
            relay_pb2.ListSessionsRequest(), metadata=stack.service_md()
        )
    found: dict[str, list[relay_pb2.SessionInfo]] = {}
    for info in listing.sessions:
        found.setdefault(info.player_id, []).append(info)
    return found


async def zone_players(address: str) -> set[str]:
    async with LOCAL.channel(address) as channel:
        stub: Any = zone_pb2_grpc.ZoneStub(channel)
        status = await stub.GetStatus(zone_pb2.GetStatusRequest(include_entities=True))
    return {p for p in status.entity_players if p}


async def connect_walker(stack: Stack, device: str) -> tuple[GameClient, list[bool]]:
    """A client that walks along +x while ``moving[0]`` and stands still after."""
    token = await guest_connect_token(stack.auth.grpc_address, device)
    client = GameClient(UdpTransport())
    await client.connect(token)
    moving = [True]
    client.start(lambda _client: Intent(move_x=1.0 if moving[0] else 0.0))
    return client, moving


INSTANCE = "inst-0123456789abcdef01234567"


async def test_a_token_naming_a_zone_moves_the_player_there(stack: Stack) -> None:
    """The player is live in zone-a; a token naming the instance zone (as the
    matchmaker issues it) makes the relay Leave zone-a and Join the instance, which
    adopts the checkpoint: same entity, same place, one owner, one session, the
    replaced session detached from zone-a's link."""
    # Connected while zone-a is the only zone, so it is placed there.
    old, moving = await connect_walker(stack, "device-traveller-0123456789")
    assert old.accepted is not None and old.world is not None
    player, entity = old.accepted.player_id, old.accepted.entity_id
    instance = start_zone(stack, INSTANCE, instance=True)
    redis = redis_connect(stack.redis_url, decode_responses=True)
    try:
        await asyncio.to_thread(instance.wait_serving)
        await wait_for(lambda: old.snapshots > 10, 10.0, "snapshots from zone-a")
        moving[0] = False
        await asyncio.sleep(0.5)  # standing still: the position is final
        before = own_position_of(old)
        assert abs(float(before[0])) > 0.5  # it did walk
        transfers = stack.metric("tessera_relay_transfers_total")
        token = await service_token(stack, player, world=WORLD, zone=INSTANCE)
        assert (token.world, token.zone) == (WORLD, INSTANCE)

        new = GameClient(UdpTransport())
        await new.connect(token)
        assert new.accepted is not None and new.accepted.entity_id == entity
        await wait_for(lambda: new.snapshots > 5, 10.0, "snapshots from the instance")
        after = own_position_of(new)
        assert float(np.linalg.norm(after - before)) < 0.5, (before, after)
        await wait_for(lambda: old.disconnected is not None, 5.0, "the old session to end")
        assert old.disconnected is not None and old.disconnected.reason == "REPLACED"
        assert stack.metric("tessera_relay_transfers_total") == transfers + 1

        # Exactly one zone owns the player: the instance, which its route names.
        addresses = {"zone-a": stack.zone.grpc_address, INSTANCE: instance.grpc_address}
        report = await settle(redis, WORLD, addresses, {player}, channel=LOCAL.channel)
        assert report.ok, report
        assert player not in await zone_players(stack.zone.grpc_address)
        assert player in await zone_players(instance.grpc_address)
        route = await redis.hget(WorldKeys(WORLD).routes, player)
        assert isinstance(route, str) and route.startswith(f"{INSTANCE}|")
        # One session, in the instance; each link carries exactly its sessions' players.
        (info,) = (await sessions_by_player(stack))[player]
        assert info.zone.zone == INSTANCE
        sessions = [i for infos in (await sessions_by_player(stack)).values() for i in infos]
        status = await stack.status()
        for link in status.upstreams:
            attached = sum(1 for i in sessions if i.zone.zone == link.zone.zone)
            assert link.players == attached, (link.zone.zone, link.players, attached)
        # The player plays on in the instance.
        new.start(lambda _client: Intent(move_z=1.0))
        await asyncio.sleep(1.0)
        assert float(np.linalg.norm(own_position_of(new) - after)) > 0.5
        assert new.connected
        await new.close()
    finally:
        await old.close()
        await stop_zones(stack, instance)
        await redis.aclose()


def own_position_of(client: GameClient) -> npt.NDArray[np.float64]:
    assert client.world is not None
    position = client.world.own_position()
    assert position is not None
    return position.copy()


async def test_a_token_for_another_world_is_refused(stack: Stack) -> None:
    token = await service_token(stack, "stranger", world="elsewhere", zone="zone-a")
    refused = stack.metric("tessera_relay_handshakes_total", result="wrong_world")
    assert not await raw_handshake(stack, token.token)  # UDP: no answer
    with pytest.raises(ConnectError, match="UNAUTHENTICATED"):
        await GameClient(PlayTransport(stack.relay.grpc_address)).connect(token)
    assert stack.metric("tessera_relay_handshakes_total", result="wrong_world") == refused + 2
    assert "stranger" not in await sessions_by_player(stack)
    redis = redis_connect(stack.redis_url, decode_responses=True)
    try:
        assert await redis.hget(WorldKeys(WORLD).routes, "stranger") is None
    finally:
        await redis.aclose()


async def test_a_token_naming_a_zone_not_running_changes_nothing(stack: Stack) -> None:
    client, moving = await connect_walker(stack, "device-stayer-0123456789")
    assert client.accepted is not None
    player = client.accepted.player_id
    moving[0] = False
    redis = redis_connect(stack.redis_url, decode_responses=True)
    try:
        await wait_for(lambda: client.snapshots > 5, 10.0, "snapshots from zone-a")
        route = await redis.hget(WorldKeys(WORLD).routes, player)
        assert isinstance(route, str) and route.startswith("zone-a|")
        refused = stack.metric("tessera_relay_handshakes_total", result="zone_unavailable")
        transfers = stack.metric("tessera_relay_transfers_total")
        token = await service_token(stack, player, world=WORLD, zone="inst-gone")
        with pytest.raises(ConnectError, match="ZONE_UNAVAILABLE"):
            await GameClient(UdpTransport()).connect(token)
        assert stack.metric("tessera_relay_handshakes_total", result="zone_unavailable") == (
            refused + 1
        )
        assert stack.metric("tessera_relay_transfers_total") == transfers
        # The player is still live in zone-a, on the same route and session.
        assert await redis.hget(WorldKeys(WORLD).routes, player) == route
        assert player in await zone_players(stack.zone.grpc_address)
        (info,) = (await sessions_by_player(stack))[player]
        assert info.zone.zone == "zone-a"
        count = client.snapshots
        await wait_for(lambda: client.snapshots > count + 5, 5.0, "snapshots after the refusal")
        assert client.connected
    finally:
        await client.close()
        await redis.aclose()


async def test_a_join_refused_after_the_leave_puts_the_player_back(stack: Stack) -> None:
    """The destination's heartbeat still says ACTIVE but the zone has just been
    drained: its Join is refused after the player left zone-a, so the relay joins
    them back into zone-a (same entity) and the live session keeps playing there."""
    client, moving = await connect_walker(stack, "device-bouncer-0123456789")
    assert client.accepted is not None
    player, entity = client.accepted.player_id, client.accepted.entity_id
    moving[0] = False
    closing_zone = "inst-closing"
    closing = start_zone(stack, closing_zone, instance=True, TESSERA_HEARTBEAT_S="30")
    redis = redis_connect(stack.redis_url)
    keys = WorldKeys(WORLD)
    try:
        await asyncio.to_thread(closing.wait_serving)
        await wait_for(lambda: client.snapshots > 5, 10.0, "snapshots from zone-a")

        async def heartbeat() -> bool:
            return bool(await redis.exists(keys.zone_status(closing_zone)))

        await eventually(heartbeat, 5.0, "the closing zone's heartbeat")
        async with LOCAL.channel(closing.grpc_address) as channel:
            stub: Any = zone_pb2_grpc.ZoneStub(channel)
            await stub.Drain(zone_pb2.DrainRequest())
        # A heartbeat that has not caught up with the drain yet.
        raw = await redis.get(keys.zone_status(closing_zone))
        assert isinstance(raw, bytes)
        stale = zone_pb2.ZoneStatus.FromString(raw)
        stale.state = zone_pb2.ZONE_STATE_ACTIVE
        await redis.set(keys.zone_status(closing_zone), stale.SerializeToString(), keepttl=True)
        before = await redis.hget(keys.routes, player)
        assert isinstance(before, bytes) and before.startswith(b"zone-a|")
        transfers = stack.metric("tessera_relay_transfers_total")

        token = await service_token(stack, player, world=WORLD, zone=closing_zone)
        with pytest.raises(ConnectError, match="ZONE_UNAVAILABLE"):
            await GameClient(UdpTransport()).connect(token)

        # Back in zone-a under a newer epoch, one owner, the same session playing on.
        after = await redis.hget(keys.routes, player)
        assert isinstance(after, bytes) and after.startswith(b"zone-a|")
        assert int(after.split(b"|")[1]) > int(before.split(b"|")[1])
        addresses = {"zone-a": stack.zone.grpc_address, closing_zone: closing.grpc_address}
        report = await settle(redis, WORLD, addresses, {player}, channel=LOCAL.channel)
        assert report.ok, report
        assert player not in await zone_players(closing.grpc_address)
        assert stack.metric("tessera_relay_transfers_total") == transfers
        count = client.snapshots
        await wait_for(lambda: client.snapshots > count + 5, 5.0, "snapshots after the rollback")
        assert client.connected and client.accepted.entity_id == entity
        moving[0] = True
        start = own_position_of(client)
        await asyncio.sleep(1.0)
        assert float(np.linalg.norm(own_position_of(client) - start)) > 0.5
    finally:
        await client.close()
        await stop_zones(stack, closing)
        await redis.aclose()


def via(token: auth_pb2.ConnectToken, address: str) -> auth_pb2.ConnectToken:
    """The same token, presented to the relay at ``address`` (one of those it names)."""
    assert address in token.relay_addresses
    moved = auth_pb2.ConnectToken()
    moved.CopyFrom(token)
    del moved.relay_addresses[:]
    moved.relay_addresses.append(address)
    return moved


async def test_a_transfer_through_another_relay_ends_the_stale_session(stack: Stack) -> None:
    """The player is live on relay A in zone-a; a token naming an instance zone is
    presented to relay B, which makes the player leave zone-a and join the
    instance. Relay A sees the route removed by a Leave it did not make: its
    session is stale and ends with REPLACED instead of following the route into
    the instance (where its attach would steal the snapshots from B's session)."""
    zone = "inst-twohop0123456789abcdef01"
    instance = start_zone(stack, zone, instance=True)
    port_b = stack.spare_udp_address.rsplit(":", 1)[1]
    relay_b = ServiceProcess(
        "tessera.relay",
        {**stack.relay_env, "TESSERA_UDP_PORT": port_b, "TESSERA_RELAY_ID": "relay-b"},
        name="relay-b",
    ).start()
    old, moving = await connect_walker(stack, "device-twohop-0123456789")
    new = GameClient(UdpTransport())
    redis = redis_connect(stack.redis_url, decode_responses=True)
    try:
        assert old.accepted is not None
        player, entity = old.accepted.player_id, old.accepted.entity_id
        await zones_up(stack, instance)
        await asyncio.to_thread(relay_b.wait_serving)
        await wait_for(lambda: old.snapshots > 5, 10.0, "snapshots from zone-a")
        moving[0] = False
        route = await redis.hget(WorldKeys(WORLD).routes, player)
        assert isinstance(route, str) and route.startswith("zone-a|")
        transfers_a = stack.metric("tessera_relay_transfers_total")

        token = await service_token(stack, player, world=WORLD, zone=zone)
        await new.connect(via(token, stack.spare_udp_address))
        assert new.accepted is not None and new.accepted.entity_id == entity
        await wait_for(lambda: old.disconnected is not None, 5.0, "relay A's session to end")
        assert old.disconnected is not None and old.disconnected.reason == "REPLACED"
        # B's session keeps receiving the player's snapshots from the instance.
        await wait_for(lambda: new.snapshots > 5, 10.0, "snapshots through relay B")
        count = new.snapshots
        await wait_for(lambda: new.snapshots > count + 20, 5.0, "a steady stream through B")
        assert new.connected
        assert relay_metric(relay_b, "tessera_relay_transfers_total") == 1
        assert stack.metric("tessera_relay_transfers_total") == transfers_a

        # Exactly one zone owns the player: the instance.
        addresses = {"zone-a": stack.zone.grpc_address, zone: instance.grpc_address}
        report = await settle(redis, WORLD, addresses, {player}, channel=LOCAL.channel)
        assert report.ok, report
        assert player in await zone_players(instance.grpc_address)
        assert player not in await zone_players(stack.zone.grpc_address)
        # Relay A has no session of the player, and no link of A carries them.
        assert player not in await sessions_by_player(stack)
        for link in (await stack.status()).upstreams:
            if link.zone.zone == zone:
                assert link.players == 0
        ((info,),) = [(await sessions_by_player(stack, relay_b))[player]]
        assert info.zone.zone == zone
    finally:
        await new.close()
        await old.close()
        relay_b.terminate()
        await stop_zones(stack, instance)
        await redis.aclose()


async def test_an_open_world_destination_only_places_newcomers(stack: Stack) -> None:
    """The matchmaker's tokens name a zone for open-world matches too. A player
    with no live zone starts in the named one; a player live in another zone
    stays there (no Leave, no Join elsewhere, no transfer): the named zone would
    only adopt their old position and hand them straight back."""
    open_zone = start_zone(stack, "zone-open")
    redis = redis_connect(stack.redis_url, decode_responses=True)
    keys = WorldKeys(WORLD)
    clients: list[GameClient] = []
    try:
        await zones_up(stack, open_zone)
        transfers = stack.metric("tessera_relay_transfers_total")
        # Newcomers land in the zone their token names.
        for player, zone in (("newcomer-open", "zone-open"), ("newcomer-a", "zone-a")):
            client = GameClient(UdpTransport())
            clients.append(client)
            await client.connect(await service_token(stack, player, world=WORLD, zone=zone))
            route = await redis.hget(keys.routes, player)
            assert isinstance(route, str) and route.startswith(f"{zone}|"), (player, route)
            ((info,),) = [(await sessions_by_player(stack))[player]]
            assert info.zone.zone == zone
        assert "newcomer-open" in await zone_players(open_zone.grpc_address)
        assert "newcomer-a" in await zone_players(stack.zone.grpc_address)

        # newcomer-a is live in zone-a: a token naming zone-open keeps them there.
        old = clients[1]
        assert old.accepted is not None
        await wait_for(lambda: old.snapshots > 5, 10.0, "snapshots from zone-a")
        route = await redis.hget(keys.routes, "newcomer-a")
        new = GameClient(UdpTransport())
        clients.append(new)
        await new.connect(await service_token(stack, "newcomer-a", world=WORLD, zone="zone-open"))
        assert new.accepted is not None and new.accepted.entity_id == old.accepted.entity_id
        await wait_for(lambda: old.disconnected is not None, 5.0, "the old session to end")
        assert old.disconnected is not None and old.disconnected.reason == "REPLACED"
        await wait_for(lambda: new.snapshots > 5, 10.0, "snapshots for the new session")
        assert await redis.hget(keys.routes, "newcomer-a") == route  # same zone, same epoch
        ((info,),) = [(await sessions_by_player(stack))["newcomer-a"]]
        assert info.zone.zone == "zone-a"
        assert "newcomer-a" not in await zone_players(open_zone.grpc_address)
        assert stack.metric("tessera_relay_transfers_total") == transfers
        addresses = {"zone-a": stack.zone.grpc_address, "zone-open": open_zone.grpc_address}
        report = await settle(
            redis, WORLD, addresses, {"newcomer-a", "newcomer-open"}, channel=LOCAL.channel
        )
        assert report.ok, report
    finally:
        for client in clients:
            await client.close()
        await stop_zones(stack, open_zone)
        await redis.aclose()


async def test_a_stale_sessions_leave_through_another_relay_spares_the_live_one(
    stack: Stack,
) -> None:
    """The player is live on relay A in zone-a and connects again through relay B
    with an ordinary token: B joins them where their route says (zone-a; no
    Leave) and serves them. A's session is stale; when A ends it (here by an
    operator's Kick, as an idle timeout would), its Leave names relay A, which no
    longer serves the player: zone-a refuses it, so the player stays in zone-a
    and B's session plays on (it is not ended as REPLACED)."""
    port_b = stack.spare_udp_address.rsplit(":", 1)[1]
    relay_b = ServiceProcess(
        "tessera.relay",
        {**stack.relay_env, "TESSERA_UDP_PORT": port_b, "TESSERA_RELAY_ID": "relay-b"},
        name="relay-b",
    ).start()
    device = "device-stale-leave-0123456789"
    old = GameClient(UdpTransport())
    new = GameClient(UdpTransport())
    redis = redis_connect(stack.redis_url, decode_responses=True)
    try:
        token = await guest_connect_token(stack.auth.grpc_address, device)
        await old.connect(via(token, stack.udp_address))
        assert old.accepted is not None
        player, entity = old.accepted.player_id, old.accepted.entity_id
        await wait_for(lambda: old.snapshots > 5, 10.0, "snapshots through relay A")
        await asyncio.to_thread(relay_b.wait_serving)
        token = await guest_connect_token(stack.auth.grpc_address, device)
        await new.connect(via(token, stack.spare_udp_address))
        assert new.accepted is not None and new.accepted.entity_id == entity
        await wait_for(lambda: new.snapshots > 5, 10.0, "snapshots through relay B")
        route = await redis.hget(WorldKeys(WORLD).routes, player)
        assert isinstance(route, str) and route.startswith("zone-a|")

        async with grpc.aio.insecure_channel(stack.relay.grpc_address) as channel:
            stub: Any = relay_pb2_grpc.RelayStub(channel)
            await stub.Kick(
                relay_pb2.KickRequest(player_id=player, reason="idle"),
                metadata=stack.service_md(),
            )
        await wait_for(lambda: old.disconnected is not None, 5.0, "relay A's session to end")
        count = new.snapshots
        await asyncio.sleep(1.0)
        assert new.disconnected is None and new.connected
        assert new.snapshots > count + 10
        assert player in await zone_players(stack.zone.grpc_address)
        assert await redis.hget(WorldKeys(WORLD).routes, player) == route
        assert player not in await sessions_by_player(stack)
        ((info,),) = [(await sessions_by_player(stack, relay_b))[player]]
        assert info.zone.zone == "zone-a"
        # B's session ends and its Leave is accepted; B stops only after it ran.
        await new.close()

        async def left() -> bool:
            return player not in await zone_players(stack.zone.grpc_address)

        await eventually(left, 5.0, "relay B's Leave")
        assert await redis.hget(WorldKeys(WORLD).routes, player) is None
    finally:
        await new.close()
        await old.close()
        relay_b.terminate()
        await redis.aclose()


async def test_a_reconnection_to_the_same_relay_waits_for_the_old_sessions_leave(
    stack: Stack,
) -> None:
    """The player disconnects and at once connects again to the same relay while
    the old session's Leave is still on its way (the zone is paused, so that
    Leave and the new session's Join would reach it together). The relay joins
    the new session only after the Leave: the zone adopts the checkpoint the
    Leave saved and the new session plays on. (Joined first, it would find the
    player still in the zone, and the Leave would then take them away from it.)"""
    device = "device-rejoin-0123456789"
    old, _moving = await connect_walker(stack, device)
    new = GameClient(UdpTransport())
    redis = redis_connect(stack.redis_url, decode_responses=True)
    try:
        assert old.accepted is not None
        player, entity = old.accepted.player_id, old.accepted.entity_id
        await wait_for(lambda: old.snapshots > 5, 10.0, "snapshots for the old session")
        token = await guest_connect_token(stack.auth.grpc_address, device)
        os.kill(stack.zone.pid, signal.SIGSTOP)
        try:
            await old.close()  # the relay ends the session; its Leave waits on the zone
            await asyncio.sleep(0.3)
            connecting = asyncio.create_task(new.connect(token))
            await asyncio.sleep(0.5)
        finally:
            os.kill(stack.zone.pid, signal.SIGCONT)
        await connecting
        assert new.accepted is not None
        assert (new.accepted.player_id, new.accepted.entity_id) == (player, entity)
        await wait_for(lambda: new.snapshots > 5, 5.0, "snapshots for the new session")
        assert player in await zone_players(stack.zone.grpc_address)
        route = await redis.hget(WorldKeys(WORLD).routes, player)
        assert isinstance(route, str) and route.startswith("zone-a|")
        ((info,),) = [(await sessions_by_player(stack))[player]]
        assert info.zone.zone == "zone-a"
    finally:
        await new.close()
        await old.close()
        await redis.aclose()


async def test_a_failed_rollback_moves_the_live_session_or_ends_it(stack: Stack) -> None:
    """The instance zone refuses the join after the player left their zone, and
    that zone refuses them back (it is draining: with no zone map and no drain
    target its players stay, but it takes no joins). The relay then joins the
    player the ordinary way (the least-loaded active zone adopts the checkpoint)
    and moves the live session there. When no zone can take them either, the
    live session ends with ZONE_UNAVAILABLE and the checkpoint waits for the
    reconnection. Runs last: it drains and restarts zone-a."""
    source = start_zone(stack, "zone-src", TESSERA_HEARTBEAT_S="0.2")
    dest_zone = "inst-refuses0123456789abcdef"
    dest = start_zone(stack, dest_zone, instance=True, TESSERA_HEARTBEAT_S="30")
    redis = redis_connect(stack.redis_url)
    keys = WorldKeys(WORLD)
    clients: list[GameClient] = []
    try:
        await zones_up(stack, source, dest)
        moving = [True]
        for player in ("fallback-p", "fallback-q"):
            client = GameClient(UdpTransport())
            clients.append(client)
            await client.connect(await service_token(stack, player, world=WORLD, zone="zone-src"))
            client.start(lambda _client: Intent(move_x=1.0 if moving[0] else 0.0))
        p_client, q_client = clients
        await wait_for(lambda: p_client.snapshots > 5 and q_client.snapshots > 5, 10.0, "snapshots")
        moving[0] = False
        assert p_client.accepted is not None and q_client.accepted is not None
        # The destination is drained but its (slow) heartbeat still says ACTIVE.
        for zone in (dest, source):
            async with LOCAL.channel(zone.grpc_address) as channel:
                stub: Any = zone_pb2_grpc.ZoneStub(channel)
                await stub.Drain(zone_pb2.DrainRequest(deadline_s=60))
        raw = await redis.get(keys.zone_status(dest_zone))
        assert isinstance(raw, bytes)
        stale = zone_pb2.ZoneStatus.FromString(raw)
        stale.state = zone_pb2.ZONE_STATE_ACTIVE
        await redis.set(keys.zone_status(dest_zone), stale.SerializeToString(), keepttl=True)
        await zones_in_state(stack, {zone_pb2.ZONE_STATE_DRAINING}, "zone-src")
        transfers = stack.metric("tessera_relay_transfers_total")

        # P: the ordinary join path takes them to zone-a, the live session follows.
        token = await service_token(stack, "fallback-p", world=WORLD, zone=dest_zone)
        with pytest.raises(ConnectError, match="ZONE_UNAVAILABLE"):
            await GameClient(UdpTransport()).connect(token)
        route = await redis.hget(keys.routes, "fallback-p")
        assert isinstance(route, bytes) and route.startswith(b"zone-a|")
        addresses = {
            "zone-a": stack.zone.grpc_address,
            "zone-src": source.grpc_address,
            dest_zone: dest.grpc_address,
        }
        report = await settle(redis, WORLD, addresses, {"fallback-p"}, channel=LOCAL.channel)
        assert report.ok, report
        assert "fallback-p" in await zone_players(stack.zone.grpc_address)
        ((info,),) = [(await sessions_by_player(stack))["fallback-p"]]
        assert info.zone.zone == "zone-a"
        count = p_client.snapshots
        await wait_for(lambda: p_client.snapshots > count + 10, 5.0, "snapshots from zone-a")
        assert p_client.connected
        assert p_client.world is not None and p_client.world.own_position() is not None
        assert stack.metric("tessera_relay_transfers_total") == transfers
        await p_client.close()

        # Q: zone-a is draining too, so no zone takes them: the session ends at once.
        async with LOCAL.channel(stack.zone.grpc_address) as channel:
            stub = zone_pb2_grpc.ZoneStub(channel)
            await stub.Drain(zone_pb2.DrainRequest(deadline_s=60))
        # Draining, or already drained if P was its last player.
        refusing = {zone_pb2.ZONE_STATE_DRAINING, zone_pb2.ZONE_STATE_DRAINED}
        await zones_in_state(stack, refusing, "zone-a")
        token = await service_token(stack, "fallback-q", world=WORLD, zone=dest_zone)
        with pytest.raises(ConnectError, match="ZONE_UNAVAILABLE"):
            await GameClient(UdpTransport()).connect(token)
        await wait_for(lambda: q_client.disconnected is not None, 5.0, "Q's session to end")
        assert q_client.disconnected is not None
        assert q_client.disconnected.reason == "ZONE_UNAVAILABLE"
        assert "fallback-q" not in await sessions_by_player(stack)
        assert await redis.hget(keys.routes, "fallback-q") is None
        assert await redis.hexists(keys.checkpoints, "fallback-q")

        # Reconnecting once a zone is up again restores the player from the checkpoint.
        await stack.restart_zone()
        await zones_in_state(stack, {zone_pb2.ZONE_STATE_ACTIVE}, "zone-a")
        again = GameClient(UdpTransport())
        clients.append(again)
        await again.connect(await service_token(stack, "fallback-q", world=WORLD, zone=""))
        assert again.accepted is not None
        assert again.accepted.entity_id == q_client.accepted.entity_id
        await wait_for(lambda: again.snapshots > 5, 10.0, "snapshots after reconnecting")
    finally:
        for client in clients:
            await client.close()
        await stop_zones(stack, source, dest)
        await redis.aclose()


def spare_relay(stack: Stack) -> ServiceProcess:
    """A second relay of the world (relay B) on the spare UDP port auth also names."""
    port_b = stack.spare_udp_address.rsplit(":", 1)[1]
    return ServiceProcess(
        "tessera.relay",
        {**stack.relay_env, "TESSERA_UDP_PORT": port_b, "TESSERA_RELAY_ID": "relay-b"},
        name="relay-b",
    ).start()


async def test_a_connect_token_is_spent_once_per_world_across_relays_and_restarts(
    stack: Stack,
) -> None:
    """A token redeemed on relay A is refused by relay B; one redeemed on B is
    still refused after B is killed (-9) and started again."""
    relay_b = spare_relay(stack)
    on_a, on_b = GameClient(UdpTransport()), GameClient(UdpTransport())
    try:
        await asyncio.to_thread(relay_b.wait_serving)
        first = await guest_connect_token(stack.auth.grpc_address, "device-once-a-0123456789")
        await on_a.connect(via(first, stack.udp_address))
        assert not await raw_handshake(stack, first.token, stack.spare_udp_address)
        assert relay_metric(relay_b, "tessera_relay_handshakes_total", result="replayed") == 1

        second = await guest_connect_token(stack.auth.grpc_address, "device-once-b-0123456789")
        await on_b.connect(via(second, stack.spare_udp_address))
        relay_b.kill()
        relay_b = spare_relay(stack)
        await asyncio.to_thread(relay_b.wait_serving)
        assert not await raw_handshake(stack, second.token, stack.spare_udp_address)
        assert relay_metric(relay_b, "tessera_relay_handshakes_total", result="replayed") == 1
        assert not await raw_handshake(stack, second.token)
        assert on_a.connected
    finally:
        await on_a.close()
        await on_b.close()
        relay_b.terminate()


async def test_a_revoked_login_is_dropped_by_every_relay_within_a_second(stack: Stack) -> None:
    """Logout revokes the auth session: its players on relays A and B get
    Disconnected(REVOKED) within 1 s, and its unused tokens are refused."""
    relay_b = spare_relay(stack)
    on_a, on_b = GameClient(UdpTransport()), GameClient(UdpTransport())
    try:
        await asyncio.to_thread(relay_b.wait_serving)
        login_a = await guest_login(stack.auth.grpc_address, "device-revoke-a-0123456789")
        login_b = await guest_login(stack.auth.grpc_address, "device-revoke-b-0123456789")
        token_a = await connect_token(stack.auth.grpc_address, login_a.access_token)
        unused = await connect_token(stack.auth.grpc_address, login_a.access_token)
        token_b = await connect_token(stack.auth.grpc_address, login_b.access_token)
        await on_a.connect(via(token_a, stack.udp_address))
        await on_b.connect(via(token_b, stack.spare_udp_address))
        bystander = await connect_bot(stack, "revoke-bystander", random_walk, seed=5)
        await wait_for(lambda: on_a.snapshots > 2 and on_b.snapshots > 2, 10.0, "snapshots")

        async with grpc.aio.insecure_channel(stack.auth.grpc_address) as channel:
            auth: Any = auth_pb2_grpc.AuthStub(channel)
            started = time.monotonic()
            for login in (login_a, login_b):
                await auth.Logout(
                    auth_pb2.LogoutRequest(),
                    metadata=(("authorization", f"Bearer {login.access_token}"),),
                )
        await wait_for(
            lambda: on_a.disconnected is not None and on_b.disconnected is not None,
            1.0,
            "both revoked sessions to end",
        )
        assert time.monotonic() - started < 1.0
        assert on_a.disconnected is not None and on_a.disconnected.reason == "REVOKED"
        assert on_b.disconnected is not None and on_b.disconnected.reason == "REVOKED"
        assert token_a.player_id not in await sessions_by_player(stack)
        assert token_b.player_id not in await sessions_by_player(stack, relay_b)
        # A token of the revoked session is refused (no reply), though never used.
        assert not await raw_handshake(stack, unused.token)
        assert stack.metric("tessera_relay_handshakes_total", result="revoked") >= 1
        assert bystander.client.connected
        await bystander.client.close()
    finally:
        await on_a.close()
        await on_b.close()
        relay_b.terminate()


def admin_token(stack: Stack) -> str:
    """An access token with role admin, signed with the stack's auth key (as auth
    signs an admin's login)."""
    claims = sessions.access_claims(
        account_id="itest-admin",
        session_id=sessions.new_session_id(),
        roles=("admin",),
        kid=stack.signing_key.kid,
        issuer="tessera",
        audience="tessera",
        now=time.time(),
        ttl_s=600,
    )
    return access_token.encode(claims, stack.signing_key.private_key)


async def test_a_banned_player_is_dropped_within_a_second_and_matchmaking_refuses_him(
    stack: Stack,
) -> None:
    """BanAccount revokes the player's sessions: the relay sends Disconnected(REVOKED)
    within 1 s, and matchmaking refuses a ticket with his old access token."""
    mm = ServiceProcess(
        "tessera.matchmaking",
        {
            "TESSERA_REDIS_URL": component_url(stack.redis_url, "matchmaking"),
            "TESSERA_DATABASE_URL": stack.relay_env["TESSERA_DATABASE_URL"],
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_SHUTDOWN_GRACE_S": "1",
            "TESSERA_AUTH_ADDRESS": stack.auth.grpc_address,
            "TESSERA_MM_CLIENT_SECRET": SERVICE_SECRET,
        },
        name="matchmaking",
    ).start()
    player = GameClient(UdpTransport())
    try:
        login = await guest_login(stack.auth.grpc_address, "device-banned-0123456789")
        await player.connect(
            via(await connect_token(stack.auth.grpc_address, login.access_token), stack.udp_address)
        )
        await wait_for(lambda: player.snapshots > 2, 10.0, "snapshots")
        await asyncio.to_thread(mm.wait_serving)
        ticket = matchmaking_pb2.CreateTicketRequest(
            mode="duel",
            players=[matchmaking_pb2.TicketPlayer(player_id=login.account_id)],
            regions=[matchmaking_pb2.RegionLatency(region="eu", latency_ms=12.0)],
        )
        player_md = (("authorization", f"Bearer {login.access_token}"),)
        async with (
            grpc.aio.insecure_channel(stack.auth.grpc_address) as auth_channel,
            grpc.aio.insecure_channel(mm.grpc_address) as mm_channel,
        ):
            auth: Any = auth_pb2_grpc.AuthStub(auth_channel)
            matchmaker: Any = matchmaking_pb2_grpc.MatchmakerStub(mm_channel)
            first = await matchmaker.CreateTicket(ticket, metadata=player_md)
            await matchmaker.CancelTicket(
                matchmaking_pb2.CancelTicketRequest(ticket_id=first.id), metadata=player_md
            )
            started = time.monotonic()
            banned = await auth.BanAccount(
                auth_pb2.BanAccountRequest(account_id=login.account_id, reason="wallhack"),
                metadata=(("authorization", f"Bearer {admin_token(stack)}"),),
            )
            assert banned.revoked_sessions == 1
            await wait_for(lambda: player.disconnected is not None, 1.0, "the banned player to go")
            assert time.monotonic() - started < 1.0
            assert player.disconnected is not None and player.disconnected.reason == "REVOKED"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await matchmaker.CreateTicket(ticket, metadata=player_md)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as again:
                await auth.GuestLogin(
                    auth_pb2.GuestLoginRequest(device_id="device-banned-0123456789")
                )
            assert again.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await player.close()
        mm.terminate()


async def test_the_cheat_policy_kicks_a_speed_hacker_through_the_relay(
    stack: Stack, database_url: str
) -> None:
    """The zone clamps a client's too-fast moves and publishes its tally; an auth
    replica running the cheat policy (kick, threshold 3) tells the world's relays,
    and the relay ends that session with Disconnected(KICKED) naming the score,
    once; an honest player plays on."""
    policy = ServiceProcess(
        "tessera.auth",
        {
            **stack.auth.env,
            "TESSERA_AUTH_CHEAT_ACTION": "kick",
            "TESSERA_AUTH_CHEAT_WORLDS": WORLD,
            "TESSERA_AUTH_CHEAT_THRESHOLD": "3",
            "TESSERA_AUTH_CHEAT_POLL_S": "0.1",
        },
        name="auth-policy",
    ).start()
    cheater = GameClient(UdpTransport())
    honest = await connect_bot(stack, "cheat-bystander", random_walk, seed=7)
    try:
        token = await guest_connect_token(stack.auth.grpc_address, "device-speedhack-0123456789")
        await cheater.connect(via(token, stack.udp_address))
        await wait_for(lambda: cheater.snapshots > 2, 10.0, "snapshots")
        await asyncio.to_thread(policy.wait_serving)
        for _ in range(5):
            cheater.send_intent(Intent(move_z=9.0), 0.05)
            await asyncio.sleep(0.1)
        await wait_for(lambda: cheater.disconnected is not None, 10.0, "the cheater's kick")
        assert cheater.disconnected is not None
        assert cheater.disconnected.reason == "KICKED"
        assert cheater.disconnected.message.startswith("anti-cheat: score ")
        assert f"in world {WORLD}" in cheater.disconnected.message
        assert token.player_id not in await sessions_by_player(stack)
        assert honest.client.connected
        await asyncio.sleep(0.5)  # more policy passes: the kick is not repeated
        pool = await open_database(database_url, max_size=2)
        try:
            # Players of earlier tests with tallies may be kicked too; this one once.
            kicks = await audit_of(pool, "policy:cheat", token.player_id)
        finally:
            await pool.close()
        assert [(r.action, r.outcome) for r in kicks] == [("kick", "ok")]
    finally:
        await cheater.close()
        await honest.client.close()
        policy.terminate()


async def audit_of(pool: Pool, actor: str, target: str) -> list[AuditRecord]:
    """``actor``'s audit records on ``target`` once there is one (written off the
    request path), newest first."""
    records: list[AuditRecord] = []
    for _ in range(150):
        records = await AuditLog(pool).recent(100, actor=actor, target=target)
        if records:
            break
        await asyncio.sleep(0.1)
    return records


async def test_a_play_stream_that_never_connects_is_ended(stack: Stack) -> None:
    """A Play stream that sends nothing is ended after the connect timeout (0.5 s
    here), with DEADLINE_EXCEEDED / CONNECT_TIMEOUT, and counted."""
    before = stack.metric("tessera_relay_drops_total", reason="connect_timeout")
    outbox: asyncio.Queue[relay_pb2.ClientMessage] = asyncio.Queue()

    async def silent() -> AsyncIterator[relay_pb2.ClientMessage]:
        yield await outbox.get()  # never: the client holds the stream open

    async with grpc.aio.insecure_channel(stack.relay.grpc_address) as channel:
        stub: Any = relay_pb2_grpc.RelayStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.Play(silent(), timeout=10.0):
                pass
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "connect" in (info.value.details() or "")
        assert 0.4 < time.monotonic() - started < 3.0
    after = stack.metric("tessera_relay_drops_total", reason="connect_timeout")
    assert after == before + 1


async def test_a_frozen_zone_is_noticed_within_two_seconds_and_players_are_held(
    stack: Stack,
) -> None:
    """SIGSTOP the zone: its link stays open, the ticks stop. The relay notices
    the silence (no snapshot for 1 s with players attached), marks the link down
    and tells the player ZONE_STALLED, holding the session; after SIGCONT the
    zone speaks again on the same stream (no reconnect, no Join of its players,
    which an overloaded zone might not answer in time), the player is told
    ZONE_RESUMED and plays on."""
    client, _moving = await connect_walker(stack, "device-frozen-0123456789")
    silences = stack.metric("tessera_relay_upstream_silences_total")
    reconnects = stack.metric("tessera_relay_upstream_reconnects_total", zone="zone-a")
    try:
        await wait_for(lambda: client.snapshots > 5, 10.0, "snapshots")
        os.kill(stack.zone.pid, signal.SIGSTOP)
        try:
            frozen_at = time.monotonic()
            await wait_for(lambda: client.notices, 3.0, "a notice")
            noticed = time.monotonic() - frozen_at
            assert [n.code for n in client.notices] == ["ZONE_STALLED"]
            assert noticed < 2.0, noticed
            link = next(u for u in (await stack.status()).upstreams if u.zone.zone == "zone-a")
            assert not link.connected
            assert stack.metric("tessera_relay_upstream_silences_total") == silences + 1
            assert client.connected
        finally:
            os.kill(stack.zone.pid, signal.SIGCONT)
        await wait_for(lambda: len(client.notices) == 2, 10.0, "the resumed notice")
        assert client.notices[1].code == "ZONE_RESUMED"
        count = client.snapshots
        await wait_for(lambda: client.snapshots > count + 5, 5.0, "snapshots again")
        assert client.connected
        assert stack.metric("tessera_relay_upstream_reconnects_total", zone="zone-a") == reconnects
    finally:
        await client.close()


async def test_the_players_of_a_killed_relay_are_released_unless_they_come_back(
    stack: Stack,
) -> None:
    """Relay B is killed (-9) with two players. One reconnects through relay A at
    once and keeps their entity; the other never comes back, and after the grace
    period (2 s here) relay A releases their entity (Leave naming B: the zone saves
    the checkpoint and drops it), so it no longer counts in the zone."""
    relay_b = spare_relay(stack)
    gone, back, again = (GameClient(UdpTransport()) for _ in range(3))
    released = stack.metric("tessera_relay_orphans_released_total")
    try:
        await asyncio.to_thread(relay_b.wait_serving)
        for client, device in (
            (gone, "device-orphan-0123456789"),
            (back, "device-back-0123456789"),
        ):
            token = await guest_connect_token(stack.auth.grpc_address, device)
            await client.connect(via(token, stack.spare_udp_address))
        await wait_for(lambda: gone.snapshots > 3 and back.snapshots > 3, 10.0, "snapshots")
        assert gone.accepted is not None and back.accepted is not None
        orphan, returning = gone.accepted.player_id, back.accepted.player_id
        await asyncio.sleep(1.2)  # B's presence heartbeat has named both players
        assert {orphan, returning} <= await zone_players(stack.zone.grpc_address)
        relay_b.kill()
        killed_at = time.monotonic()
        token = await guest_connect_token(stack.auth.grpc_address, "device-back-0123456789")
        await again.connect(via(token, stack.udp_address))
        assert again.accepted is not None and again.accepted.player_id == returning

        async def orphan_released() -> bool:
            return orphan not in await zone_players(stack.zone.grpc_address)

        await eventually(orphan_released, 10.0, "the orphan's entity to be released")
        # Not before the grace period (2 s of silence after B's last heartbeat).
        assert time.monotonic() - killed_at > 1.0
        assert returning in await zone_players(stack.zone.grpc_address)
        count = again.snapshots
        await wait_for(lambda: again.snapshots > count + 5, 5.0, "the returning player plays on")
        assert again.connected
        assert stack.metric("tessera_relay_orphans_released_total") == released + 1
        redis = redis_connect(stack.redis_url, decode_responses=True)
        try:
            assert await redis.hget(WorldKeys(WORLD).routes, orphan) is None
        finally:
            await redis.aclose()
    finally:
        for client in (gone, back, again):
            await client.close()
        relay_b.terminate()


async def wait_credentials(clients: list[GameClient]) -> None:
    def ready() -> bool:
        return all(
            isinstance(c.transport, UdpTransport) and c.transport.credential is not None
            for c in clients
        )

    await wait_for(ready, 10.0, "resume credentials")


def udp(client: GameClient) -> UdpTransport:
    assert isinstance(client.transport, UdpTransport)
    return client.transport


async def test_a_session_follows_its_client_to_a_new_port(stack: Stack) -> None:
    """NAT rebinding: the client's source port changes under it. The relay stops
    hearing the session's address and the client stops hearing the relay; the
    client resumes from the new port, to the same relay, as the same session."""
    client, _moving = await connect_walker(stack, "device-rebind-0123456789")
    try:
        await wait_credentials([client])
        await wait_for(lambda: client.snapshots > 3, 10.0, "snapshots")
        assert client.accepted is not None
        entity = client.accepted.entity_id
        udp(client).rebind()
        await wait_for(lambda: udp(client).resumes == 1, 6.0, "the resume")
        count = client.snapshots
        await wait_for(lambda: client.snapshots > count + 5, 5.0, "snapshots again")
        assert client.connected and client.accepted.entity_id == entity
        ((info,),) = [(await sessions_by_player(stack))[client.accepted.player_id]]
        assert info.zone.zone == "zone-a"
    finally:
        await client.close()


async def test_a_resume_to_the_relay_holding_the_session_survives_a_frozen_zone(
    stack: Stack,
) -> None:
    """The client stops hearing its relay (here its address changes) while the
    player's zone is frozen (SIGSTOP): the resume reaches the relay that still
    holds the session, which takes it over without calling the zone, so the
    session survives the frozen zone; after SIGCONT its snapshots reach the new
    connection, for the same entity."""
    client, _moving = await connect_walker(stack, "device-frozen-rebind-0123456789")
    takeovers = stack.metric("tessera_relay_resume_takeovers_total")
    try:
        await wait_credentials([client])
        await wait_for(lambda: client.snapshots > 3, 10.0, "snapshots")
        assert client.accepted is not None
        entity = client.accepted.entity_id
        os.kill(stack.zone.pid, signal.SIGSTOP)
        try:
            udp(client).rebind()
            await wait_for(
                lambda: udp(client).resumes == 1 or not client.connected, 10.0, "the resume"
            )
            assert client.connected, client.disconnected
        finally:
            os.kill(stack.zone.pid, signal.SIGCONT)
        count = client.snapshots
        await wait_for(lambda: client.snapshots > count + 5, 10.0, "snapshots again")
        assert client.connected and client.accepted.entity_id == entity
        assert stack.metric("tessera_relay_resume_takeovers_total") == takeovers + 1
        ((info,),) = [(await sessions_by_player(stack))[client.accepted.player_id]]
        assert info.zone.zone == "zone-a"
    finally:
        await client.close()


async def test_a_relay_that_stops_running_for_seconds_keeps_its_sessions(stack: Stack) -> None:
    """The relay's process does not run for 6.5 s (SIGSTOP: a starved or paused
    relay, alive all along). Its client hears nothing, resumes, and keeps
    resuming until the relay runs again and takes the session over: no
    disconnect, the same entity, snapshots again."""
    client, _moving = await connect_walker(stack, "device-relay-stall-0123456789")
    try:
        await wait_credentials([client])
        await wait_for(lambda: client.snapshots > 3, 10.0, "snapshots")
        assert client.accepted is not None
        entity = client.accepted.entity_id
        takeovers = stack.metric("tessera_relay_resume_takeovers_total")
        os.kill(stack.relay.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(6.5)
        finally:
            os.kill(stack.relay.pid, signal.SIGCONT)
        await wait_for(lambda: udp(client).resumes == 1 or not client.connected, 10.0, "the resume")
        assert client.connected, client.disconnected
        count = client.snapshots
        await wait_for(lambda: client.snapshots > count + 5, 15.0, "snapshots again")
        assert client.connected and client.accepted.entity_id == entity
        assert stack.metric("tessera_relay_resume_takeovers_total") == takeovers + 1
    finally:
        await client.close()


async def test_bots_keep_playing_through_loss_and_jitter(stack: Stack) -> None:
    """5 % loss and 100 ms +- 20 ms each way (the jitter also reorders): inputs
    are applied, positions move, every snapshot that arrives with its baseline
    decodes, and nobody is disconnected."""
    host, port = stack.udp_address.split(":")
    bad = Conditions(loss=0.05, delay_ms=100, jitter_ms=20)
    async with NetemProxy((host, int(port)), up=bad, down=bad, seed=18) as proxy:
        bots: list[Bot] = []
        try:
            for i in range(5):
                bots.append(
                    await connect_bot(stack, f"netem-{i}", random_walk, i, via=proxy.address)
                )
            await wait_for(lambda: all(b.client.snapshots > 10 for b in bots), 10.0, "snapshots")
            start = [(own_position(b).copy(), world_of(b).last_input_seq) for b in bots]
            snapshots = [b.client.snapshots for b in bots]
            await asyncio.sleep(3.0)
            for b, (position, input_seq), count in zip(bots, start, snapshots, strict=True):
                assert b.client.connected, b.client.disconnected
                assert world_of(b).last_input_seq > input_seq  # the zone applies inputs
                assert float(np.linalg.norm(own_position(b) - position)) > 0.5
                assert b.client.snapshots > count + 20
                assert world_of(b).decode_errors == 0
            up, down = proxy.counters
            assert up.lost > 0 and down.lost > 0
            assert abs(down.lost / down.received - 0.05) < 0.03
        finally:
            for b in bots:
                await b.client.close()


async def test_reliable_events_arrive_exactly_once_in_order_through_loss_and_jitter(
    stack: Stack,
) -> None:
    """5 % loss and 100 ms +- 20 ms each way: every client gets one SPEED_CLAMPED
    event per over-long move (its amount the excess), once and in order, and as
    many reliable messages as the relay sent on its reliable channels; snapshots
    decode throughout."""
    await wait_for(
        lambda: stack.metric("tessera_relay_sessions", transport="udp") == 0, 15.0, "no sessions"
    )
    sent = stack.metric("tessera_relay_reliable_messages_total")
    resent = stack.metric("tessera_relay_retransmissions_total")
    host, port = stack.udp_address.split(":")
    bad = Conditions(loss=0.05, delay_ms=100, jitter_ms=20)
    count = 40
    async with NetemProxy((host, int(port)), up=bad, down=bad, seed=5) as proxy:
        clients: list[GameClient] = []
        try:
            for i in range(3):
                token = await guest_connect_token(
                    stack.auth.grpc_address, f"device-netem-events-{i}-0123456789"
                )
                del token.relay_addresses[:]
                token.relay_addresses.append(proxy.address)
                client = GameClient(UdpTransport())
                await client.connect(token)
                clients.append(client)
            # Over-long moves, then ordinary ones so that each of them travels in
            # several packets (inputs are unreliable, repeated in the next ones).
            moves = [1.0 + k / 100.0 for k in range(1, count + 1)] + [0.5] * 10
            for move in moves:
                for client in clients:
                    client.send_intent(Intent(move_x=move), 0.05)
                await asyncio.sleep(0.05)

            def clamps(client: GameClient) -> list[float]:
                kind = zone_pb2.PlayerEvent.SPEED_CLAMPED
                return [m.event.amount for m in client.events if m.event.kind == kind]

            def delivered() -> int:
                total = 0
                for client in clients:
                    connection = udp(client).connection
                    assert connection is not None
                    total += connection.receiver.delivered
                return total

            await wait_for(lambda: all(len(clamps(c)) >= count for c in clients), 20.0, "events")
            await wait_for(
                lambda: stack.metric("tessera_relay_reliable_messages_total") - sent == delivered(),
                10.0,
                "every reliable message the relay sent",
            )
            await asyncio.sleep(1.0)  # room for a duplicate to show up
            want = pytest.approx([k / 100.0 for k in range(1, count + 1)], abs=1e-4)
            for client in clients:
                assert client.connected, client.disconnected
                assert clamps(client) == want
                assert client.world is not None and client.world.decode_errors == 0
                assert client.snapshots > 20
            assert stack.metric("tessera_relay_reliable_messages_total") - sent == delivered()
            assert stack.metric("tessera_relay_retransmissions_total") > resent
            up, down = proxy.counters
            assert up.lost > 0 and down.lost > 0
        finally:
            for client in clients:
                await client.close()


async def teams_in(address: str) -> dict[str, tuple[int, str]]:
    """Each player's team and match id as the zone's status lists them."""
    async with LOCAL.channel(address) as channel:
        stub: Any = zone_pb2_grpc.ZoneStub(channel)
        status = await stub.GetStatus(zone_pb2.GetStatusRequest(include_entities=True))
    return {
        p: (team, match)
        for p, team, match in zip(
            status.entity_players, status.entity_teams, status.entity_matches, strict=True
        )
        if p
    }


async def arena_assignments(
    mm: ServiceProcess, sessions: list[auth_pb2.Session]
) -> list[matchmaking_pb2.Assignment]:
    """Queue each player for the arena; their assignments once the match is made."""
    async with grpc.aio.insecure_channel(mm.grpc_address) as channel:
        stub: Any = matchmaking_pb2_grpc.MatchmakerStub(channel)
        tickets = [
            await stub.CreateTicket(
                matchmaking_pb2.CreateTicketRequest(
                    mode="arena",
                    players=[matchmaking_pb2.TicketPlayer(player_id=s.account_id)],
                    regions=[matchmaking_pb2.RegionLatency(region="default", latency_ms=10)],
                ),
                metadata=(("authorization", f"Bearer {s.access_token}"),),
                timeout=10,
            )
            for s in sessions
        ]
        out = []
        for session, ticket in zip(sessions, tickets, strict=True):
            async for seen in stub.WatchAssignment(
                matchmaking_pb2.WatchAssignmentRequest(ticket_id=ticket.id),
                metadata=(("authorization", f"Bearer {session.access_token}"),),
                timeout=20,
            ):
                if seen.state == matchmaking_pb2.TICKET_STATE_ASSIGNED:
                    out.append(seen.assignment)
                    break
        assert len(out) == len(sessions), out
        return out


ARENA = {"name": "arena", "teams": 2, "team_size": 1, "world": WORLD, "destination": "instance"}


async def test_an_arena_match_reaches_the_instance_zone_with_its_teams(stack: Stack) -> None:
    """The matchmaker makes an arena match (two guests, one live in zone-a); the
    connect tokens it gets from auth carry the match context, and the relay joins
    both players into the match's instance zone with their match id and distinct
    teams. The instance killed and restarted restores them from checkpoints with
    their teams; drained into zone-a, they are on no team there."""
    mm = ServiceProcess(
        "tessera.matchmaking",
        {
            **{k: v for k, v in stack.relay_env.items() if not k.startswith("TESSERA_UDP")},
            "TESSERA_REDIS_URL": component_url(stack.redis_url, "matchmaking"),
            "TESSERA_MM_CLIENT_SECRET": SERVICE_SECRET,
            "TESSERA_MM_MODES": json.dumps([ARENA]),
        },
        name="matchmaking",
    ).start()
    sessions = [
        await guest_login(stack.auth.grpc_address, f"device-arena-{side}-0123456789")
        for side in "ab"
    ]
    players = [s.account_id for s in sessions]
    clients: list[GameClient] = []
    instance: ServiceProcess | None = None
    try:
        # One player is live in the open world first (the transfer path).
        live = GameClient(UdpTransport())
        clients.append(live)
        await live.connect(await connect_token(stack.auth.grpc_address, sessions[0].access_token))
        await asyncio.to_thread(mm.wait_serving)
        assignments = await arena_assignments(mm, sessions)
        match = assignments[0].match_id
        zone = assignments[0].destination.zone
        assert zone == instance_zone(match)
        teams = {a.players[0].player_id: a.players[0].team for a in assignments}
        assert sorted(teams.values()) == [0, 1]
        env = {**stack.zone_env, "TESSERA_ZONE": zone, "TESSERA_ZONE_INSTANCE": match}
        instance = ServiceProcess("tessera.zone", env, name=zone).start()
        await zones_up(stack, instance)
        for assignment in assignments:
            client = GameClient(UdpTransport())
            clients.append(client)
            await client.connect(assignment.players[0].connect_token)
        # The zone knows the match and the teams (the match's index + 1; 0 is none).
        want = {p: (teams[p] + 1, match) for p in players}
        assert await teams_in(instance.grpc_address) == want
        assert not set(players) & set(await teams_in(stack.zone.grpc_address))
        await asyncio.sleep(0.5)  # a checkpoint round (TESSERA_CHECKPOINT_S=0.2)

        # kill -9: the restarted instance restores both from their checkpoints.
        instance.kill()
        instance = ServiceProcess("tessera.zone", env, name=zone).start()
        await zones_up(stack, instance)
        assert await teams_in(instance.grpc_address) == want

        # Drained into zone-a, the players leave the match's teams behind.
        async with LOCAL.channel(instance.grpc_address) as channel:
            stub: Any = zone_pb2_grpc.ZoneStub(channel)
            target = common_pb2.ZoneRef(world=WORLD, zone="zone-a")
            await stub.Drain(zone_pb2.DrainRequest(target=target))

        async def handed_over() -> bool:
            return set(players) <= set(await teams_in(stack.zone.grpc_address))

        await eventually(handed_over, 15.0, "the handoff into zone-a")
        here = await teams_in(stack.zone.grpc_address)
        assert {p: here[p] for p in players} == {p: (0, "") for p in players}
    finally:
        for client in clients:
            await client.close()
        if instance is not None:
            await stop_zones(stack, instance)
        mm.terminate()
