"""Two connections over a simulated network: reliable messages arrive exactly once
and in order through loss, duplication and reordering; snapshots fragment and
reassemble or are lost whole; acks piggyback; RTT comes from the echoed clock."""

from __future__ import annotations

import os
import random

import pytest

from tessera.wire import packet, reliable
from tessera.wire.connection import Connection, Tally, clock_ms
from tessera.wire.packet import PacketError


def pair() -> tuple[Connection, Connection]:
    c2s, s2c = os.urandom(32), os.urandom(32)
    return Connection(s2c, c2s), Connection(c2s, s2c)


def messages(conn: Connection, datagrams: list[bytes], now: float) -> list[tuple[bytes, bool]]:
    out: list[tuple[bytes, bool]] = []
    for datagram in datagrams:
        out += conn.receive(datagram, now).messages
    return out


def test_unreliable_and_reliable_messages_are_delivered_and_flagged() -> None:
    relay, client = pair()
    got = messages(client, relay.send(b"snap", 0.0) + relay.send_reliable(b"hit", 0.0), 0.01)
    assert got == [(b"snap", False), (b"hit", True)]
    assert messages(client, relay.send(b"", 0.02), 0.03) == []  # keep-alive


def test_a_large_message_is_fragmented_within_max_packet_and_reassembled() -> None:
    relay, client = pair()
    snapshot = os.urandom(5000)
    datagrams = relay.send(snapshot, 0.0)
    assert len(datagrams) == 5 and max(map(len, datagrams)) <= packet.MAX_PACKET
    random.Random(1).shuffle(datagrams)
    assert messages(client, datagrams, 0.0) == [(snapshot, False)]


def test_a_snapshot_missing_a_fragment_is_dropped_not_retransmitted() -> None:
    tally = Tally()
    relay, client = _linked(tally)
    datagrams = relay.send(os.urandom(3000), 0.0)
    assert messages(client, datagrams[1:], 0.0) == []
    assert relay.poll(5.0) == [] and relay.deadline() is None  # nothing to resend
    assert messages(client, relay.send(b"next", 5.0), 5.0) == [(b"next", False)]
    assert tally.drops == {"fragment_timeout": 1}


def _linked(tally: Tally) -> tuple[Connection, Connection]:
    c2s, s2c = os.urandom(32), os.urandom(32)
    return Connection(s2c, c2s), Connection(c2s, s2c, tally)


def test_acks_ride_on_traffic_and_go_alone_only_after_the_delay() -> None:
    relay, client = pair()
    client.receive(relay.send_reliable(b"event", 0.0)[0], 0.0)
    assert client.deadline() == pytest.approx(reliable.ACK_DELAY_S)
    assert client.poll(reliable.ACK_DELAY_S / 2) == []
    # An input goes out first: the ack rides on it.
    relay.receive(client.send(b"input", 0.01)[0], 0.02)
    assert relay.unacked == 0 and client.deadline() is None
    # Nothing to ride on: after the delay the ack goes alone.
    client.receive(relay.send_reliable(b"event 2", 1.0)[0], 1.0)
    alone = client.poll(1.0 + reliable.ACK_DELAY_S)
    assert len(alone) == 1
    assert messages(relay, alone, 1.1) == [] and relay.unacked == 0


def test_rtt_from_the_echoed_clock_subtracts_the_hold_time() -> None:
    relay, client = pair()
    relay.receive(client.send(b"input", 10.000)[0], 10.005)
    # The relay holds the client's time 30 ms before its next packet echoes it.
    received = client.receive(relay.send(b"snap", 10.035)[0], 10.040)
    assert received.rtt_ms == pytest.approx(10.0, abs=1.0)
    assert client.sender.srtt == pytest.approx(0.010, abs=0.001)
    # An echo goes out once: the next packet carries none.
    assert client.receive(relay.send(b"snap", 10.05)[0], 10.06).rtt_ms is None


