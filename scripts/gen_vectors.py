"""Generate the protocol conformance vectors in docs/protocol/vectors/ from the
reference implementation (tessera.wire, and the zone's snapshot encoder).

Deterministic: keys, nonces, ids and entity states are fixed here, so running it
twice writes the same bytes. ``--check`` writes nothing and fails when the files
differ from what it would write (the drift test runs it). Each file is one
*suite*: a function in :data:`SUITES` returning its cases; each case names its
``kind``, which docs/protocol/vectors/README.md describes and
tests/wire/test_vectors.py runs. To add a kind, add its cases to a suite (or a
new suite to SUITES), its runner to the test, and its format to the README.

    python scripts/gen_vectors.py [--check] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf import json_format
from google.protobuf.message import Message

from tessera.auth.keys import SigningKey, kid_for, raw_public_bytes
from tessera.relay import resume
from tessera.relay.udp import VERSION_REFUSAL
from tessera.v1 import common_pb2, relay_pb2, zone_pb2
from tessera.wire import connect_token, fragment, packet, reliable, snapshot
from tessera.wire.connect_token import ConnectGrant, ConnectTokenError, MatchContext
from tessera.wire.connection import clock_ms, rtt_sample_ms
from tessera.wire.snapshot import (
    COLUMNS,
    PRESENT,
    Decoded,
    EntityTable,
    Quantization,
    Replicated,
    SnapshotError,
    width,
)
from tessera.zone.snapshot import PAD, SnapshotEncoder, quantize

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "protocol" / "vectors"
FORMAT = 1

Case = dict[str, Any]
Suite = dict[str, Any]

SIGNING_SEED = bytes(range(32))
OTHER_SEED = bytes(range(32, 64))
SEALING_KEY = bytes(range(100, 132))
C2S_KEY = bytes([0x11]) * 32
S2C_KEY = bytes([0x22]) * 32
ISSUED_AT = 1_800_000_000
RELAY = "127.0.0.1:7777"


def signing_key(seed: bytes) -> SigningKey:
    return SigningKey.from_private(Ed25519PrivateKey.from_private_bytes(seed), 0)


def error_of(call: Callable[[], object], error: type[Exception]) -> str:
    """The ``reason`` (or message) of the error ``call`` raises; AssertionError if none."""
    try:
        call()
    except error as exc:
        return str(getattr(exc, "reason", exc))
    raise AssertionError("the reference implementation accepted a case meant to fail")


# -- connect tokens -----------------------------------------------------------------


def grant_json(grant: ConnectGrant) -> dict[str, Any]:
    return {
        "token_id": grant.token_id.hex(),
        "player_id": grant.player_id,
        "session_id": grant.session_id,
        "relay_addresses": list(grant.relay_addresses),
        "client_to_server_key": grant.client_to_server_key.hex(),
        "server_to_client_key": grant.server_to_client_key.hex(),
        "issued_at": grant.issued_at,
        "expires_at": grant.expires_at,
        "timeout_s": grant.timeout_s,
        "world": grant.world,
        "zone": grant.zone,
        "match": None if grant.match is None else dataclasses.asdict(grant.match),
    }


def open_case(name: str, token: bytes, *, now: int = ISSUED_AT + 1, **over: Any) -> Case:
    """A ``connect_token_open`` case: the reference's verdict on ``token``."""
    key = signing_key(SIGNING_SEED)
    inputs: dict[str, Any] = {
        "public_keys": {key.kid: raw_public_bytes(key.public_key).hex()},
        "sealing_key": SEALING_KEY.hex(),
        "relay_address": RELAY,
        "now": now,
        **over,
    }

    def run() -> ConnectGrant:
        return connect_token.open_connect_token(
            token,
            public_keys={
                kid: Ed25519PublicKey.from_public_bytes(bytes.fromhex(pub))
                for kid, pub in inputs["public_keys"].items()
            },
            sealing_key=bytes.fromhex(inputs["sealing_key"]),
            relay_address=inputs["relay_address"],
            now=inputs["now"],
        )

    try:
        expect: dict[str, Any] = {"grant": grant_json(run())}
    except ConnectTokenError as exc:
        expect = {"error": exc.reason}
    return {
        "name": name,
        "kind": "connect_token_open",
        "token": token.hex(),
        **inputs,
        "expect": expect,
    }


