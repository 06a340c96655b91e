"""Wire format: handshake, ping/pong, AEAD DATA packets, replay window."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.wire import packet
from tessera.wire.packet import Channel, PacketError, ReplayWindow


def pair() -> tuple[Channel, Channel]:
    c2s, s2c = os.urandom(32), os.urandom(32)
    return Channel(c2s, s2c), Channel(s2c, c2s)


def test_handshake_round_trip_and_padding() -> None:
    token = os.urandom(300)
    datagram = packet.encode_handshake(token)
    assert len(datagram) == packet.HANDSHAKE_SIZE == packet.MAX_PACKET
    assert datagram[0] == packet.HANDSHAKE
    assert packet.decode_handshake(datagram) == token


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"\x01\x01\x05\x00abcde", "handshake_size"),
        (b"\x01\x02\x01\x00x" + bytes(1195), "handshake_version"),
        (b"\x01\x01\x00\x00" + bytes(1196), "handshake_malformed"),
        (b"\x01\x01\xff\xff" + bytes(1196), "handshake_malformed"),
    ],
)
def test_bad_handshakes(datagram: bytes, reason: str) -> None:
    with pytest.raises(PacketError) as err:
        packet.decode_handshake(datagram)
    assert err.value.reason == reason


def test_oversized_token_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        packet.encode_handshake(bytes(1197))


def test_pong_never_larger_than_ping() -> None:
    ping = packet.encode_ping(7, 123.5)
    assert packet.decode_ping(ping) == (7, 123.5)
    pong = packet.encode_pong(7, 123.5, 999.0)
    assert len(pong) <= len(ping)
    assert packet.decode_pong(pong) == (7, 123.5, 999.0)
    with pytest.raises(PacketError, match="ping_size"):
        packet.decode_ping(ping[:-1])


def test_data_round_trip_with_acks() -> None:
    client, server = pair()
    seq, datagram = client.seal(b"hello")
    assert seq == 1 and datagram[0] == packet.DATA
    assert len(datagram) == packet.DATA_OVERHEAD + 5
    opened = server.open(datagram)
    assert (opened.sequence, opened.message, opened.ack) == (1, b"hello", 0)
    for _ in range(3):
        server.open(client.seal(b"")[1])
    _, reply = server.seal(b"x")
    back = client.open(reply)
    assert back.ack == 4
    assert back.ack_bits & 0b111 == 0b111  # 3, 2, 1 received


def test_replayed_and_tampered_packets_refused() -> None:
    client, server = pair()
    _, datagram = client.seal(b"move")
    server.open(datagram)
    with pytest.raises(PacketError, match="replay"):
        server.open(datagram)
    _, other = client.seal(b"move")
    tampered = other[:-1] + bytes([other[-1] ^ 1])
    with pytest.raises(PacketError, match="decrypt"):
        server.open(tampered)
    # The sequence is authenticated: rewriting it breaks the tag.
    shifted = other[:1] + (99).to_bytes(8, "little") + other[9:]
    with pytest.raises(PacketError, match="decrypt"):
        server.open(shifted)
    # A failed open does not burn the sequence: the genuine packet still opens.
    assert server.open(other).message == b"move"


def test_wrong_direction_key_fails() -> None:
    client, _server = pair()
    _, datagram = client.seal(b"x")
    with pytest.raises(PacketError, match="decrypt"):
        client.open(datagram)


def test_short_data_refused() -> None:
    _, server = pair()
    with pytest.raises(PacketError, match="data_size"):
        server.open(b"\x02" + bytes(10))


def test_window_refuses_too_old_and_tracks_loss() -> None:
    window = ReplayWindow()
    for seq in (1, 2, 4, 5):
        assert window.check(seq)
        window.accept(seq)
    assert window.check(3)
    assert not window.check(4)
    assert window.loss == pytest.approx(0.2)
    window.accept(1000)
    assert not window.check(1000 - packet.REPLAY_WINDOW)
    assert window.check(1000 - packet.REPLAY_WINDOW + 1)
    assert not window.check(0)


@given(st.lists(st.integers(1, 600), max_size=200))
def test_window_accepts_each_sequence_at_most_once(seqs: list[int]) -> None:
    window = ReplayWindow()
    accepted: list[int] = []
    for seq in seqs:
        if window.check(seq):
            window.accept(seq)
            accepted.append(seq)
    assert len(accepted) == len(set(accepted))
    # Anything new and no older than the window is always accepted.
    highest = max(accepted, default=0)
    assert set(seqs) - set(accepted) <= set(range(1, max(1, highest - packet.REPLAY_WINDOW + 1)))
