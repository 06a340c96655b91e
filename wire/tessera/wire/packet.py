"""The relay's UDP wire format (protocol v2): datagram framing, the AEAD channel,
the replay window, and the frames inside a DATA packet.

Every datagram starts with a one-byte type. HANDSHAKE (and RESUME) carries a
connect token (resume credential) in the clear, its secret part sealed for the
relay, and is padded to :data:`MAX_PACKET`, so every answer is smaller than the
request. DATA packets carry a 64-bit sequence number in the clear and a
ChaCha20-Poly1305 ciphertext whose nonce is that sequence; inside are a small
header (the sender's clock, the echo of the peer's, reliable acks) and frames:
unreliable messages, reliable messages and fragments. REFUSED tells a client
with a genuine token why no session opened, under a random nonce so that it
never collides with the session's own sequence numbers. PING / PONG need no
session and the pong is never larger than the ping. docs/protocol/udp.md is the
normative description; this module is its reference implementation, shared by
the relay and the client SDK.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

VERSION = 2
# The version before reliable frames and fragments; refused with VERSION_UNSUPPORTED.
VERSION_1 = 1
MAX_PACKET = 1200
HANDSHAKE_SIZE = MAX_PACKET

HANDSHAKE = 0x01
DATA = 0x02
PING = 0x03
PONG = 0x04
RESUME = 0x05
REFUSED = 0x06

# Frame kinds inside a DATA packet.
MESSAGE = 0x01
RELIABLE = 0x02
FRAGMENT = 0x03

# Header flags.
HAS_ECHO = 0x01
HAS_ACK = 0x02

TAG_SIZE = 16
KEY_SIZE = 32
NONCE_SIZE = 12
REPLAY_WINDOW = 256

_DATA_HEADER = struct.Struct("<BQ")  # type, sequence
_HANDSHAKE_HEADER = struct.Struct("<BBH")  # type, version, token length
_PING = struct.Struct("<BQd")  # type, id, client_time_ms
_PONG = struct.Struct("<BQdd")  # type, id, client_time_ms, server_time_ms
_NONCE_PREFIX = b"\x00\x00\x00\x00"
_SEQ = struct.Struct("<Q")
_V1_ACKS = bytes(12)  # a version-1 plaintext's ack (u64) and ack_bits (u32), all zero

_FLAGS_TIME = struct.Struct("<BI")  # flags, time_ms
_ECHO = struct.Struct("<IH")  # echo_ms, hold_ms
_ACK = struct.Struct("<II")  # reliable ack, ack_bits
_MESSAGE = struct.Struct("<BH")  # kind, length
_RELIABLE = struct.Struct("<BIH")  # kind, reliable sequence, length
_FRAGMENT = struct.Struct("<BHBBH")  # kind, group, index, count, length

DATA_OVERHEAD = _DATA_HEADER.size + TAG_SIZE
HEADER_MAX = _FLAGS_TIME.size + _ECHO.size + _ACK.size
# Room for frames in one datagram, whatever the header holds.
FRAME_BUDGET = MAX_PACKET - DATA_OVERHEAD - HEADER_MAX
MAX_MESSAGE = FRAME_BUDGET - _MESSAGE.size
MAX_RELIABLE = FRAME_BUDGET - _RELIABLE.size
FRAGMENT_CHUNK = FRAME_BUDGET - _FRAGMENT.size
PONG_SIZE = _PONG.size
PING_MIN_SIZE = PONG_SIZE


class PacketError(ValueError):
    """A datagram that does not follow the wire format; ``reason`` is a stable label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_handshake(token: bytes, kind: int = HANDSHAKE, version: int = VERSION) -> bytes:
    """A HANDSHAKE (or, with ``kind=RESUME``, a RESUME) datagram: header, the
    connect token (resume credential), zero padding up to HANDSHAKE_SIZE."""
    if len(token) > HANDSHAKE_SIZE - _HANDSHAKE_HEADER.size:
        raise ValueError("connect token too large for a handshake packet")
    head = _HANDSHAKE_HEADER.pack(kind, version, len(token)) + token
    return head + bytes(HANDSHAKE_SIZE - len(head))


def decode_handshake(packet: bytes, what: str = "handshake") -> tuple[int, bytes]:
    """(version, connect token) of a HANDSHAKE datagram (the credential of a
    RESUME, with ``what="resume"``); the version is VERSION or VERSION_1;
    PacketError("<what>_size" / "_version" / "_malformed")."""
    if len(packet) != HANDSHAKE_SIZE:
        raise PacketError(f"{what}_size")
    _type, version, length = _HANDSHAKE_HEADER.unpack_from(packet)
    if version not in (VERSION, VERSION_1):
        raise PacketError(f"{what}_version")
    end = _HANDSHAKE_HEADER.size + length
    if length == 0 or end > len(packet):
        raise PacketError(f"{what}_malformed")
    return version, bytes(packet[_HANDSHAKE_HEADER.size : end])