def connect_token_suite() -> Suite:
    key, other = signing_key(SIGNING_SEED), signing_key(OTHER_SEED)
    grant = ConnectGrant(
        token_id=bytes(range(0xA0, 0xB0)),
        player_id="player-1",
        session_id="sess-1",
        relay_addresses=(RELAY, "127.0.0.1:7778"),
        client_to_server_key=C2S_KEY,
        server_to_client_key=S2C_KEY,
        issued_at=ISSUED_AT,
        expires_at=ISSUED_AT + 30,
        timeout_s=10,
        world="main",
        zone="inst-5f2a9c1e",
    )
    nonce = bytes(range(0xC0, 0xCC))

    def issue(g: ConnectGrant = grant, signer: SigningKey = key) -> bytes:
        return connect_token.issue_connect_token(
            g, signing_key=signer, sealing_key=SEALING_KEY, nonce=nonce
        )

    token = issue()
    no_destination = issue(dataclasses.replace(grant, world="", zone=""))
    matched = issue(dataclasses.replace(grant, match=MatchContext("5f2a9c1e", 1, "healer")))
    flipped = bytes([matched[-70] ^ 1])  # a byte of the sealed part
    tampered = bytearray(token)
    tampered[token.index(b"player-1")] ^= 0x01
    bad_signature = token[:-1] + bytes([token[-1] ^ 0x80])
    forged_kid = SigningKey(key.kid, other.private_key, other.public_key, 0)
    cases = [
        open_case("valid", token),
        open_case("valid_without_destination", no_destination),
        open_case("valid_with_match_context", matched),
        open_case("match_context_tampered_seal", matched[:-70] + flipped + matched[-69:]),
        open_case("match_context_relabelled_version_2", matched[:4] + b"\x02" + matched[5:]),
        open_case("version_2_relabelled_version_3", token[:4] + b"\x03" + token[5:]),
        open_case("valid_on_the_second_relay_address", token, relay_address="127.0.0.1:7778"),
        open_case("wrong_sealing_key", token, sealing_key=bytes(32).hex()),
        open_case("signed_by_another_key_under_the_same_kid", issue(signer=forged_kid)),
        open_case("unknown_kid", issue(signer=other)),
        open_case("expired_at_expires_at", token, now=ISSUED_AT + 30),
        open_case("last_valid_second", token, now=ISSUED_AT + 29),
        open_case("not_valid_yet_beyond_clock_skew", token, now=ISSUED_AT - 6),
        open_case("issued_within_clock_skew", token, now=ISSUED_AT - 5),
        open_case("tampered_player_id", bytes(tampered)),
        open_case("tampered_signature", bad_signature),
        open_case("wrong_relay", token, relay_address="127.0.0.1:9999"),
        open_case("truncated", token[:-1]),
        open_case("trailing_byte", token + b"\x00"),
        open_case("bad_magic", b"XSCT" + token[4:]),
        open_case("unsupported_version", token[:4] + b"\x01" + token[5:]),
    ]
    return {
        "description": "Opening connect tokens as a relay does (docs/protocol/tokens.md).",
        "signing_key_seed": SIGNING_SEED.hex(),
        "other_signing_key_seed": OTHER_SEED.hex(),
        "cases": cases,
    }


# -- key derivation -----------------------------------------------------------------


def keys_suite() -> Suite:
    cases: list[Case] = []
    for sequence in (1, 2, 255, 256, 2**32 + 5, 2**64 - 1):
        nonce = b"\x00\x00\x00\x00" + struct.pack("<Q", sequence)
        cases.append(
            {
                "name": f"nonce_{sequence}",
                "kind": "data_nonce",
                "sequence": sequence,
                "expect": {"nonce": nonce.hex()},
            }
        )
    for name, connect_key in (("zeros", bytes(32)), ("counting", bytes(range(100, 132)))):
        cases.append(
            {
                "name": f"resume_key_{name}",
                "kind": "resume_key",
                "connect_key": connect_key.hex(),
                "expect": {"resume_key": resume.derive_key(connect_key).hex()},
            }
        )
    for name, seed in (("signing", SIGNING_SEED), ("other", OTHER_SEED)):
        public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
        cases.append(
            {
                "name": f"kid_{name}",
                "kind": "kid",
                "public_key": raw_public_bytes(public).hex(),
                "expect": {"kid": kid_for(public)},
            }
        )
    return {
        "description": "What is derived rather than sent: the DATA nonce from the sequence, "
        "the relays' resume sealing key from the connect key, a signing key's kid.",
        "cases": cases,
    }


# -- packets ------------------------------------------------------------------------


def message_json(message: Message) -> dict[str, Any]:
    return {
        "type": message.DESCRIPTOR.full_name,
        "hex": message.SerializeToString(deterministic=True).hex(),
        "json": json_format.MessageToDict(message),
    }


def frame_json(frame: packet.Frame) -> dict[str, Any]:
    """A frame as the vectors spell it (only the fields of its kind)."""
    if frame.kind == packet.MESSAGE:
        return {"kind": "message", "data": frame.data.hex()}
    if frame.kind == packet.RELIABLE:
        return {"kind": "reliable", "sequence": frame.sequence, "data": frame.data.hex()}
    return {
        "kind": "fragment",
        "group": frame.group,
        "index": frame.piece,
        "count": frame.pieces,
        "data": frame.data.hex(),
    }


def contents_json(contents: packet.Contents) -> dict[str, Any]:
    return {
        "time_ms": contents.time_ms,
        "echo": None if contents.echo is None else list(contents.echo),
        "ack": None if contents.ack is None else list(contents.ack),
        "frames": [frame_json(frame) for frame in contents.frames],
    }


def sealed(key: bytes, sequence: int, plain: bytes) -> bytes:
    """The DATA datagram the reference Channel seals with this sequence."""
    channel = packet.Channel(key, bytes(32))
    channel.next_sequence = sequence
    return channel.seal(plain)


