"""The UDP endpoint on a real socket with real connect tokens and a real Redis:
sessionless traffic, abuse handling and handshake rejections (no zone needed)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
import tracemalloc
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from redis.asyncio import Redis

from tessera.auth.keys import SigningKey
from tessera.relay.admission import rejecting
from tessera.relay.errors import Rejected
from tessera.relay.gateway import Gateway, GatewayConfig
from tessera.relay.metrics import Counters
from tessera.relay.session import Session
from tessera.relay.store import RelayStore
from tessera.relay.udp import UdpEndpoint, UdpLimits
from tessera.v1 import relay_pb2, zone_pb2
from tessera.wire import packet, reliable
from tessera.wire.connect_token import (
    ConnectGrant,
    issue_connect_token,
    new_token_id,
    open_connect_token,
)
from tessera.wire.connection import Connection

SEALING_KEY = os.urandom(32)


@dataclass
class Relay:
    endpoint: UdpEndpoint
    gateway: Gateway
    counters: Counters
    address: str
    signing_key: SigningKey


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)

    async def nothing(self, wait_s: float = 0.2) -> bool:
        await asyncio.sleep(wait_s)
        return self.received.empty()


@pytest.fixture
async def relay(redis: Redis) -> AsyncIterator[Relay]:
    limits = UdpLimits(
        handshakes_per_s=50.0, pings_per_source_s=1000.0, handshakes_per_source_s=1000.0
    )
    async with running_relay(redis, limits) as started:
        yield started


@contextlib.asynccontextmanager
async def running_relay(redis: Redis, limits: UdpLimits) -> AsyncIterator[Relay]:
    key = SigningKey.generate()
    counters = Counters()
    holder: list[str] = []

    def opener(token: bytes, now: float) -> ConnectGrant:
        return open_connect_token(
            token,
            public_keys={key.kid: key.public_key},
            sealing_key=SEALING_KEY,
            relay_address=holder[0],
            now=now,
        )

    gateway = Gateway(
        GatewayConfig(relay_id="r1", world="w"),
        store=RelayStore(redis, "w"),
        opener=rejecting(opener),
        counters=counters,
    )
    endpoint = UdpEndpoint(gateway, counters, limits)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: endpoint, local_addr=("127.0.0.1", 0)
    )
    holder.append(f"127.0.0.1:{transport.get_extra_info('sockname')[1]}")
    yield Relay(endpoint, gateway, counters, holder[0], key)
    await gateway.close_all()
    transport.close()


async def client_for(relay: Relay, source: str = "127.0.0.1") -> Client:
    host, port = relay.address.split(":")
    _, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        Client, local_addr=(source, 0), remote_addr=(host, int(port))
    )
    return proto


def token(
    relay: Relay, *, expires_in: int = 60, address: str | None = None, key: SigningKey | None = None
) -> bytes:
    now = int(time.time())
    grant = ConnectGrant(
        token_id=new_token_id(),
        player_id="alice",
        session_id="s1",
        relay_addresses=(address or relay.address,),
        client_to_server_key=os.urandom(32),
        server_to_client_key=os.urandom(32),
        issued_at=now - 120,
        expires_at=now + expires_in,
        timeout_s=10,
    )
    return issue_connect_token(grant, signing_key=key or relay.signing_key, sealing_key=SEALING_KEY)


async def test_ping_answered_with_smaller_pong(relay: Relay) -> None:
    client = await client_for(relay)
    ping = packet.encode_ping(42, 1234.5, size=40)
    client.transport.sendto(ping)
    pong = await asyncio.wait_for(client.received.get(), 2.0)
    assert len(pong) <= len(ping)
    ping_id, client_ms, server_ms = packet.decode_pong(pong)
    assert (ping_id, client_ms) == (42, 1234.5)
    assert abs(server_ms - time.time() * 1000) < 5000
    client.transport.sendto(ping[:20])  # too small to be answered
    assert await client.nothing()
    assert relay.counters.drops["ping_size"] == 1


async def test_garbage_dropped_silently_and_counted(relay: Relay) -> None:
    client = await client_for(relay)
    client.transport.sendto(b"\x02" + os.urandom(60))  # DATA without a session
    client.transport.sendto(b"\x7f garbage")
    client.transport.sendto(os.urandom(1500))
    client.transport.sendto(b"\x01\x01\x10\x00short")  # handshake not padded
    assert await client.nothing()
    drops = relay.counters.drops
    assert drops["unknown_address"] == 2
    assert drops["too_large"] == 1
    assert drops["handshake_size"] == 1
    assert relay.counters.packets_in == 4 and relay.counters.packets_out == 0


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("forged", "bad_signature"),
        ("expired", "expired"),
        ("other_relay", "wrong_relay"),
        ("garbage", "malformed"),
    ],
)
async def test_bad_tokens_rejected_without_reply(relay: Relay, kind: str, reason: str) -> None:
    client = await client_for(relay)
    if kind == "forged":
        raw = token(relay, key=SigningKey.generate())
    elif kind == "expired":
        raw = token(relay, expires_in=-1)
    elif kind == "other_relay":
        raw = token(relay, address="10.0.0.1:7777")
    else:
        raw = os.urandom(300)
    client.transport.sendto(packet.encode_handshake(raw))
    assert await client.nothing()
    assert relay.counters.handshakes == {reason: 1}
    assert relay.counters.drops["handshake_rejected"] == 1
    assert len(relay.gateway.sessions) == 0


async def test_valid_token_without_zone_is_refused_and_released(relay: Relay) -> None:
    client = await client_for(relay)
    raw = token(relay)
    client.transport.sendto(packet.encode_handshake(raw))
    for _ in range(50):
        if relay.counters.handshakes:
            break
        await asyncio.sleep(0.02)
    assert relay.counters.handshakes == {"no_zone": 1}
    assert relay.endpoint.pending == {}
    # The holder of the token learns why, sealed with its server-to-client key
    # under a random nonce (a REFUSED datagram, not DATA: the session's sequence 1
    # stays free for Accepted).
    answer = await asyncio.wait_for(client.received.get(), 2.0)
    assert len(answer) < packet.HANDSHAKE_SIZE and answer[0] == packet.REFUSED
    grant = grant_of(relay, raw)
    message = relay_pb2.ServerMessage.FromString(
        packet.open_refusal(grant.server_to_client_key, answer)
    )
    assert message.disconnected.reason == "NO_ZONE"
    store = relay.gateway.store
    assert await store.redis.exists(store.spent_token_key(grant.token_id)) == 0


def grant_of(relay: Relay, raw: bytes) -> ConnectGrant:
    return open_connect_token(
        raw,
        public_keys={relay.signing_key.kid: relay.signing_key.public_key},
        sealing_key=SEALING_KEY,
        relay_address=relay.address,
        now=time.time(),
    )


async def test_a_version_1_client_reads_why_it_is_refused_and_keeps_its_token(
    relay: Relay,
) -> None:
    client = await client_for(relay)
    raw = token(relay)
    client.transport.sendto(packet.encode_handshake(raw, version=packet.VERSION_1))
    answer = await asyncio.wait_for(client.received.get(), 2.0)
    assert answer[0] == packet.DATA and len(answer) < packet.HANDSHAKE_SIZE
    # Read as a version-1 client reads its first DATA packet: nonce = 4 zero bytes
    # + the sequence, associated data = the 9 header bytes, plaintext = ack (u64)
    # + ack_bits (u32) + ServerMessage.
    key = grant_of(relay, raw).server_to_client_key
    plain = ChaCha20Poly1305(key).decrypt(bytes(4) + answer[1:9], answer[9:], answer[:9])
    message = relay_pb2.ServerMessage.FromString(plain[12:])
    assert message.disconnected.reason == "VERSION_UNSUPPORTED"
    assert relay.counters.handshakes == {"version_unsupported": 1}
    store = relay.gateway.store
    assert await store.redis.exists(store.spent_token_key(grant_of(relay, raw).token_id)) == 0
    # A version-1 handshake with a forged token gets no answer at all.
    forged = token(relay, key=SigningKey.generate())
    client.transport.sendto(packet.encode_handshake(forged, version=packet.VERSION_1))
    assert await client.nothing()
    assert relay.counters.handshakes["bad_signature"] == 1


async def test_handshake_rate_limited(relay: Relay) -> None:
    client = await client_for(relay)
    forged = packet.encode_handshake(os.urandom(200))
    for _ in range(80):
        client.transport.sendto(forged)
    await asyncio.sleep(0.3)
    assert relay.counters.drops["handshake_rate"] >= 20
    assert relay.counters.handshakes["malformed"] <= 60


async def test_a_ping_flood_from_one_source_is_cut_to_its_own_budget(redis: Redis) -> None:
    limits = UdpLimits(pings_per_source_s=10.0)
    async with running_relay(redis, limits) as relay:
        flooder = await client_for(relay, "127.0.0.1")
        ping = packet.encode_ping(1, 0.0)
        for _ in range(100):
            flooder.transport.sendto(ping)
        await asyncio.sleep(0.3)
        answered = flooder.received.qsize()
        # Burst of 2 s worth (20) plus what refilled meanwhile.
        assert 20 <= answered <= 25
        assert relay.counters.drops["ping_rate"] == 100 - answered
        assert relay.counters.bytes_out <= relay.counters.bytes_in
        other = await client_for(relay, "127.0.0.2")
        other.transport.sendto(ping)
        assert len(await asyncio.wait_for(other.received.get(), 2.0)) <= len(ping)


async def test_a_handshake_flood_from_one_source_leaves_others_the_relay_budget(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    limits = UdpLimits(handshakes_per_s=50.0, handshakes_per_source_s=10.0)
    async with running_relay(redis, limits) as relay:
        # One host, many ports (each port's first handshake is not yet pending).
        flooders = [await client_for(relay, "127.0.0.1") for _ in range(300)]
        forged = packet.encode_handshake(token(relay, key=SigningKey.generate()))
        for wave in range(10):  # paced, so the socket buffer does not drop them
            for flooder in flooders[wave * 30 : (wave + 1) * 30]:
                flooder.transport.sendto(forged)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        drops = relay.counters.drops
        assert relay.counters.packets_in == 300
        # Its burst (20) plus what refilled in ~0.2 s; the relay-wide budget (50) untouched.
        assert drops["handshake_source_rate"] >= 270
        assert drops["handshake_rate"] == 0
        # Another source's genuine handshake is still answered (no zone here: NO_ZONE).
        other = await client_for(relay, "127.0.0.2")
        started = time.monotonic()
        other.transport.sendto(packet.encode_handshake(token(relay)))
        answer = await asyncio.wait_for(other.received.get(), 2.0)
        assert time.monotonic() - started < 0.5
        assert len(answer) < packet.HANDSHAKE_SIZE
        assert relay.counters.handshakes["no_zone"] == 1
        assert all(flooder.received.empty() for flooder in flooders)
    # Rejections were logged as one summary line, not one line each.
    summaries = [r for r in caplog.records if r.getMessage() == "handshakes rejected"]
    assert len(summaries) == 1
    assert relay.counters.handshakes["bad_signature"] >= 20


async def test_a_token_spent_on_one_relay_is_refused_by_another(redis: Redis) -> None:
    limits = UdpLimits()
    async with running_relay(redis, limits) as first:
        raw = token(first)
        grant = await first.gateway.admission.admit(raw, time.time())
        assert grant.player_id == "alice"
        second = Gateway(
            GatewayConfig(relay_id="r2", world="w"),
            store=RelayStore(redis, "w"),
            opener=first.gateway.admission.opener,
            counters=Counters(),
        )
        with pytest.raises(Rejected) as info:
            await second.admission.admit(raw, time.time())
        assert info.value.reason == "replayed"
        # The mark lives exactly as long as the token.
        ttl = await redis.pttl(first.gateway.store.spent_token_key(grant.token_id))
        assert 55_000 < ttl <= 60_000
        # A released token (no session opened) is usable again, once.
        await first.gateway.admission.release(grant)
        assert (await second.admission.admit(raw, time.time())).token_id == grant.token_id
        with pytest.raises(Rejected):
            await first.gateway.admission.admit(raw, time.time())


def udp_session(relay: Relay, player: str, port: int) -> Session:
    """A UDP session wired as the endpoint wires one it opens (sealed sender,
    limits, close hook), registered in the gateway (no zone needed)."""
    now = time.monotonic()
    session = Session(
        player_id=player,
        transport="udp",
        token_id=os.urandom(16),
        timeout_s=10.0,
        created=now,
        last_seen=now,
        send=lambda _payload: None,
        post=lambda _payload: None,
        address=("127.0.0.1", port),
        accepted=b"accepted",
    )
    relay.endpoint.wire(session, Connection(os.urandom(32), os.urandom(32)), b"t")
    relay.gateway.sessions.add(session)
    return session


async def test_a_closed_session_is_freed_at_once_and_churn_leaves_memory_flat(
    relay: Relay,
) -> None:
    gc.collect()
    gc.disable()
    try:
        session = udp_session(relay, "alice", 40000)
        session.send(b"hello")  # the sender really is wired
        ref = weakref.ref(session)
        relay.gateway.close(session, "KICKED", "bye", leave=False)
        del session
        assert ref() is None  # freed by reference counting, no cycle left

        async def churn(rounds: int) -> None:
            for i in range(rounds):
                s = udp_session(relay, f"p{i}", 41000 + i % 1000)
                s.send(b"x")
                relay.gateway.close(s, "IDLE_TIMEOUT", "gone", leave=False)
                if i % 500 == 499:  # the presence heartbeat, every second in a relay
                    await relay.gateway.presence.update(time.time())

        tracemalloc.start()
        await churn(2000)
        first = tracemalloc.get_traced_memory()[0]
        await churn(6000)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        # 6000 more sessions opened and closed: a leak of even 100 B each is 600 kB.
        assert after - first < 100_000, (first, after)
        assert len(relay.gateway.sessions) == 0
    finally:
        gc.enable()


async def test_a_forged_or_short_resume_is_dropped_without_reply_and_counted(
    relay: Relay,
) -> None:
    client = await client_for(relay)
    forged = packet.encode_handshake(b"\x01" + os.urandom(200), packet.RESUME)
    client.transport.sendto(forged)
    client.transport.sendto(forged[:600])
    assert await client.nothing()
    assert relay.counters.resumes == {"forged": 1}
    assert relay.counters.drops["resume_rejected"] == 1
    assert relay.counters.drops["resume_size"] == 1
    assert relay.counters.packets_out == 0


async def test_a_stopping_relay_opens_no_session_and_spends_nothing(relay: Relay) -> None:
    """Once the drain has begun, a valid HANDSHAKE and a RESUME get no answer and
    are counted as ``draining``; the token is not spent (another relay takes it)."""
    await relay.gateway.drain(1.0)
    client = await client_for(relay)
    raw = token(relay)
    client.transport.sendto(packet.encode_handshake(raw))
    client.transport.sendto(packet.encode_handshake(b"\x01" + os.urandom(200), packet.RESUME))
    assert await client.nothing()
    assert relay.counters.drops["draining"] == 2
    assert not relay.counters.handshakes and not relay.counters.resumes
    assert relay.counters.packets_out == 0
    assert (await relay.gateway.admission.admit(raw, time.time())).player_id == "alice"


async def test_a_full_reliable_window_ends_the_session_once_and_counted(relay: Relay) -> None:
    client = await client_for(relay)
    port = client.transport.get_extra_info("sockname")[1]
    session = udp_session(relay, "alice", port)
    event = relay_pb2.ServerMessage(event=zone_pb2.PlayerEvent(player_id="alice"))
    for _ in range(reliable.WINDOW):
        session.post(event.SerializeToString())  # never acknowledged
    assert relay.gateway.sessions.by_player["alice"] is session  # still open
    session.post(event.SerializeToString())
    await asyncio.sleep(0.05)
    assert session.closed and relay.counters.reliable_overflows == 1
    assert relay.counters.session_ends == {"RELIABLE_OVERFLOW": 1}
    assert len(relay.gateway.sessions) == 0
    # Sent: the window, the overflowing message and the goodbye (both unreliably).
    assert relay.counters.packets_out == reliable.WINDOW + 2
    assert relay.counters.reliable_messages == reliable.WINDOW