def test_the_clock_wraps() -> None:
    assert clock_ms(2**32 / 1000.0 + 0.5) == 500
    relay, client = pair()
    start = (2**32 - 5) / 1000.0  # 5 ms before the wrap
    relay.receive(client.send(b"i", start)[0], start)
    # 20 ms out and back, 10 of them held by the relay.
    assert client.receive(relay.send(b"s", start + 0.01)[0], start + 0.02).rtt_ms == pytest.approx(
        10.0, abs=1.0
    )


def test_retransmissions_are_packed_and_counted() -> None:
    tally = Tally()
    relay, client = _linked(tally)
    relay.tally = tally
    for i in range(10):
        relay.send_reliable(bytes(300) + bytes([i]), 0.0)  # all lost
    resent = relay.poll(reliable.INITIAL_RTO_S)
    assert len(resent) == 4  # three 300-byte frames per datagram
    assert max(map(len, resent)) <= packet.MAX_PACKET
    assert tally.retransmissions == 10
    got = messages(client, resent, 1.0)
    assert [m[-1] for m, _ in got] == list(range(10))


def test_a_resend_of_an_acknowledged_message_sends_nothing() -> None:
    relay, client = pair()
    client.receive(relay.send_reliable(b"accepted", 0.0)[0], 0.0)
    assert relay.resend(1, 0.01) != []  # still unacked: sent again
    relay.receive(client.send(b"", 0.02)[0], 0.03)
    assert relay.resend(1, 0.04) == []


def test_a_reliable_message_larger_than_a_datagram_is_refused() -> None:
    relay, _client = pair()
    with pytest.raises(ValueError, match="exceeds"):
        relay.send_reliable(bytes(packet.MAX_RELIABLE + 1), 0.0)
    assert relay.unacked == 0


def test_garbage_and_replays_change_nothing() -> None:
    relay, client = pair()
    datagram = relay.send_reliable(b"once", 0.0)[0]
    assert messages(client, [datagram], 0.0) == [(b"once", True)]
    with pytest.raises(PacketError, match="replay"):
        client.receive(datagram, 0.0)
    forged = relay.send_reliable(b"twice", 0.0)[0]
    with pytest.raises(PacketError, match="decrypt"):
        client.receive(forged[:9] + bytes(len(forged) - 9), 0.0)
    assert messages(client, [forged], 0.0) == [(b"twice", True)]


@pytest.mark.parametrize("seed", range(8))
def test_events_arrive_exactly_once_in_order_through_a_bad_network(seed: int) -> None:
    """30 % loss, 10 % duplication and reordering both ways, for 200 events sent
    beside a 20 Hz snapshot stream; both ends poll every 10 ms."""
    rnd = random.Random(seed)
    relay, client = pair()
    in_flight: list[tuple[float, str, bytes]] = []

    def net(datagrams: list[bytes], to: str, now: float) -> None:
        for datagram in datagrams:
            if rnd.random() < 0.3:
                continue
            copies = 2 if rnd.random() < 0.1 else 1
            for _ in range(copies):
                in_flight.append((now + rnd.uniform(0.005, 0.06), to, datagram))

    events = [f"event {i}".encode() for i in range(200)]
    delivered: list[bytes] = []
    now = 0.0
    step = 0
    while now < 60.0 and len(delivered) < len(events):
        now = step * 0.01
        if step < len(events):
            net(relay.send_reliable(events[step], now), "client", now)
        if step % 5 == 0:
            net(relay.send(os.urandom(1500), now), "client", now)  # a fragmented snapshot
            net(client.send(b"input", now), "relay", now)
        net(relay.poll(now), "client", now)
        net(client.poll(now), "relay", now)
        arrived = sorted((item for item in in_flight if item[0] <= now), key=lambda i: i[0])
        in_flight[:] = [item for item in in_flight if item[0] > now]
        for _, to, datagram in arrived:
            try:
                got = (client if to == "client" else relay).receive(datagram, now)
            except PacketError as err:
                assert err.reason == "replay"  # the second copy of a duplicated datagram
                continue
            delivered += [m for m, rel in got.messages if rel]
        step += 1
    assert delivered == events