def seal_case(
    name: str,
    key: bytes,
    sequence: int,
    *,
    time_ms: int,
    echo: tuple[int, int] | None = None,
    ack: tuple[int, int] | None = None,
    frames: list[bytes],
    messages: list[Message],
) -> Case:
    """A ``data_seal`` case; ``messages`` are what the frames carry (their protobufs)."""
    plain = packet.encode_contents(time_ms, echo, ack, frames)
    return {
        "name": name,
        "kind": "data_seal",
        "key": key.hex(),
        "sequence": sequence,
        **contents_json(packet.decode_contents(plain)),
        "messages": [message_json(message) for message in messages],
        "expect": {"plaintext": plain.hex(), "datagram": sealed(key, sequence, plain).hex()},
    }


def open_sequence_case(name: str, key: bytes, datagrams: list[bytes]) -> Case:
    """A ``data_open_sequence`` case: datagrams opened in order by one receiver."""
    channel = packet.Channel(bytes(32), key)
    steps: list[Case] = []
    for datagram in datagrams:
        try:
            contents = packet.decode_contents(channel.open(datagram))
            expect: dict[str, Any] = {
                "sequence": int.from_bytes(datagram[1:9], "little"),
                **contents_json(contents),
            }
        except packet.PacketError as exc:
            expect = {"error": exc.reason}
        steps.append({"datagram": datagram.hex(), "expect": expect})
    return {
        "name": name,
        "kind": "data_open_sequence",
        "key": key.hex(),
        "steps": steps,
        "expect": {"highest": channel.window.highest},
    }


def handshake_cases() -> list[Case]:
    token = bytes(i % 256 for i in range(210))
    good = packet.encode_handshake(token)
    cases: list[Case] = [
        {
            "name": f"{name}_v{version}",
            "kind": "handshake_encode",
            "type": kind,
            "version": version,
            "token": token.hex(),
            "expect": {"datagram": packet.encode_handshake(token, kind, version).hex()},
        }
        for name, kind in (("handshake", packet.HANDSHAKE), ("resume", packet.RESUME))
        for version in (packet.VERSION, packet.VERSION_1)
    ]
    inputs = {
        "valid": good,
        "version_1": packet.encode_handshake(token, version=packet.VERSION_1),
        "short": good[:-1],
        "long": good + b"\x00",
        "version_3": good[:1] + b"\x03" + good[2:],
        "zero_length": good[:2] + b"\x00\x00" + good[4:],
        "length_past_the_end": good[:2] + struct.pack("<H", 1197) + good[4:],
    }
    for name, datagram in inputs.items():
        try:
            version, opened = packet.decode_handshake(datagram)
            expect: dict[str, Any] = {"version": version, "token": opened.hex()}
        except packet.PacketError as exc:
            expect = {"error": exc.reason}
        cases.append(
            {
                "name": f"handshake_{name}",
                "kind": "handshake_decode",
                "datagram": datagram.hex(),
                "expect": expect,
            }
        )
    return cases


def refusal_cases() -> list[Case]:
    """What a relay answers a genuine token it opens no session for: REFUSED (v2),
    or the version-1 refusal a v1 client reads as its first DATA packet."""
    nonce = bytes(range(0xE0, 0xEC))
    no_zone = relay_pb2.ServerMessage(
        disconnected=relay_pb2.Disconnected(reason="NO_ZONE", message="no active zone")
    )
    refused = packet.seal_refusal(S2C_KEY, no_zone.SerializeToString(), nonce)
    cases: list[Case] = [
        {
            "name": "refused_no_zone",
            "kind": "refused_seal",
            "key": S2C_KEY.hex(),
            "nonce": nonce.hex(),
            "message": message_json(no_zone),
            "expect": {"datagram": refused.hex()},
        }
    ]
    bad = {
        "valid": (S2C_KEY, refused),
        "wrong_key": (C2S_KEY, refused),
        "tampered": (S2C_KEY, refused[:-1] + bytes([refused[-1] ^ 0x01])),
        "too_short": (S2C_KEY, refused[: 1 + packet.NONCE_SIZE + packet.TAG_SIZE - 1]),
    }
    for name, (key, datagram) in bad.items():
        try:
            expect: dict[str, Any] = {"message": packet.open_refusal(key, datagram).hex()}
        except packet.PacketError as exc:
            expect = {"error": exc.reason}
        cases.append(
            {
                "name": f"refused_open_{name}",
                "kind": "refused_open",
                "key": key.hex(),
                "datagram": datagram.hex(),
                "expect": expect,
            }
        )
    refusal = relay_pb2.ServerMessage.FromString(VERSION_REFUSAL)
    cases.append(
        {
            "name": "version_1_refused",
            "kind": "version_refusal",
            "key": S2C_KEY.hex(),
            "message": message_json(refusal),
            "expect": {"datagram": packet.seal_v1(S2C_KEY, VERSION_REFUSAL).hex()},
        }
    )
    return cases


def ping_cases() -> list[Case]:
    ping = packet.encode_ping(7, 1234.5, size=64)
    return [
        {
            "name": "ping_64",
            "kind": "ping_encode",
            "id": 7,
            "client_time_ms": 1234.5,
            "size": 64,
            "expect": {"datagram": ping.hex()},
        },
        {
            "name": "pong",
            "kind": "pong_encode",
            "id": 7,
            "client_time_ms": 1234.5,
            "server_time_ms": 1800000000123.25,
            "expect": {"datagram": packet.encode_pong(7, 1234.5, 1800000000123.25).hex()},
        },
        {
            "name": "ping_too_small",
            "kind": "ping_decode",
            "datagram": ping[:24].hex(),
            "expect": {
                "error": error_of(lambda: packet.decode_ping(ping[:24]), packet.PacketError)
            },
        },
    ]


