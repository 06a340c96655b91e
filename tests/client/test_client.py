"""GameClient's snapshot handling for cheap clients (``decode_every``, ``predict``),
fed by the zone's own snapshot encoder."""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np
import pytest

from tessera.client.client import GameClient, Intent
from tessera.client.world import WorldView
from tessera.v1 import auth_pb2, relay_pb2
from tessera.wire.link import LinkStats
from tessera.wire.snapshot import COLUMNS, Quantization, X
from tessera.zone.snapshot import PAD, SnapshotEncoder

QUANT = Quantization()
OWN = 1


class Recorder:
    """A transport that keeps what the client sends (no network: the tests drive
    the client's snapshot path directly)."""

    def __init__(self) -> None:
        self.stats = LinkStats()
        self.sent: list[relay_pb2.ClientMessage] = []

    async def connect(self, token: auth_pb2.ConnectToken, timeout_s: float) -> relay_pb2.Accepted:
        raise AssertionError("not used")

    def send(self, message: relay_pb2.ClientMessage) -> None:
        self.sent.append(message)

    async def recv(self) -> relay_pb2.ServerMessage | None:
        return None

    async def close(self, reason: str) -> None:
        return None


def play(client: GameClient, ticks: int, *, drop_acks: bool = False) -> list[int]:
    """``ticks`` snapshots of two moving entities; the x each decoded one put on
    the own entity. The client's acks go back to the encoder unless dropped."""
    enc = SnapshotEncoder(cap=4)
    row = np.zeros(1, np.int64)
    ids = np.full((1, 4), PAD, np.uint64)
    ids[0, :2] = [OWN, 2]
    xs = []
    for tick in range(1, ticks + 1):
        vals = np.zeros((1, 4, COLUMNS), np.int32)
        vals[0, :2, X] = [10 * tick, -tick]
        batch = enc.encode(
            row,
            ids,
            ids != PAD,
            vals,
            last_input_seq=np.zeros(1, np.int64),
            version=np.ones(1, np.int64),
        )
        assert isinstance(client.transport, Recorder)
        before = len(client.transport.sent)
        client._snapshot(
            relay_pb2.Snapshot(
                stream=int(batch.stream[0]),
                sequence=int(batch.sequence[0]),
                baseline=int(batch.baseline[0]),
                payload=batch.payloads[0],
            )
        )
        for message in client.transport.sent[before:]:
            if message.WhichOneof("msg") == "ack" and not drop_acks:
                enc.ack(0, message.ack.stream, message.ack.sequence)
        assert client.world is not None
        if client.world.applied and client.world.latest_sequence == int(batch.sequence[0]):
            xs.append(int(client.world.latest.rows[client.world.latest.index(OWN), X]))
    return xs


def client_for(**kwargs: object) -> GameClient:
    client = GameClient(Recorder(), input_hz=30.0, **kwargs)  # type: ignore[arg-type]
    client.world = WorldView(QUANT, entity_id=OWN)
    return client


def test_every_snapshot_decoded_and_acked_by_default() -> None:
    client = client_for()
    assert play(client, 9) == [10 * t for t in range(1, 10)]
    assert client.world is not None and client.world.applied == 9
    assert client.world.missing_baselines == client.world.decode_errors == 0
    assert client.snapshots == 9 and client.received == 9


def test_decode_every_k_decodes_the_full_one_then_every_kth() -> None:
    client = client_for(decode_every=3)
    # The first (full) snapshot, then received 3, 6, 9, 12: each a delta against
    # the last acked one, which the client still holds.
    assert play(client, 12) == [10, 30, 60, 90, 120]
    world = client.world
    assert world is not None and world.applied == 5 and client.received == 12
    assert world.missing_baselines == world.decode_errors == 0
    acks = [m.ack.sequence for m in client.transport.sent if m.WhichOneof("msg") == "ack"]  # type: ignore[attr-defined]
    assert acks == [1, 3, 6, 9, 12]


def test_decode_every_skips_full_snapshots_too() -> None:
    # Without acks every snapshot is full: the first, then every k-th is decoded.
    client = client_for(decode_every=4)
    assert play(client, 9, drop_acks=True) == [10, 40, 80]


def test_without_prediction_the_client_only_follows_the_server() -> None:
    predicting, plain = client_for(), client_for(predict=False)
    for client in (predicting, plain):
        play(client, 2)
        client.send_intent(Intent(move_z=1.0), 1 / 30)
    assert predicting.predictor.position is not None and len(predicting.predictor.pending) == 1
    assert plain.predictor.position is None and not plain.predictor.pending
    assert plain.sequence == 1  # the input was still sent


def test_decode_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="decode_every"):
        client_for(decode_every=0)


async def test_a_stalled_input_loop_skips_the_inputs_it_missed() -> None:
    """After its process stalls, the client sends its next input on time instead of
    one for every period missed: such a burst would reach the zone in one tick."""
    client = client_for(predict=False)
    client.accepted = relay_pb2.Accepted()
    client.input_hz = 100.0
    sent_at: list[float] = []
    done = asyncio.Event()

    def controller(_: GameClient) -> Intent:
        sent_at.append(time.monotonic())
        if len(sent_at) == 3:
            time.sleep(0.2)  # the process stalls for 20 periods
        if len(sent_at) == 8:
            done.set()
        return Intent()

    client.start(controller)
    await asyncio.wait_for(done.wait(), 5.0)
    await client.close("done")
    after = [b - a for a, b in itertools.pairwise(sent_at[3:])]
    assert sum(gap < 0.002 for gap in after) <= 1  # paced at 10 ms again, not a burst
