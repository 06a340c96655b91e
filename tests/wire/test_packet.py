"""Wire format: handshake and version, ping/pong, REFUSED, AEAD DATA packets and
their frames, replay window."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
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
    assert datagram[:2] == bytes([packet.HANDSHAKE, 2])
    assert packet.decode_handshake(datagram) == (2, token)
    # A version-1 handshake still decodes (the relay refuses it with a reason).
    old = packet.encode_handshake(token, packet.RESUME, packet.VERSION_1)
    assert packet.decode_handshake(old, "resume") == (1, token)


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"\x01\x02\x05\x00abcde", "handshake_size"),
        (b"\x01\x03\x01\x00x" + bytes(1195), "handshake_version"),
        (b"\x01\x00\x01\x00x" + bytes(1195), "handshake_version"),
        (b"\x01\x02\x00\x00" + bytes(1196), "handshake_malformed"),
        (b"\x01\x02\xff\xff" + bytes(1196), "handshake_malformed"),
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


def test_data_round_trip() -> None:
    client, server = pair()
    datagram = client.seal(b"hello")
    assert datagram[0] == packet.DATA and datagram[1:9] == (1).to_bytes(8, "little")
    assert len(datagram) == packet.DATA_OVERHEAD + 5
    assert server.open(datagram) == b"hello"
    assert client.seal(b"")[1:9] == (2).to_bytes(8, "little")


def test_replayed_and_tampered_packets_refused() -> None:
    client, server = pair()
    datagram = client.seal(b"move")
    server.open(datagram)
    with pytest.raises(PacketError, match="replay"):
        server.open(datagram)
    other = client.seal(b"move")
    tampered = other[:-1] + bytes([other[-1] ^ 1])
    with pytest.raises(PacketError, match="decrypt"):
        server.open(tampered)
    # The sequence is authenticated: rewriting it breaks the tag.
    shifted = other[:1] + (99).to_bytes(8, "little") + other[9:]
    with pytest.raises(PacketError, match="decrypt"):
        server.open(shifted)
    # A failed open does not burn the sequence: the genuine packet still opens.
    assert server.open(other) == b"move"


def test_refusal_opens_with_the_key_and_uses_no_sequence() -> None:
    key = os.urandom(32)
    first, second = packet.seal_refusal(key, b"no zone"), packet.seal_refusal(key, b"no zone")
    assert first[0] == packet.REFUSED and first != second  # a fresh random nonce each
    assert packet.open_refusal(key, first) == b"no zone"
    with pytest.raises(PacketError, match="decrypt"):
        packet.open_refusal(os.urandom(32), first)
    with pytest.raises(PacketError, match="refused_malformed"):
        packet.open_refusal(key, first[:20])


def test_a_version_1_refusal_is_what_a_version_1_channel_reads() -> None:
    key = os.urandom(32)
    datagram = packet.seal_v1(key, b"bye")
    # Version 1: DATA, sequence 1, nonce = 4 zero bytes + sequence, plaintext =
    # ack (u64) + ack_bits (u32) + message.
    assert datagram[:9] == b"\x02" + (1).to_bytes(8, "little")
    plain = ChaCha20Poly1305(key).decrypt(bytes(4) + datagram[1:9], datagram[9:], datagram[:9])
    assert plain == bytes(12) + b"bye"


@pytest.mark.parametrize(
    ("echo", "ack", "frames"),
    [
        (None, None, []),
        ((123, 7), None, [packet.message_frame(b"snap")]),
        (None, (5, 0b101), [packet.reliable_frame(6, b"event"), packet.message_frame(b"")]),
        ((0xFFFFFFFF, 0xFFFF), (0, 0), [packet.fragment_frame(65535, 3, 4, b"chunk")]),
    ],
)
def test_contents_round_trip(
    echo: tuple[int, int] | None, ack: tuple[int, int] | None, frames: list[bytes]
) -> None:
    plain = packet.encode_contents(4_000_000_000, echo, ack, frames)
    decoded = packet.decode_contents(plain)
    assert (decoded.time_ms, decoded.echo, decoded.ack) == (4_000_000_000, echo, ack)
    assert len(decoded.frames) == len(frames)
    assert len(plain) == 5 + (6 if echo else 0) + (8 if ack else 0) + sum(map(len, frames))


def test_frames_decode_to_their_fields() -> None:
    plain = packet.encode_contents(
        1,
        None,
        None,
        [
            packet.reliable_frame(9, b"r"),
            packet.fragment_frame(2, 1, 3, b"f"),
            packet.message_frame(b"m"),
        ],
    )
    reliable, fragment, message = packet.decode_contents(plain).frames
    assert (reliable.kind, reliable.sequence, reliable.data) == (packet.RELIABLE, 9, b"r")
    assert (fragment.group, fragment.piece, fragment.pieces, fragment.data) == (2, 1, 3, b"f")
    assert (message.kind, message.data) == (packet.MESSAGE, b"m")


@pytest.mark.parametrize(
    "plain",
    [
        b"",  # no header
        b"\x01\x00\x00\x00\x00",  # says it has an echo, has none
        b"\x00\x00\x00\x00\x00\x09",  # unknown frame kind
        b"\x00\x00\x00\x00\x00\x01\x05\x00abc",  # message longer than the packet
        b"\x00\x00\x00\x00\x00\x02\x01\x00",  # truncated reliable frame header
    ],
)
def test_malformed_contents_refused(plain: bytes) -> None:
    with pytest.raises(PacketError, match="frame_malformed"):
        packet.decode_contents(plain)


def test_budgets_keep_every_datagram_within_max_packet() -> None:
    full = packet.encode_contents(
        0, (1, 1), (1, 1), [packet.fragment_frame(1, 0, 2, bytes(packet.FRAGMENT_CHUNK))]
    )
    assert packet.DATA_OVERHEAD + len(full) == packet.MAX_PACKET
    assert packet.MAX_MESSAGE > packet.MAX_RELIABLE == packet.FRAGMENT_CHUNK


def test_wrong_direction_key_fails() -> None:
    client, _server = pair()
    datagram = client.seal(b"x")
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