def packet_suite() -> Suite:
    inputs = relay_pb2.ClientMessage(
        inputs=relay_pb2.ClientInputs(
            inputs=[
                relay_pb2.ClientInput(sequence=41, move_z=1.0, client_time_ms=1800000000000.0),
                relay_pb2.ClientInput(
                    sequence=42,
                    move_x=0.5,
                    move_z=1.0,
                    yaw=1.5,
                    actions=1,
                    client_time_ms=1800000000050.0,
                ),
            ],
            interp_delay_ms=100.0,
        )
    )
    accepted = relay_pb2.ServerMessage(
        accepted=relay_pb2.Accepted(
            player_id="player-1",
            entity_id=1001,
            world="main",
            quantization=common_pb2.Quantization(
                position_step_m=0.02,
                yaw_bits=12,
                velocity_step_mps=0.01,
                origin=common_pb2.Vec3(x=-100.0, y=0.0, z=-100.0),
            ),
            tick_hz=30,
            timeout_s=10,
        )
    )
    ack = relay_pb2.ClientMessage(ack=relay_pb2.ClientAck(stream=7, sequence=3))
    goodbye = relay_pb2.ServerMessage(
        disconnected=relay_pb2.Disconnected(reason="KICKED", message="bye")
    )
    event = relay_pb2.ServerMessage(
        event=zone_pb2.PlayerEvent(
            player_id="player-1", kind=zone_pb2.PlayerEvent.HIT_TAKEN, other_entity_id=7, amount=10
        )
    )

    def raw(message: Message) -> bytes:
        return message.SerializeToString()

    chunk = bytes(range(256)) * 4 + bytes(range(125))  # a full FRAGMENT_CHUNK
    cases = [
        seal_case(
            "client_inputs",
            C2S_KEY,
            1,
            time_ms=5000,
            frames=[packet.message_frame(raw(inputs))],
            messages=[inputs],
        ),
        seal_case(
            "server_accepted_reliable_1_with_echo",
            S2C_KEY,
            1,
            time_ms=900_000,
            echo=(5000, 3),
            frames=[packet.reliable_frame(1, raw(accepted))],
            messages=[accepted],
        ),
        seal_case(
            "client_ack_and_reliable_acks",
            C2S_KEY,
            9,
            time_ms=5400,
            echo=(900_350, 12),
            ack=(4, 0b101),
            frames=[packet.message_frame(raw(ack))],
            messages=[ack],
        ),
        seal_case(
            "server_event_and_disconnect_retransmitted_together",
            S2C_KEY,
            31,
            time_ms=0xFFFFFFF0,
            ack=(1, 0),
            frames=[packet.reliable_frame(6, raw(event)), packet.reliable_frame(7, raw(goodbye))],
            messages=[event, goodbye],
        ),
        seal_case(
            "server_fragment_2_of_3",
            S2C_KEY,
            40,
            time_ms=901_000,
            frames=[packet.fragment_frame(513, 1, 3, chunk)],
            messages=[],
        ),
        seal_case("keep_alive", C2S_KEY, 10, time_ms=5500, frames=[], messages=[]),
        seal_case("ack_only", C2S_KEY, 11, time_ms=5550, ack=(7, 0), frames=[], messages=[]),
    ]

    def data(sequence: int, frames: list[bytes] | None = None) -> bytes:
        return sealed(C2S_KEY, sequence, packet.encode_contents(sequence, None, None, frames or []))

    first = data(1, [packet.message_frame(raw(ack))])
    tampered_header = first[:1] + struct.pack("<Q", 2) + first[9:]
    tampered_body = first[:-1] + bytes([first[-1] ^ 0x01])
    malformed = [
        sealed(C2S_KEY, 5, b""),  # shorter than the flags and time
        sealed(C2S_KEY, 6, packet.encode_contents(6, None, None, [b"\x09\x00\x00"])),
        sealed(
            C2S_KEY, 7, packet.encode_contents(7, None, None, [packet.message_frame(b"ab")])[:-1]
        ),
        sealed(C2S_KEY, 8, packet.encode_contents(8, None, None, [])[:4]),
    ]
    cases += [
        open_sequence_case(
            "tampered_valid_and_replayed",
            C2S_KEY,
            [tampered_body, tampered_header, first, first, data(3), data(2), data(2)],
        ),
        open_sequence_case(
            "replay_window_edges", C2S_KEY, [data(300), data(44), data(45), data(45), data(299)]
        ),
        open_sequence_case("wrong_key", C2S_KEY, [sealed(S2C_KEY, 1, b"\x00\x00\x00\x00\x00")]),
        open_sequence_case("too_short", C2S_KEY, [first[: packet.DATA_OVERHEAD - 1]]),
        open_sequence_case("sequence_zero", C2S_KEY, [data(0)]),
        open_sequence_case(
            "malformed_plaintexts_still_use_their_sequence", C2S_KEY, [*malformed, data(6)]
        ),
    ]
    return {
        "description": "UDP datagrams (docs/protocol/udp.md): DATA sealing and opening with "
        "the replay window and the frames inside, HANDSHAKE/RESUME framing and version "
        "negotiation, REFUSED and the version-1 refusal, PING/PONG.",
        "cases": cases + handshake_cases() + refusal_cases() + ping_cases(),
    }


