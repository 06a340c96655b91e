"""The relay's UDP wire format: packet framing, the AEAD channel and the replay window.

Every datagram starts with a one-byte type. HANDSHAKE carries a connect token in
the clear (its secret part is sealed for the relay by auth) and is padded to
:data:`HANDSHAKE_SIZE`, so the relay's answer is always smaller than the request.
DATA packets carry a 64-bit sequence number in the clear and a ChaCha20-Poly1305
ciphertext whose nonce is derived from that sequence; inside is an ack header and
one serialized ClientMessage / ServerMessage (empty = keep-alive). PING / PONG need
no session and the pong is never larger than the ping. docs/protocol/udp.md is the
normative description; this module is its reference implementation, shared by the
relay and the client SDK.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

VERSION = 1
MAX_PACKET = 1200
HANDSHAKE_SIZE = MAX_PACKET

HANDSHAKE = 0x01
DATA = 0x02
PING = 0x03
PONG = 0x04
RESUME = 0x05

TAG_SIZE = 16
KEY_SIZE = 32
REPLAY_WINDOW = 256

_DATA_HEADER = struct.Struct("<BQ")  # type, sequence
_ACKS = struct.Struct("<QI")  # ack, ack_bits
_HANDSHAKE_HEADER = struct.Struct("<BBH")  # type, version, token length
_PING = struct.Struct("<BQd")  # type, id, client_time_ms
_PONG = struct.Struct("<BQdd")  # type, id, client_time_ms, server_time_ms
_NONCE_PREFIX = b"\x00\x00\x00\x00"
_SEQ = struct.Struct("<Q")

DATA_OVERHEAD = _DATA_HEADER.size + _ACKS.size + TAG_SIZE
PONG_SIZE = _PONG.size
PING_MIN_SIZE = PONG_SIZE


class PacketError(ValueError):
    """A datagram that does not follow the wire format; ``reason`` is a stable label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_handshake(token: bytes, kind: int = HANDSHAKE) -> bytes:
    """A HANDSHAKE (or, with ``kind=RESUME``, a RESUME) datagram: header, the
    connect token (resume credential), zero padding up to HANDSHAKE_SIZE."""
    if len(token) > HANDSHAKE_SIZE - _HANDSHAKE_HEADER.size:
        raise ValueError("connect token too large for a handshake packet")
    head = _HANDSHAKE_HEADER.pack(kind, VERSION, len(token)) + token
    return head + bytes(HANDSHAKE_SIZE - len(head))


def decode_handshake(packet: bytes, what: str = "handshake") -> bytes:
    """The connect token of a HANDSHAKE datagram (the credential of a RESUME, with
    ``what="resume"``); PacketError("<what>_size" / "_version" / "_malformed")."""
    if len(packet) != HANDSHAKE_SIZE:
        raise PacketError(f"{what}_size")
    _type, version, length = _HANDSHAKE_HEADER.unpack_from(packet)
    if version != VERSION:
        raise PacketError(f"{what}_version")
    end = _HANDSHAKE_HEADER.size + length
    if length == 0 or end > len(packet):
        raise PacketError(f"{what}_malformed")
    return bytes(packet[_HANDSHAKE_HEADER.size : end])


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


@dataclass(frozen=True, slots=True)
class Opened:
    """A decrypted DATA packet."""

    sequence: int
    ack: int
    ack_bits: int
    message: bytes


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
    def ack_bits(self) -> int:
        """Bit i set = sequence ``highest - 1 - i`` received (32 bits)."""
        return (self.bits >> 1) & 0xFFFFFFFF

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

    def seal(self, message: bytes) -> tuple[int, bytes]:
        """(sequence, datagram) for ``message`` with the current acks."""
        sequence = self.next_sequence
        self.next_sequence = sequence + 1
        header = _DATA_HEADER.pack(DATA, sequence)
        window = self.window
        plain = _ACKS.pack(window.highest, window.ack_bits) + message
        return sequence, header + self._seal(_NONCE_PREFIX + _SEQ.pack(sequence), plain, header)

    def open(self, packet: bytes) -> Opened:
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
        ack, ack_bits = _ACKS.unpack_from(plain)
        return Opened(sequence, ack, ack_bits, plain[_ACKS.size :])
