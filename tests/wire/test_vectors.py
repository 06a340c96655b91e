"""The conformance vectors (docs/protocol/vectors/) against the reference
implementation: every case of every file decodes, verifies or is rejected as it
says, every kind has a runner here, and the files are what the generator writes."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from google.protobuf import json_format
from google.protobuf.message import Message

from tessera.auth.keys import kid_for
from tessera.relay import resume
from tessera.relay.udp import VERSION_REFUSAL
from tessera.v1 import common_pb2, relay_pb2
from tessera.wire import connect_token, fragment, packet
from tessera.wire.connect_token import ConnectTokenError
from tessera.wire.connection import clock_ms, rtt_sample_ms
from tessera.wire.reliable import ReliableReceiver, ReliableSender
from tessera.wire.snapshot import (
    COLUMNS,
    EntityTable,
    Quantization,
    Replicated,
    SnapshotError,
    SnapshotReceiver,
    announced,
    decode,
)

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "docs" / "protocol" / "vectors"
GENERATOR = ROOT / "scripts" / "gen_vectors.py"
Case = dict[str, Any]


def load() -> list[tuple[str, Case]]:
    return [
        (path.stem, case)
        for path in sorted(VECTORS.glob("*.json"))
        for case in json.loads(path.read_text())["cases"]
    ]


CASES = load()
QUANT = json.loads((VECTORS / "snapshot.json").read_text())["quantization"]
FRAGMENTS = json.loads((VECTORS / "fragment.json").read_text())


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def run_connect_token_open(case: Case) -> None:
    keys = {
        kid: Ed25519PublicKey.from_public_bytes(h(pub)) for kid, pub in case["public_keys"].items()
    }

    def opened() -> connect_token.ConnectGrant:
        return connect_token.open_connect_token(
            h(case["token"]),
            public_keys=keys,
            sealing_key=h(case["sealing_key"]),
            relay_address=case["relay_address"],
            now=case["now"],
        )

    if "error" in case["expect"]:
        with pytest.raises(ConnectTokenError) as info:
            opened()
        assert info.value.reason == case["expect"]["error"]
        return
    grant, want = opened(), case["expect"]["grant"]
    assert grant.token_id.hex() == want["token_id"]
    assert grant.client_to_server_key.hex() == want["client_to_server_key"]
    assert grant.server_to_client_key.hex() == want["server_to_client_key"]
    assert list(grant.relay_addresses) == want["relay_addresses"]
    plain = ("player_id", "session_id", "issued_at", "expires_at", "timeout_s", "world", "zone")
    assert {k: getattr(grant, k) for k in plain} == {k: want[k] for k in plain}
    match = None if grant.match is None else dataclasses.asdict(grant.match)
    assert match == want["match"]


def run_data_nonce(case: Case) -> None:
    key = bytes(32)
    channel = packet.Channel(key, key)
    channel.next_sequence = case["sequence"]
    datagram = channel.seal(b"nonce")
    plain = ChaCha20Poly1305(key).decrypt(h(case["expect"]["nonce"]), datagram[9:], datagram[:9])
    assert plain.endswith(b"nonce")


def run_resume_key(case: Case) -> None:
    assert resume.derive_key(h(case["connect_key"])).hex() == case["expect"]["resume_key"]


def run_kid(case: Case) -> None:
    public = Ed25519PublicKey.from_public_bytes(h(case["public_key"]))
    assert kid_for(public) == case["expect"]["kid"]


def run_data_seal(case: Case) -> None:
    types: dict[str, type[Message]] = {
        "tessera.v1.ClientMessage": relay_pb2.ClientMessage,
        "tessera.v1.ServerMessage": relay_pb2.ServerMessage,
    }
    for message in case["messages"]:
        kind = types[message["type"]]
        parsed = kind.FromString(h(message["hex"]))
        assert json_format.MessageToDict(parsed) == message["json"]
        wire = json_format.ParseDict(message["json"], kind()).SerializeToString()
        assert wire == h(message["hex"])
    messages = [h(m["hex"]) for m in case["messages"]]
    carried = [h(f["data"]) for f in case["frames"] if f["kind"] != "fragment"]
    assert carried == messages
    plain = packet.encode_contents(
        case["time_ms"],
        None if case["echo"] is None else tuple(case["echo"]),
        None if case["ack"] is None else tuple(case["ack"]),
        [frame_bytes(f) for f in case["frames"]],
    )
    assert plain.hex() == case["expect"]["plaintext"]
    sender = packet.Channel(h(case["key"]), bytes(32))
    sender.next_sequence = case["sequence"]
    datagram = sender.seal(plain)
    assert datagram.hex() == case["expect"]["datagram"]
    opened = packet.decode_contents(packet.Channel(bytes(32), h(case["key"])).open(datagram))
    want = {k: case[k] for k in ("time_ms", "echo", "ack", "frames")}
    assert contents_json(opened) == want


def frame_bytes(frame: Case) -> bytes:
    data = h(frame["data"])
    if frame["kind"] == "message":
        return packet.message_frame(data)
    if frame["kind"] == "reliable":
        return packet.reliable_frame(frame["sequence"], data)
    return packet.fragment_frame(frame["group"], frame["index"], frame["count"], data)


def contents_json(contents: packet.Contents) -> Case:
    frames: list[Case] = []
    for frame in contents.frames:
        item: Case = {"kind": FRAME_KINDS[frame.kind]}
        if frame.kind == packet.RELIABLE:
            item["sequence"] = frame.sequence
        if frame.kind == packet.FRAGMENT:
            item |= {"group": frame.group, "index": frame.piece, "count": frame.pieces}
        frames.append(item | {"data": frame.data.hex()})
    return {
        "time_ms": contents.time_ms,
        "echo": None if contents.echo is None else list(contents.echo),
        "ack": None if contents.ack is None else list(contents.ack),
        "frames": frames,
    }


FRAME_KINDS = {packet.MESSAGE: "message", packet.RELIABLE: "reliable", packet.FRAGMENT: "fragment"}


def run_data_open_sequence(case: Case) -> None:
    receiver = packet.Channel(bytes(32), h(case["key"]))
    for step in case["steps"]:
        want, datagram = step["expect"], h(step["datagram"])
        if "error" in want:
            with pytest.raises(packet.PacketError) as info:
                packet.decode_contents(receiver.open(datagram))
            assert info.value.reason == want["error"]
            continue
        opened = contents_json(packet.decode_contents(receiver.open(datagram)))
        assert {"sequence": int.from_bytes(datagram[1:9], "little"), **opened} == want
    assert receiver.window.highest == case["expect"]["highest"]


def run_handshake_encode(case: Case) -> None:
    datagram = packet.encode_handshake(h(case["token"]), case["type"], case["version"])
    assert datagram.hex() == case["expect"]["datagram"]


def run_handshake_decode(case: Case) -> None:
    if "error" in case["expect"]:
        with pytest.raises(packet.PacketError) as info:
            packet.decode_handshake(h(case["datagram"]))
        assert info.value.reason == case["expect"]["error"]
    else:
        version, token = packet.decode_handshake(h(case["datagram"]))
        assert {"version": version, "token": token.hex()} == case["expect"]


def run_refused_seal(case: Case) -> None:
    message = h(case["message"]["hex"])
    datagram = packet.seal_refusal(h(case["key"]), message, h(case["nonce"]))
    assert datagram.hex() == case["expect"]["datagram"]
    assert packet.open_refusal(h(case["key"]), datagram) == message


def run_refused_open(case: Case) -> None:
    if "error" in case["expect"]:
        with pytest.raises(packet.PacketError) as info:
            packet.open_refusal(h(case["key"]), h(case["datagram"]))
        assert info.value.reason == case["expect"]["error"]
    else:
        message = packet.open_refusal(h(case["key"]), h(case["datagram"]))
        assert message.hex() == case["expect"]["message"]


def run_version_refusal(case: Case) -> None:
    """What the relay sends a version-1 client, and how such a client reads it."""
    assert VERSION_REFUSAL.hex() == case["message"]["hex"]
    datagram = packet.seal_v1(h(case["key"]), h(case["message"]["hex"]))
    assert datagram.hex() == case["expect"]["datagram"]
    v1_client = packet.Channel(bytes(32), h(case["key"]))
    plain = v1_client.open(datagram)
    assert plain[:12] == bytes(12)
    refusal = relay_pb2.ServerMessage.FromString(plain[12:])
    assert refusal.disconnected.reason == "VERSION_UNSUPPORTED"


def run_ping_encode(case: Case) -> None:
    datagram = packet.encode_ping(case["id"], case["client_time_ms"], case["size"])
    assert datagram.hex() == case["expect"]["datagram"]
    assert packet.decode_ping(datagram) == (case["id"], case["client_time_ms"])


def run_pong_encode(case: Case) -> None:
    datagram = packet.encode_pong(case["id"], case["client_time_ms"], case["server_time_ms"])
    assert datagram.hex() == case["expect"]["datagram"]
    want = (case["id"], case["client_time_ms"], case["server_time_ms"])
    assert packet.decode_pong(datagram) == want


def run_ping_decode(case: Case) -> None:
    with pytest.raises(packet.PacketError) as info:
        packet.decode_ping(h(case["datagram"]))
    assert info.value.reason == case["expect"]["error"]


def run_fragment_split(case: Case) -> None:
    message = bytes(case["size"])
    if "error" in case["expect"]:
        with pytest.raises(ValueError, match=case["expect"]["error"]):
            fragment.split(message, case["chunk_size"])
        return
    chunks = fragment.split(message, case["chunk_size"])
    assert [len(c) for c in chunks] == case["expect"]["lengths"]
    assert len(chunks) <= FRAGMENTS["max_fragments"] == fragment.MAX_FRAGMENTS


def run_fragment_reassembly(case: Case) -> None:
    reassembler = fragment.Reassembler()
    for step in case["steps"]:
        whole = reassembler.add(
            step["group"], step["index"], step["count"], h(step["data"]), step["at"]
        )
        want = step["expect"]["message"]
        assert (None if whole is None else whole.hex()) == want
        if want is not None:
            assert want == FRAGMENTS["message"]
    assert sorted(reassembler.groups) == case["expect"]["held"]
    assert dict(reassembler.drops) == case["expect"]["drops"]


def run_reliable_receive(case: Case) -> None:
    receiver = ReliableReceiver()
    delivered: list[bytes] = []
    for step in case["steps"]:
        out = receiver.receive(step["sequence"], h(step["data"]), step["at"])
        delivered += out
        ack, ack_bits = receiver.ack_fields()
        got = {"delivered": [m.hex() for m in out], "ack": ack, "ack_bits": ack_bits}
        assert got == step["expect"]
    # Exactly once and in order: message n is "m<n>", delivered as 1, 2, ... ack.
    assert delivered == [f"m{n}".encode() for n in range(1, receiver.delivered + 1)]
    assert {"duplicates": receiver.duplicates, "refused": receiver.refused} == case["expect"]


def run_reliable_send(case: Case) -> None:
    sender = ReliableSender()
    for step in case["steps"]:
        got: Case = {}
        if step["op"] == "push":
            got["sequence"] = sender.push(h(step["data"]), step["at"])
        elif step["op"] == "ack":
            sender.acknowledge(step["ack"], step["ack_bits"])
        elif step["op"] == "rtt":
            sender.rtt_sample(step["rtt_ms"] / 1000.0)
        else:
            got["due"] = [sequence for sequence, _ in sender.due(step["at"])]
        want = step["expect"]
        assert got | {"unacked": sorted(sender.unacked)} == {
            k: v for k, v in want.items() if k != "rto_s"
        }
        assert sender.rto == pytest.approx(want["rto_s"], abs=1e-9)


def run_rtt_echo(case: Case) -> None:
    rtt = rtt_sample_ms(case["now_ms"], case["echo_ms"], case["hold_ms"])
    assert rtt == case["expect"]["rtt_ms"]


def run_wire_clock(case: Case) -> None:
    assert clock_ms(case["now_s"]) == case["expect"]["time_ms"]


def components(case: Case) -> tuple[Replicated, ...]:
    """The case's replicated components, read as a client reads GameSchema.components."""
    return announced([common_pb2.ComponentSchema(**c) for c in case.get("components", [])])