# -- fragments ----------------------------------------------------------------------


def reassembly_case(name: str, pieces: list[tuple[float, int, int, int, bytes]]) -> Case:
    """A ``fragment_reassembly`` case: chunks (at, group, index, count, data) given in
    order to one reassembler; each step expects the message it completes (or null),
    the case the groups still held and the drops by reason."""
    reassembler = fragment.Reassembler()
    steps: list[Case] = []
    for at, group, index, count, data in pieces:
        whole = reassembler.add(group, index, count, data, at)
        steps.append(
            {
                "at": at,
                "group": group,
                "index": index,
                "count": count,
                "data": data.hex(),
                "expect": {"message": None if whole is None else whole.hex()},
            }
        )
    return {
        "name": name,
        "kind": "fragment_reassembly",
        "steps": steps,
        "expect": {
            "held": sorted(reassembler.groups),
            "drops": dict(sorted(reassembler.drops.items())),
        },
    }


def fragment_suite() -> Suite:
    message = bytes((i * 7) % 251 for i in range(3000))
    a, b, c = fragment.split(message, packet.FRAGMENT_CHUNK)
    split_cases: list[Case] = []
    for size in (packet.MAX_MESSAGE + 1, 3000, packet.FRAGMENT_CHUNK * fragment.MAX_FRAGMENTS):
        split_cases.append(
            {
                "name": f"split_{size}",
                "kind": "fragment_split",
                "size": size,
                "chunk_size": packet.FRAGMENT_CHUNK,
                "expect": {
                    "lengths": [len(p) for p in fragment.split(bytes(size), packet.FRAGMENT_CHUNK)]
                },
            }
        )
    too_big = packet.FRAGMENT_CHUNK * fragment.MAX_FRAGMENTS + 1
    split_cases.append(
        {
            "name": f"split_{too_big}_too_large",
            "kind": "fragment_split",
            "size": too_big,
            "chunk_size": packet.FRAGMENT_CHUNK,
            "expect": {
                "error": error_of(
                    lambda: fragment.split(bytes(too_big), packet.FRAGMENT_CHUNK), ValueError
                )
            },
        }
    )
    late = fragment.REASSEMBLY_TIMEOUT_S + 0.5
    return {
        "description": "Fragments of unreliable messages (docs/protocol/udp.md section 4): "
        "how a message is cut, and reassembly with its timeout, bounds and drop reasons.",
        "max_fragments": fragment.MAX_FRAGMENTS,
        "reassembly_slots": fragment.REASSEMBLY_SLOTS,
        "reassembly_timeout_s": fragment.REASSEMBLY_TIMEOUT_S,
        "message": message.hex(),
        "cases": [
            *split_cases,
            reassembly_case(
                "in_order", [(0.0, 1, 0, 3, a), (0.01, 1, 1, 3, b), (0.02, 1, 2, 3, c)]
            ),
            reassembly_case(
                "out_of_order", [(0.0, 2, 2, 3, c), (0.01, 2, 0, 3, a), (0.02, 2, 1, 3, b)]
            ),
            reassembly_case(
                "duplicate_chunk",
                [(0.0, 3, 0, 3, a), (0.01, 3, 0, 3, a), (0.02, 3, 2, 3, c), (0.03, 3, 1, 3, b)],
            ),
            reassembly_case(
                "missing_chunk_dropped_after_the_timeout",
                [(0.0, 4, 0, 3, a), (0.01, 4, 2, 3, c), (late, 5, 0, 3, a), (late, 4, 1, 3, b)],
            ),
            reassembly_case(
                "bad_chunks",
                [
                    (0.0, 6, 0, 1, a),
                    (0.0, 6, 0, fragment.MAX_FRAGMENTS + 1, a),
                    (0.0, 6, 3, 3, a),
                    (0.0, 6, 0, 3, a),
                    (0.0, 6, 1, 4, b),
                    (0.0, 6, 1, 3, b),
                    (0.0, 6, 2, 3, c),
                ],
            ),
            reassembly_case(
                "a_fifth_group_evicts_the_oldest",
                [(0.0, g, 0, 2, a) for g in (10, 11, 12, 13, 14)] + [(0.1, 10, 1, 2, b)],
            ),
        ],
    }


# -- the reliable channel -----------------------------------------------------------


def receive_case(name: str, frames: list[tuple[float, int]]) -> Case:
    """A ``reliable_receive`` case: RELIABLE frames (at, sequence) arriving in this
    order (loss, duplicates and reordering included); message n is ``m<n>``."""
    receiver = reliable.ReliableReceiver()
    steps: list[Case] = []
    for at, sequence in frames:
        delivered = receiver.receive(sequence, f"m{sequence}".encode(), at)
        ack, ack_bits = receiver.ack_fields()
        steps.append(
            {
                "at": at,
                "sequence": sequence,
                "data": f"m{sequence}".encode().hex(),
                "expect": {
                    "delivered": [m.hex() for m in delivered],
                    "ack": ack,
                    "ack_bits": ack_bits,
                },
            }
        )
    return {
        "name": name,
        "kind": "reliable_receive",
        "steps": steps,
        "expect": {"duplicates": receiver.duplicates, "refused": receiver.refused},
    }