def seal_refusal(send_key: bytes, message: bytes, nonce: bytes | None = None) -> bytes:
    """A REFUSED datagram: ``message`` sealed with ``send_key`` under a random nonce
    (``nonce`` fixes it, for the conformance vectors)."""
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    head = bytes([REFUSED])
    return head + nonce + ChaCha20Poly1305(send_key).encrypt(nonce, message, head)


def open_refusal(recv_key: bytes, packet: bytes) -> bytes:
    """The message of a REFUSED datagram; PacketError("refused_malformed"/"decrypt")."""
    if len(packet) < 1 + NONCE_SIZE + TAG_SIZE or packet[0] != REFUSED:
        raise PacketError("refused_malformed")
    nonce = packet[1 : 1 + NONCE_SIZE]
    try:
        return ChaCha20Poly1305(recv_key).decrypt(nonce, packet[1 + NONCE_SIZE :], packet[:1])
    except InvalidTag:
        raise PacketError("decrypt") from None


def seal_v1(send_key: bytes, message: bytes) -> bytes:
    """``message`` as the first DATA packet of a version-1 connection (sequence 1,
    no acks): how a version-1 client can read why it is refused. The message is
    always the same, so repeating it reuses the nonce on the same plaintext only."""
    header = _DATA_HEADER.pack(DATA, 1)
    nonce = _NONCE_PREFIX + _SEQ.pack(1)
    return header + ChaCha20Poly1305(send_key).encrypt(nonce, _V1_ACKS + message, header)


def encode_ping(ping_id: int, client_time_ms: float, size: int = PING_MIN_SIZE) -> bytes:
    """A PING datagram padded to ``size`` (at least PING_MIN_SIZE)."""
    head = _PING.pack(PING, ping_id, client_time_ms)
    return head + bytes(max(size, PING_MIN_SIZE) - len(head))


def decode_ping(packet: bytes) -> tuple[int, float]:
    """(id, client_time_ms) of a PING; PacketError if it is smaller than a PONG."""
    if len(packet) < PING_MIN_SIZE:
        raise PacketError("ping_size")
    _type, ping_id, client_time_ms = _PING.unpack_from(packet)
    return ping_id, client_time_ms


def encode_pong(ping_id: int, client_time_ms: float, server_time_ms: float) -> bytes:
    """The PONG answering a PING (PONG_SIZE bytes)."""
    return _PONG.pack(PONG, ping_id, client_time_ms, server_time_ms)


def decode_pong(packet: bytes) -> tuple[int, float, float]:
    """(id, client_time_ms, server_time_ms) of a PONG."""
    if len(packet) != PONG_SIZE or packet[0] != PONG:
        raise PacketError("pong_malformed")
    _type, ping_id, client_ms, server_ms = _PONG.unpack(packet)
    return ping_id, client_ms, server_ms


# -- the plaintext of a DATA packet ----------------------------------------


class Frame(NamedTuple):
    """One frame: ``kind`` MESSAGE, RELIABLE (``sequence``) or FRAGMENT (chunk
    ``piece`` of ``pieces`` of ``group``), and its bytes. (Named tuples: one is
    built per frame received.)"""

    kind: int
    data: bytes
    sequence: int = 0
    group: int = 0
    piece: int = 0
    pieces: int = 0


class Contents(NamedTuple):
    """The decoded plaintext of a DATA packet."""

    time_ms: int
    echo: tuple[int, int] | None  # (echo_ms, hold_ms)
    ack: tuple[int, int] | None  # (reliable ack, ack_bits)
    frames: list[Frame]


def message_frame(data: bytes) -> bytes:
    return _MESSAGE.pack(MESSAGE, len(data)) + data


def reliable_frame(sequence: int, data: bytes) -> bytes:
    return _RELIABLE.pack(RELIABLE, sequence, len(data)) + data


def fragment_frame(group: int, index: int, count: int, data: bytes) -> bytes:
    return _FRAGMENT.pack(FRAGMENT, group, index, count, len(data)) + data


def encode_contents(
    time_ms: int,
    echo: tuple[int, int] | None,
    ack: tuple[int, int] | None,
    frames: list[bytes],
) -> bytes:
    """The plaintext of a DATA packet: flags, time, optional echo and ack, frames."""
    flags = (HAS_ECHO if echo is not None else 0) | (HAS_ACK if ack is not None else 0)
    parts = [_FLAGS_TIME.pack(flags, time_ms)]
    if echo is not None:
        parts.append(_ECHO.pack(*echo))
    if ack is not None:
        parts.append(_ACK.pack(*ack))
    parts.extend(frames)
    return b"".join(parts)