def run_snapshot_stream(case: Case) -> None:
    schema = components(case)
    receiver = SnapshotReceiver(schema=schema)
    for step in case["steps"]:
        decoded = receiver.apply(1, step["sequence"], step["baseline"], h(step["payload"]))
        want = step["expect"]
        table = decoded.table
        assert decoded.full == want["full"] == (step["baseline"] == 0)
        assert decoded.last_input_seq == want["last_input_seq"]
        assert table.ids.tolist() == want["ids"]
        assert table.rows.tolist() == want["rows"]
        assert decoded.entered.tolist() == want["entered"]
        assert decoded.left.tolist() == want["left"]
        quant = Quantization(**{**QUANT, "origin": tuple(QUANT["origin"])})
        in_units = {
            "positions_m": table.positions(quant),
            "yaws_rad": table.yaws(quant),
            "velocities_mps": table.velocities(quant),
        }
        for key, got in in_units.items():
            assert np.allclose(got, np.array(want[key]).reshape(got.shape), rtol=0, atol=1e-9)
        carried = [table.components(i, schema) for i in range(len(table))]
        assert carried == want.get("components", [{}] * len(table))


def run_snapshot_reject(case: Case) -> None:
    base = case["baseline"]
    baseline = None
    if base is not None:
        rows = np.array(base["rows"], np.int32).reshape(-1, COLUMNS)
        baseline = EntityTable(np.array(base["ids"], np.uint64), rows)
    with pytest.raises(SnapshotError) as info:
        decode(h(case["payload"]), baseline, components(case))
    assert str(info.value) == case["expect"]["error"]