def send_case(name: str, ops: list[tuple[str, Any, float]]) -> Case:
    """A ``reliable_send`` case: ``push`` a message, ``ack`` (ack, ack_bits),
    ``rtt`` a sample (ms) or ``poll``, each at a time; every step expects the
    sequences still unacknowledged and the RTO, a push its sequence, a poll the
    sequences due for retransmission."""
    sender = reliable.ReliableSender()
    steps: list[Case] = []
    for op, arg, at in ops:
        step: Case = {"op": op, "at": at}
        expect: Case = {}
        if op == "push":
            step["data"] = arg.hex()
            expect["sequence"] = sender.push(arg, at)
        elif op == "ack":
            step["ack"], step["ack_bits"] = arg
            sender.acknowledge(*arg)
        elif op == "rtt":
            step["rtt_ms"] = arg
            sender.rtt_sample(arg / 1000.0)
        else:
            expect["due"] = [sequence for sequence, _ in sender.due(at)]
        expect["unacked"] = sorted(sender.unacked)
        expect["rto_s"] = sender.rto
        steps.append({**step, "expect": expect})
    return {"name": name, "kind": "reliable_send", "steps": steps}


def rtt_cases() -> list[Case]:
    cases: list[Case] = []
    for name, now_ms, echo_ms, hold_ms in (
        ("plain", 10_250, 10_000, 50),
        ("no_hold", 10_040, 10_000, 0),
        ("across_the_clock_wrap", 30, 0xFFFFFFF0, 10),
        ("negative", 10_010, 10_000, 20),
        ("sixty_seconds_is_stale", 70_000, 10_000, 0),
        ("saturated_hold", 80_000, 10_000, 0xFFFF),
    ):
        cases.append(
            {
                "name": f"rtt_{name}",
                "kind": "rtt_echo",
                "now_ms": now_ms,
                "echo_ms": echo_ms,
                "hold_ms": hold_ms,
                "expect": {"rtt_ms": rtt_sample_ms(now_ms, echo_ms, hold_ms)},
            }
        )
    for seconds in (0.0, 1.2345, 4294967.296, 4294968.5):
        cases.append(
            {
                "name": f"clock_{seconds}",
                "kind": "wire_clock",
                "now_s": seconds,
                "expect": {"time_ms": clock_ms(seconds)},
            }
        )
    return cases


def reliable_suite() -> Suite:
    m = b"event"
    return {
        "description": "The reliable ordered channel (docs/protocol/reliable.md) with loss "
        "and reordering, and the RTT from the echoed clock (docs/protocol/udp.md section 5).",
        "window": reliable.WINDOW,
        "ack_bits": reliable.ACK_BITS,
        "ack_delay_s": reliable.ACK_DELAY_S,
        "cases": [
            receive_case("in_order", [(0.0, 1), (0.01, 2), (0.02, 3)]),
            receive_case(
                "loss_then_retransmission",
                [(0.0, 1), (0.01, 3), (0.02, 4), (0.03, 6), (0.5, 2), (0.6, 5)],
            ),
            receive_case("reordered", [(0.0, 3), (0.0, 1), (0.0, 2), (0.0, 5), (0.0, 4)]),
            receive_case(
                "duplicates", [(0.0, 1), (0.0, 1), (0.0, 3), (0.0, 3), (0.1, 2), (0.2, 2)]
            ),
            receive_case(
                "ack_bits_cover_32_ahead", [(0.0, 2 + i) for i in (0, 1, 31, 32, 33)] + [(0.1, 1)]
            ),
            receive_case(
                "beyond_the_window_refused",
                [(0.0, reliable.WINDOW + 1), (0.0, reliable.WINDOW), (0.0, 0)],
            ),
            send_case(
                "retransmission_after_the_rto_doubled_per_try",
                [
                    ("push", m, 0.0),
                    ("push", m, 0.01),
                    ("poll", None, 0.4),
                    ("poll", None, 0.5),
                    ("poll", None, 0.51),
                    ("poll", None, 1.5),
                    ("poll", None, 1.51),
                    ("ack", (2, 0), 1.6),
                ],
            ),
            send_case(
                "selective_acks_and_the_rto_from_rtt",
                [
                    ("push", m, 0.0),
                    ("push", m, 0.0),
                    ("push", m, 0.0),
                    ("push", m, 0.0),
                    ("rtt", 100.0, 0.1),
                    ("ack", (0, 3), 0.1),
                    ("rtt", 140.0, 0.2),
                    ("push", m, 0.2),
                    ("poll", None, 0.45),
                    ("poll", None, 0.6),
                    ("ack", (1, 1), 0.6),
                    ("rtt", 5000.0, 0.7),
                    ("rtt", 40000.0, 0.8),
                ],
            ),
            *rtt_cases(),
        ],
    }


# -- snapshots ----------------------------------------------------------------------

QUANT = Quantization(
    position_step_m=0.02, yaw_bits=12, velocity_step_mps=0.01, origin=(-100.0, 0.0, -100.0)
)
CAP = 8


