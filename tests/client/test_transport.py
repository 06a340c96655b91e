"""The SDK's UDP transport against a peer speaking protocol v2 on a real loopback
socket (the peer is the wire package's Connection, as the relay uses it): the
handshake, a refusal, nothing before Accepted, RTT from the echoed clock, the
reliable goodbye both ways, and when a silent relay is probed or resumed from."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tessera.client.transport import RESUME_AFTER_S, ConnectError, UdpTransport
from tessera.v1 import auth_pb2, relay_pb2
from tessera.wire import packet
from tessera.wire.connection import Connection


class Peer(asyncio.DatagramProtocol):
    """The relay's side of one connection: answers the handshake as told."""

    def __init__(self, token: auth_pb2.ConnectToken) -> None:
        self.token = token
        self.connection = Connection(token.server_to_client_key, token.client_to_server_key)
        self.transport: Any = None
        self.client: Any = None
        self.handshakes = 0
        self.refuse = ""
        self.before_accepted: list[bytes] = []
        self.received: list[relay_pb2.ClientMessage] = []
        self.answer_pings = False
        self.resumes = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.monotonic()
        if data[0] == packet.HANDSHAKE:
            assert packet.decode_handshake(data) == (packet.VERSION, self.token.token)
            self.handshakes += 1
            fresh = addr != self.client
            self.client = addr
            if self.refuse:
                goodbye = relay_pb2.ServerMessage(
                    disconnected=relay_pb2.Disconnected(reason=self.refuse)
                )
                key = self.token.server_to_client_key
                self.transport.sendto(packet.seal_refusal(key, goodbye.SerializeToString()), addr)
            elif fresh:  # a new client socket: a new connection
                keys = self.token.server_to_client_key, self.token.client_to_server_key
                self.connection = Connection(*keys)
                self.send(*[self.connection.send(b, now)[0] for b in self.before_accepted])
                accepted = relay_pb2.ServerMessage(accepted=relay_pb2.Accepted(entity_id=7))
                self.send(*self.connection.send_reliable(accepted.SerializeToString(), now))
            return
        if data[0] == packet.RESUME:
            self.resumes += 1
            return
        for payload, _reliable in self.connection.receive(data, now).messages:
            message = relay_pb2.ClientMessage.FromString(payload)
            self.received.append(message)
            if self.answer_pings and message.HasField("ping"):
                pong = relay_pb2.ServerMessage(pong=relay_pb2.Pong(id=message.ping.id))
                self.send(*self.connection.send(pong.SerializeToString(), now))
        self.send(*self.connection.poll(now))

    def send(self, *datagrams: bytes) -> None:
        for datagram in datagrams:
            self.transport.sendto(datagram, self.client)

    def post(self, message: relay_pb2.ServerMessage) -> None:
        self.send(*self.connection.send_reliable(message.SerializeToString(), time.monotonic()))


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    token = auth_pb2.ConnectToken(
        token=os.urandom(200),
        client_to_server_key=os.urandom(32),
        server_to_client_key=os.urandom(32),
        timeout_s=10,
    )
    made = Peer(token)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: made, local_addr=("127.0.0.1", 0)
    )
    token.relay_addresses.append(f"127.0.0.1:{transport.get_extra_info('sockname')[1]}")
    yield made
    transport.close()


async def test_accepted_opens_and_nothing_before_it_reaches_the_game(peer: Peer) -> None:
    snapshot = relay_pb2.ServerMessage(snapshot=relay_pb2.Snapshot(sequence=1))
    peer.before_accepted = [snapshot.SerializeToString()]
    client = UdpTransport()
    accepted = await client.connect(peer.token, 2.0)
    assert accepted.entity_id == 7 and client.drops == 1  # the early snapshot
    peer.send(*peer.connection.send(snapshot.SerializeToString(), time.monotonic()))
    message = await asyncio.wait_for(client.recv(), 2.0)
    assert message is not None and message.snapshot.sequence == 1
    await client.close("done")


async def test_a_refusal_is_read_and_raised(peer: Peer) -> None:
    peer.refuse = "NO_ZONE"
    with pytest.raises(ConnectError, match="NO_ZONE"):
        await UdpTransport().connect(peer.token, 2.0)


async def test_rtt_comes_from_the_echoed_clock(peer: Peer) -> None:
    client = UdpTransport()
    await client.connect(peer.token, 2.0)
    for _ in range(3):
        client.send(relay_pb2.ClientMessage(ping=relay_pb2.Ping(id=1)))
        await asyncio.sleep(0.02)
        peer.send(*peer.connection.send(b"", time.monotonic()))  # a keep-alive echoes
        await asyncio.sleep(0.02)
    assert client.stats.rtt_samples >= 1
    assert 0.0 <= client.stats.rtt_ms < 1000.0
    await client.close("done")


async def test_goodbyes_are_reliable_both_ways(peer: Peer) -> None:
    client = UdpTransport()
    await client.connect(peer.token, 2.0)
    await asyncio.sleep(0.1)
    assert peer.connection.unacked == 0  # Accepted was acknowledged
    # The client's Disconnect is acknowledged by the peer before close() returns.
    await client.close("bye")
    assert [m.disconnect.reason for m in peer.received if m.HasField("disconnect")] == ["bye"]
    assert client.connection is not None and client.connection.unacked == 0

    other = UdpTransport()
    await other.connect(peer.token, 2.0)
    peer.post(relay_pb2.ServerMessage(disconnected=relay_pb2.Disconnected(reason="KICKED")))
    message = await asyncio.wait_for(other.recv(), 2.0)
    assert message is not None and message.disconnected.reason == "KICKED"
    await asyncio.sleep(0.1)
    assert peer.connection.unacked == 0  # acknowledged at once
    await other.close("done")


async def with_credential(peer: Peer) -> UdpTransport:
    """A transport connected to ``peer`` and holding a resume credential."""
    client = UdpTransport()
    await client.connect(peer.token, 2.0)
    credential = relay_pb2.ResumeCredential(
        credential=os.urandom(64),
        client_to_server_key=os.urandom(32),
        server_to_client_key=os.urandom(32),
        expires_in_s=60,
    )
    peer.post(relay_pb2.ServerMessage(resume=credential))
    for _ in range(100):
        if client.credential is not None:
            return client
        await asyncio.sleep(0.02)
    raise AssertionError("the credential did not arrive")


def pings(peer: Peer) -> int:
    return sum(m.HasField("ping") for m in peer.received)


async def test_a_silent_relay_that_answers_probes_keeps_the_session(peer: Peer) -> None:
    """A relay that sends nothing of its own (a stalled zone: keep-alives only
    once a second) but answers the probes is not left."""
    peer.answer_pings = True
    client = await with_credential(peer)
    await asyncio.sleep(3 * RESUME_AFTER_S)
    assert pings(peer) >= 2
    assert peer.resumes == 0 and client.resumes == 0 and not client.resuming
    await client.close("done")


async def test_a_relay_that_answers_no_probe_is_resumed_from(peer: Peer) -> None:
    """A relay that answers nothing (killed, or the client's address changed) is
    probed, then left: RESUME datagrams follow."""
    client = await with_credential(peer)
    for _ in range(250):
        if peer.resumes:
            break
        await asyncio.sleep(0.02)
    assert peer.resumes >= 1 and client.resuming
    assert pings(peer) >= 1
    await client.close("done")