RUNNERS: dict[str, Callable[[Case], None]] = {
    "connect_token_open": run_connect_token_open,
    "data_nonce": run_data_nonce,
    "resume_key": run_resume_key,
    "kid": run_kid,
    "data_seal": run_data_seal,
    "data_open_sequence": run_data_open_sequence,
    "handshake_encode": run_handshake_encode,
    "handshake_decode": run_handshake_decode,
    "refused_seal": run_refused_seal,
    "refused_open": run_refused_open,
    "version_refusal": run_version_refusal,
    "ping_encode": run_ping_encode,
    "pong_encode": run_pong_encode,
    "ping_decode": run_ping_decode,
    "fragment_split": run_fragment_split,
    "fragment_reassembly": run_fragment_reassembly,
    "reliable_receive": run_reliable_receive,
    "reliable_send": run_reliable_send,
    "rtt_echo": run_rtt_echo,
    "wire_clock": run_wire_clock,
    "snapshot_stream": run_snapshot_stream,
    "snapshot_reject": run_snapshot_reject,
}


@pytest.mark.parametrize(("suite", "case"), CASES, ids=[f"{s}:{c['name']}" for s, c in CASES])
def test_vector(suite: str, case: Case) -> None:
    RUNNERS[case["kind"]](case)


def test_every_kind_has_a_runner_and_every_runner_a_case() -> None:
    assert {case["kind"] for _, case in CASES} == set(RUNNERS)