def decode_contents(plain: bytes) -> Contents:
    """Parse a DATA plaintext; PacketError("frame_malformed") if it does not parse."""
    try:
        flags, time_ms = _FLAGS_TIME.unpack_from(plain)
        at = _FLAGS_TIME.size
        echo = ack = None
        if flags & HAS_ECHO:
            echo = _ECHO.unpack_from(plain, at)
            at += _ECHO.size
        if flags & HAS_ACK:
            ack = _ACK.unpack_from(plain, at)
            at += _ACK.size
        frames: list[Frame] = []
        size = len(plain)
        while at < size:
            kind = plain[at]
            if kind == MESSAGE:
                _k, length = _MESSAGE.unpack_from(plain, at)
                at += _MESSAGE.size
                frame = Frame(kind, plain[at : at + length])
            elif kind == RELIABLE:
                _k, sequence, length = _RELIABLE.unpack_from(plain, at)
                at += _RELIABLE.size
                frame = Frame(kind, plain[at : at + length], sequence=sequence)
            elif kind == FRAGMENT:
                _k, group, index, count, length = _FRAGMENT.unpack_from(plain, at)
                at += _FRAGMENT.size
                frame = Frame(kind, plain[at : at + length], 0, group, index, count)
            else:
                raise PacketError("frame_malformed")
            if at + length > size:
                raise PacketError("frame_malformed")
            at += length
            frames.append(frame)
    except struct.error:
        raise PacketError("frame_malformed") from None
    return Contents(time_ms, echo, ack, frames)


# -- the AEAD channel ---------------------------------------------------------


class ReplayWindow:
    """Accepts each sequence number at most once, within a sliding window.

    Sequences older than ``highest - REPLAY_WINDOW`` are refused, so a captured
    packet cannot be replayed later; ``received`` and ``expected`` give loss.
    """

    __slots__ = ("bits", "first", "highest", "received")

    def __init__(self) -> None:
        self.highest = 0
        self.bits = 0  # bit i set = sequence highest - i received
        self.first = 0
        self.received = 0

    def check(self, sequence: int) -> bool:
        """True if ``sequence`` is new and inside the window (does not record it)."""
        if sequence > self.highest:
            return True
        offset = self.highest - sequence
        return offset < REPLAY_WINDOW and not (self.bits >> offset) & 1 and sequence > 0

    def accept(self, sequence: int) -> None:
        """Record ``sequence`` (after its packet authenticated)."""
        if self.first == 0:
            self.first = sequence
        if sequence > self.highest:
            shift = sequence - self.highest
            self.bits = ((self.bits << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.highest = sequence
        else:
            self.bits |= 1 << (self.highest - sequence)
        self.received += 1

    @property
    def expected(self) -> int:
        return 0 if self.first == 0 else self.highest - self.first + 1

    @property
    def loss(self) -> float:
        expected = self.expected
        return 0.0 if expected == 0 else max(0.0, 1.0 - self.received / expected)


class Channel:
    """One direction pair of an encrypted connection: seals outgoing DATA packets
    with ``send_key`` and opens incoming ones with ``recv_key`` and a replay window.
    """

    __slots__ = ("_open", "_seal", "next_sequence", "window")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        if len(send_key) != KEY_SIZE or len(recv_key) != KEY_SIZE:
            raise ValueError("channel keys must be 32 bytes")
        self._seal = ChaCha20Poly1305(send_key).encrypt
        self._open = ChaCha20Poly1305(recv_key).decrypt
        self.next_sequence = 1
        self.window = ReplayWindow()

    def seal(self, plain: bytes) -> bytes:
        """The DATA datagram carrying ``plain`` under the next sequence."""
        sequence = self.next_sequence
        self.next_sequence = sequence + 1
        header = _DATA_HEADER.pack(DATA, sequence)
        return header + self._seal(_NONCE_PREFIX + _SEQ.pack(sequence), plain, header)

    def open(self, packet: bytes) -> bytes:
        """Authenticate and decrypt a DATA datagram; PacketError("replay"/"decrypt"/...)."""
        if len(packet) < DATA_OVERHEAD:
            raise PacketError("data_size")
        header = packet[: _DATA_HEADER.size]
        sequence = _SEQ.unpack_from(packet, 1)[0]
        if not self.window.check(sequence):
            raise PacketError("replay")
        try:
            plain = self._open(_NONCE_PREFIX + header[1:], packet[_DATA_HEADER.size :], header)
        except InvalidTag:
            raise PacketError("decrypt") from None
        self.window.accept(sequence)
        return plain
