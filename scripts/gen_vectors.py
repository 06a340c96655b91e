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
import functools
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
from tessera.v1 import common_pb2, relay_pb2
from tessera.wire import connect_token, packet, snapshot
from tessera.wire.connect_token import ConnectGrant, ConnectTokenError
from tessera.wire.snapshot import COLUMNS, Decoded, EntityTable, Quantization, SnapshotError
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
    tampered = bytearray(token)
    tampered[token.index(b"player-1")] ^= 0x01
    bad_signature = token[:-1] + bytes([token[-1] ^ 0x80])
    forged_kid = SigningKey(key.kid, other.private_key, other.public_key, 0)
    cases = [
        open_case("valid", token),
        open_case("valid_without_destination", no_destination),
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


def sealed(key: bytes, sequence: int, ack: int, ack_bits: int, message: bytes) -> bytes:
    """The DATA datagram the reference Channel seals in this state."""
    channel = packet.Channel(key, bytes(32))
    channel.next_sequence = sequence
    channel.window.highest = ack
    channel.window.bits = ((ack_bits << 1) | 1) if ack else 0
    return channel.seal(message)[1]


def seal_case(
    name: str, key: bytes, msg: Message, *, sequence: int, ack: int, ack_bits: int
) -> Case:
    return {
        "name": name,
        "kind": "data_seal",
        "key": key.hex(),
        "sequence": sequence,
        "ack": ack,
        "ack_bits": ack_bits,
        "message": message_json(msg),
        "expect": {"datagram": sealed(key, sequence, ack, ack_bits, msg.SerializeToString()).hex()},
    }


def open_sequence_case(name: str, key: bytes, datagrams: list[bytes]) -> Case:
    """A ``data_open_sequence`` case: datagrams opened in order by one receiver."""
    channel = packet.Channel(bytes(32), key)
    steps: list[Case] = []
    for datagram in datagrams:
        try:
            opened = channel.open(datagram)
            expect: dict[str, Any] = {
                "sequence": opened.sequence,
                "ack": opened.ack,
                "ack_bits": opened.ack_bits,
                "message": opened.message.hex(),
            }
        except packet.PacketError as exc:
            expect = {"error": exc.reason}
        steps.append({"datagram": datagram.hex(), "expect": expect})
    return {
        "name": name,
        "kind": "data_open_sequence",
        "key": key.hex(),
        "steps": steps,
        "expect": {"ack": channel.window.highest, "ack_bits": channel.window.ack_bits},
    }


def handshake_cases() -> list[Case]:
    token = bytes(i % 256 for i in range(210))
    good = packet.encode_handshake(token)
    cases: list[Case] = [
        {
            "name": "handshake",
            "kind": "handshake_encode",
            "type": packet.HANDSHAKE,
            "token": token.hex(),
            "expect": {"datagram": good.hex()},
        },
        {
            "name": "resume",
            "kind": "handshake_encode",
            "type": packet.RESUME,
            "token": token.hex(),
            "expect": {"datagram": packet.encode_handshake(token, packet.RESUME).hex()},
        },
    ]
    bad = {
        "short": good[:-1],
        "long": good + b"\x00",
        "wrong_version": good[:1] + b"\x02" + good[2:],
        "zero_length": good[:2] + b"\x00\x00" + good[4:],
        "length_past_the_end": good[:2] + struct.pack("<H", 1197) + good[4:],
    }
    for name, datagram in bad.items():
        reason = error_of(functools.partial(packet.decode_handshake, datagram), packet.PacketError)
        cases.append(
            {
                "name": f"handshake_{name}",
                "kind": "handshake_decode",
                "datagram": datagram.hex(),
                "expect": {"error": reason},
            }
        )
    cases.append(
        {
            "name": "handshake_valid",
            "kind": "handshake_decode",
            "datagram": good.hex(),
            "expect": {"token": packet.decode_handshake(good).hex()},
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
    cases = [
        seal_case("client_inputs", C2S_KEY, inputs, sequence=1, ack=0, ack_bits=0),
        seal_case("server_accepted", S2C_KEY, accepted, sequence=1, ack=1, ack_bits=0),
        seal_case("client_ack_with_acks", C2S_KEY, ack, sequence=9, ack=40, ack_bits=0b1011),
        seal_case(
            "keep_alive",
            C2S_KEY,
            relay_pb2.ClientMessage(),
            sequence=10,
            ack=41,
            ack_bits=0xFFFFFFFF,
        ),
    ]

    def data(sequence: int, body: bytes = b"") -> bytes:
        return sealed(C2S_KEY, sequence, 0, 0, body)

    first = data(1, b"\x1a\x04\x08\x07\x10\x03")
    tampered_header = first[:1] + struct.pack("<Q", 2) + first[9:]
    tampered_body = first[:-1] + bytes([first[-1] ^ 0x01])
    cases += [
        open_sequence_case(
            "tampered_valid_and_replayed",
            C2S_KEY,
            [tampered_body, tampered_header, first, first, data(3), data(2), data(2)],
        ),
        open_sequence_case(
            "replay_window_edges", C2S_KEY, [data(300), data(44), data(45), data(45), data(299)]
        ),
        open_sequence_case("wrong_key", C2S_KEY, [sealed(S2C_KEY, 1, 0, 0, b"")]),
        open_sequence_case("too_short", C2S_KEY, [first[: packet.DATA_OVERHEAD - 1]]),
        open_sequence_case("sequence_zero", C2S_KEY, [data(0)]),
    ]
    return {
        "description": "UDP datagrams (docs/protocol/udp.md): DATA sealing and opening with "
        "the replay window, HANDSHAKE/RESUME framing, PING/PONG.",
        "cases": cases + handshake_cases() + ping_cases(),
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
) -> dict[str, Any]:
    return {
        "pos": (x, y, z),
        "vel": vel,
        "yaw": yaw,
        "health": health,
        "flags": flags,
        "kind": kind,
        "team": team,
    }


def quantized(view: dict[int, dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One client's (ids, valid, vals) encoder input for the entities in ``view``."""
    ids = np.full((1, CAP), PAD, np.uint64)
    valid = np.zeros((1, CAP), np.bool_)
    vals = np.zeros((1, CAP, COLUMNS), np.int32)
    order = sorted(view)
    if order:
        states = [view[i] for i in order]
        ids[0, : len(order)] = order
        valid[0, : len(order)] = True
        vals[0, : len(order)] = quantize(
            QUANT,
            pos=np.array([s["pos"] for s in states], np.float64),
            vel=np.array([s["vel"] for s in states], np.float64),
            yaw=np.array([s["yaw"] for s in states], np.float64),
            health=np.array([s["health"] for s in states], np.float64),
            flags=np.array([s["flags"] for s in states]),
            kind=np.array([s["kind"] for s in states]),
            team=np.array([s["team"] for s in states]),
        )
    return ids, valid, vals


def table_json(decoded: Decoded) -> dict[str, Any]:
    table = decoded.table
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
    }


def stream_case(name: str, ticks: list[tuple[dict[int, dict[str, Any]], bool]]) -> Case:
    """A ``snapshot_stream`` case: the zone's encoder sends one snapshot per tick
    (views given), the client decodes each and acks it when the tick says so."""
    encoder = SnapshotEncoder(cap=CAP, history=32)
    row = encoder.open()
    tables: dict[int, EntityTable] = {}
    steps: list[Case] = []
    for tick, (view, acked) in enumerate(ticks, start=1):
        ids, valid, vals = quantized(view)
        batch = encoder.encode(
            np.array([row], np.int64), ids, valid, vals, last_input_seq=np.array([tick * 2])
        )
        sequence, baseline = int(batch.sequence[0]), int(batch.baseline[0])
        payload = batch.payloads[0]
        decoded = snapshot.decode(payload, tables[baseline] if baseline else None)
        tables[sequence] = decoded.table
        if acked:
            encoder.ack(row, int(encoder.stream[row]), sequence)
        steps.append(
            {
                "sequence": sequence,
                "baseline": baseline,
                "payload": payload.hex(),
                "acked": acked,
                "expect": table_json(decoded),
            }
        )
    return {"name": name, "kind": "snapshot_stream", "steps": steps}


def reject_case(name: str, baseline: EntityTable | None, payload: bytes) -> Case:
    reason = error_of(lambda: snapshot.decode(payload, baseline), SnapshotError)
    base = (
        None
        if baseline is None
        else {"ids": [int(i) for i in baseline.ids], "rows": baseline.rows.tolist()}
    )
    return {
        "name": name,
        "kind": "snapshot_reject",
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
        ],
    }


SUITES: dict[str, Callable[[], Suite]] = {
    "connect_token": connect_token_suite,
    "keys": keys_suite,
    "packet": packet_suite,
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
            "connect_token": connect_token.VERSION,
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