def test_each_file_states_its_versions_and_the_readme_names_every_kind() -> None:
    readme = (VECTORS / "README.md").read_text()
    for path in VECTORS.glob("*.json"):
        document = json.loads(path.read_text())
        assert document["format"] == 1 and document["suite"] == path.stem
        assert document["versions"]["udp"] == packet.VERSION
        assert f"`{path.name}`" in readme
    for kind in RUNNERS:
        assert f"`{kind}`" in readme, kind


def test_the_files_are_what_the_generator_writes() -> None:
    """The drift test: regenerating would change nothing (`make vectors` otherwise)."""
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_check_fails_on_a_changed_or_missing_file(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_vectors", GENERATOR)
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    shutil.copytree(VECTORS, tmp_path, dirs_exist_ok=True)
    assert generator.main(["--check", "--out", str(tmp_path)]) == 0
    keys = tmp_path / "keys.json"
    keys.write_text(keys.read_text().replace('"nonce_1"', '"nonce_one"'))
    (tmp_path / "snapshot.json").unlink()
    assert generator.main(["--check", "--out", str(tmp_path)]) == 1
    assert not (tmp_path / "snapshot.json").exists()  # --check writes nothing
    assert generator.main(["--out", str(tmp_path)]) == 0
    assert generator.main(["--check", "--out", str(tmp_path)]) == 0