def entity(
    x: float,
    z: float,
    *,
    y: float = 0.0,
    yaw: float = 0.0,
    vel: tuple[float, ...] = (0, 0, 0),
    health: float = 100,
    flags: int = 0,
    kind: int = 1,
    team: int = 0,
    carries: dict[str, float] | None = None,
) -> dict[str, Any]:
    return {
        "pos": (x, y, z),
        "vel": vel,
        "yaw": yaw,
        "health": health,
        "flags": flags,
        "kind": kind,
        "team": team,
        "carries": carries or {},
    }


# The replicated components of the components case (GameSchema.components).
SCHEMA = (
    Replicated("carried", "uint16", 1.0, 10, ("near",)),
    Replicated("heat", "float32", 0.25, 8),
)


def schema_json(schema: tuple[Replicated, ...]) -> list[dict[str, Any]]:
    """As GameSchema.components, in JSON (proto3 field names)."""
    return [
        {"name": c.name, "dtype": c.dtype, "step": c.step, "bits": c.bits, "tiers": list(c.tiers),
         "column": e}
        for e, c in enumerate(schema)
    ]  # fmt: skip


def quantized(
    view: dict[int, dict[str, Any]], schema: tuple[Replicated, ...] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One client's (ids, valid, vals) encoder input for the entities in ``view``;
    an entity carries the components of ``schema`` named in its ``carries``."""
    ids = np.full((1, CAP), PAD, np.uint64)
    valid = np.zeros((1, CAP), np.bool_)
    vals = np.zeros((1, CAP, width(schema)), np.int32)
    order = sorted(view)
    if order:
        states = [view[i] for i in order]
        ids[0, : len(order)] = order
        valid[0, : len(order)] = True
        vals[0, : len(order), :COLUMNS] = quantize(
            QUANT,
            pos=np.array([s["pos"] for s in states], np.float64),
            vel=np.array([s["vel"] for s in states], np.float64),
            yaw=np.array([s["yaw"] for s in states], np.float64),
            health=np.array([s["health"] for s in states], np.float64),
            flags=np.array([s["flags"] for s in states]),
            kind=np.array([s["kind"] for s in states]),
            team=np.array([s["team"] for s in states]),
        )
        for i, state in enumerate(states):
            for e, comp in enumerate(schema):
                if comp.name in state["carries"]:
                    vals[0, i, PRESENT] |= 1 << e
                    value = np.array([state["carries"][comp.name]])
                    vals[0, i, PRESENT + 1 + e] = comp.quantize(value)[0][0]
    return ids, valid, vals


def table_json(decoded: Decoded, schema: tuple[Replicated, ...] = ()) -> dict[str, Any]:
    table = decoded.table
    carried = {"components": [table.components(i, schema) for i in range(len(table))]}
    return {
        "full": decoded.full,
        "last_input_seq": decoded.last_input_seq,
        "ids": [int(i) for i in table.ids],
        "rows": table.rows.tolist(),
        "entered": [int(i) for i in decoded.entered],
        "left": [int(i) for i in decoded.left],
        "positions_m": table.positions(QUANT).tolist(),
        "yaws_rad": table.yaws(QUANT).tolist(),
        "velocities_mps": table.velocities(QUANT).tolist(),
        **(carried if schema else {}),
    }


def stream_case(
    name: str,
    ticks: list[tuple[dict[int, dict[str, Any]], bool]],
    schema: tuple[Replicated, ...] = (),
) -> Case:
    """A ``snapshot_stream`` case: the zone's encoder sends one snapshot per tick
    (views given), the client decodes each and acks it when the tick says so."""
    encoder = SnapshotEncoder(cap=CAP, history=32, components=schema)
    row = encoder.open()
    tables: dict[int, EntityTable] = {}
    steps: list[Case] = []
    for tick, (view, acked) in enumerate(ticks, start=1):
        ids, valid, vals = quantized(view, schema)
        batch = encoder.encode(
            np.array([row], np.int64), ids, valid, vals, last_input_seq=np.array([tick * 2])
        )
        sequence, baseline = int(batch.sequence[0]), int(batch.baseline[0])
        payload = batch.payloads[0]
        decoded = snapshot.decode(payload, tables[baseline] if baseline else None, schema)
        tables[sequence] = decoded.table
        if acked:
            encoder.ack(row, int(encoder.stream[row]), sequence)
        steps.append(
            {
                "sequence": sequence,
                "baseline": baseline,
                "payload": payload.hex(),
                "acked": acked,
                "expect": table_json(decoded, schema),
            }
        )
    declared = {"components": schema_json(schema)} if schema else {}
    return {"name": name, "kind": "snapshot_stream", **declared, "steps": steps}


def reject_case(
    name: str, baseline: EntityTable | None, payload: bytes, schema: tuple[Replicated, ...] = ()
) -> Case:
    reason = error_of(lambda: snapshot.decode(payload, baseline, schema), SnapshotError)
    base = (
        None
        if baseline is None
        else {"ids": [int(i) for i in baseline.ids], "rows": baseline.rows.tolist()}
    )
    declared = {"components": schema_json(schema)} if schema else {}
    return {
        "name": name,
        "kind": "snapshot_reject",
        **declared,
        "baseline": base,
        "payload": payload.hex(),
        "expect": {"error": reason},
    }


def snapshot_suite() -> Suite:
    a = {
        5: entity(0, 0, yaw=0.5, health=100, team=1),
        9: entity(10, 10, vel=(1.5, 0, -2.0), health=80, team=2),
        12: entity(-20.5, 3.25, y=1.0, kind=2),
    }
    b = {
        **a,
        5: entity(0.06, -0.04, yaw=0.5, team=1),
        9: entity(13, 10, vel=(1.5, 0, -2), health=80, team=2),
    }
    c = {k: v for k, v in b.items() if k != 12} | {
        40: entity(30, -30, flags=2, kind=1, team=3)  # a ghost: a neighbour zone's entity
    }
    d = {**c, 9: entity(60, 45, vel=(0, 0, 0), health=0, flags=1, team=2)}  # far move, dead
    moving = [{5: entity(0.02 * t, 0)} for t in range(36)]
    encoder = SnapshotEncoder(cap=CAP, history=32)
    row = encoder.open()
    ids, valid, vals = quantized(a)
    full = encoder.encode(
        np.array([row], np.int64), ids, valid, vals, last_input_seq=np.array([1])
    ).payloads[0]
    full_table = snapshot.decode(full, None).table
    ids2, valid2, vals2 = quantized(b)
    encoder.ack(row, int(encoder.stream[row]), 1)
    delta = encoder.encode(
        np.array([row], np.int64), ids2, valid2, vals2, last_input_seq=np.array([2])
    ).payloads[0]
    first_id = snapshot.HEADER.itemsize  # a full snapshot has no removed bitmap
    dup = full[: first_id + 8] + full[first_id : first_id + 8] + full[first_id + 16 :]
    # Replicated components: 5 carries both, then a changed count, then (mid away)
    # only heat; 9 carries heat, then both when it comes near; 12 enters with none.
    carrying = {
        5: entity(0, 0, carries={"carried": 3, "heat": -1.5}),
        9: entity(10, 10, carries={"heat": 20.0}),
    }
    nearer = {
        5: entity(0, 0, carries={"carried": 4, "heat": -1.5}),
        9: entity(10, 10, carries={"carried": 1023, "heat": 20.0}),
        12: entity(-20.5, 3.25, kind=2),
    }
    apart = {**nearer, 5: entity(0, 0, carries={"heat": -1.5})}
    one = {7: entity(1, 1, carries={"carried": 1})}
    lying = quantized(one, SCHEMA[:1])
    liar = SnapshotEncoder(cap=CAP, history=32, components=SCHEMA[:1])
    sent = liar.encode(
        np.array([liar.open()], np.int64), *lying, last_input_seq=np.array([1])
    ).payloads[0]
    # its last 5 bytes: bitmap 01, carried 01, sent 01, value 01 00; "sent" without "carried"
    absent = sent[:-4] + bytes([0, 1, 1, 0])
    return {
        "description": "Snapshot payloads (docs/protocol/snapshot.md) as the zone encodes "
        "them, with the tables a client holds after decoding each.",
        "quantization": {
            "position_step_m": QUANT.position_step_m,
            "yaw_bits": QUANT.yaw_bits,
            "velocity_step_mps": QUANT.velocity_step_mps,
            "origin": list(QUANT.origin),
        },
        "cases": [
            stream_case(
                "full_then_deltas", [(a, True), (b, True), (c, True), (d, True), ({}, True)]
            ),
            stream_case(
                "a_lost_ack_keeps_the_older_baseline", [(a, True), (b, False), (c, True), (d, True)]
            ),
            stream_case(
                "unacknowledged_for_32_snapshots_then_full_every_tick",
                [(view, t == 0) for t, view in enumerate(moving)],
            ),
            reject_case("truncated", None, full[:-1]),
            reject_case("trailing_byte", None, full + b"\x00"),
            reject_case("unknown_version", None, b"\x02" + full[1:]),
            reject_case(
                "baseline_of_the_wrong_size",
                EntityTable(full_table.ids[:2], full_table.rows[:2]),
                delta,
            ),
            reject_case("delta_without_its_baseline", None, delta),
            reject_case("duplicate_added_id", None, dup),
            stream_case(
                "replicated_components",
                [(carrying, True), (nearer, True), (apart, True), (apart, True)],
                SCHEMA,
            ),
            reject_case("component_value_not_carried", None, absent, SCHEMA[:1]),
        ],
    }


SUITES: dict[str, Callable[[], Suite]] = {
    "connect_token": connect_token_suite,
    "keys": keys_suite,
    "packet": packet_suite,
    "fragment": fragment_suite,
    "reliable": reliable_suite,
    "snapshot": snapshot_suite,
}


def render(name: str) -> str:
    """The JSON text of one suite's file."""
    document = {
        "format": FORMAT,
        "suite": name,
        "generator": "scripts/gen_vectors.py",
        "versions": {
            "udp": packet.VERSION,
            "connect_token": connect_token.MATCH_VERSION,
            "snapshot": snapshot.VERSION,
        },
        **SUITES[name](),
    }
    return json.dumps(document, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the files would change")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the JSON files")
    args = parser.parse_args(argv)
    stale: list[str] = []
    for name in SUITES:
        path = args.out / f"{name}.json"
        text = render(name)
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("vectors out of date (run `make vectors`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
