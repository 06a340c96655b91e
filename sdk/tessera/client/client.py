"""A game client: connects over a transport, sends inputs at a fixed rate,
decodes and acknowledges snapshots, predicts its own movement and interpolates
everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tessera.client import actions
from tessera.client.prediction import Motion, Predictor
from tessera.client.transport import Transport
from tessera.client.world import WorldView
from tessera.v1 import auth_pb2, common_pb2, relay_pb2
from tessera.wire.snapshot import Quantization, SnapshotError, announced

# Inputs repeated in every packet, so a lost packet costs nothing.
REDUNDANT_INPUTS = 4


@dataclass(frozen=True)
class Intent:
    """What the player wants this input tick."""

    move_x: float = 0.0
    move_z: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    actions: int = 0


Controller = Callable[["GameClient"], Intent]


class GameClient:
    """One connected player; see the module docstring."""

    def __init__(
        self,
        transport: Transport,
        *,
        input_hz: float | None = None,
        interp_delay_ms: float = 100.0,
        motion: Motion | None = None,
        predict: bool = True,
        decode_every: int = 1,
    ) -> None:
        """``predict=False`` skips prediction (bots steer by the server's position);
        ``decode_every=k`` decodes and acks only every k-th snapshot (and the first
        of each stream): the zone's deltas then refer to a baseline up to k ticks
        old, which the client still holds. Both make a client cheap enough to run
        hundreds per process."""
        if decode_every < 1:
            raise ValueError(f"decode_every must be >= 1, got {decode_every}")
        self.transport = transport
        self.input_hz = input_hz
        self.interp_delay_ms = interp_delay_ms
        self.predict = predict
        self.decode_every = decode_every
        self.received = 0
        self.predictor = Predictor(motion or Motion())
        self.accepted: relay_pb2.Accepted | None = None
        self.world: WorldView | None = None
        self.sequence = 0
        self.recent: deque[relay_pb2.ClientInput] = deque(maxlen=REDUNDANT_INPUTS)
        self.disconnected: relay_pb2.Disconnected | None = None
        self.snapshots = 0
        self.events: list[relay_pb2.ServerMessage] = []
        self.notices: list[relay_pb2.Notice] = []
        self.pongs: deque[float] = deque(maxlen=64)
        self.clock_offset_ms: float | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, token: auth_pb2.ConnectToken, timeout_s: float = 5.0) -> None:
        """Open the session; snapshots then decode by the announced game schema
        (``SnapshotError`` here if that schema is malformed)."""
        accepted = await self.transport.connect(token, timeout_s)
        schema = announced(accepted.game.components)
        self.accepted = accepted
        self.world = WorldView(
            Quantization.from_proto(accepted.quantization),
            entity_id=accepted.entity_id,
            interp_delay_ms=self.interp_delay_ms,
            schema=schema,
        )
        if self.input_hz is None:
            self.input_hz = float(self.accepted.tick_hz or 20)
        self._tasks.append(asyncio.create_task(self._receive()))

    @property
    def connected(self) -> bool:
        return self.accepted is not None and self.disconnected is None

    def start(self, controller: Controller) -> None:
        """Send inputs from ``controller`` at ``input_hz`` until :meth:`close`."""
        self._tasks.append(asyncio.create_task(self._inputs(controller)))

    async def _inputs(self, controller: Controller) -> None:
        assert self.input_hz is not None
        period = 1.0 / self.input_hz
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self.connected:
            self.send_intent(controller(self), period)
            next_at += period
            if (late := loop.time() - next_at) > period:
                # Stalled (a busy process): skip the inputs missed, as a frame loop
                # skips the frames it never ran. A burst of them would reach the
                # zone together and apply together, unlike their prediction.
                next_at += (late // period + 1) * period
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def send_intent(self, intent: Intent, dt: float) -> None:
        """Send one input (with the previous few) and predict it locally."""
        self.sequence += 1
        item = relay_pb2.ClientInput(
            sequence=self.sequence,
            move_x=intent.move_x,
            move_z=intent.move_z,
            yaw=intent.yaw,
            pitch=intent.pitch,
            actions=intent.actions,
            client_time_ms=time.time() * 1000.0,
        )
        self.recent.append(item)
        if self.predict:
            self.predictor.apply(self.sequence, intent.move_x, intent.move_z, intent.yaw, dt)
        self.transport.send(
            relay_pb2.ClientMessage(
                inputs=relay_pb2.ClientInputs(
                    inputs=list(self.recent), interp_delay_ms=self.interp_delay_ms
                )
            )
        )

    def act(self, name_or_id: str | int, **args: float) -> None:
        """Send a game action of the World's module by name or id, e.g.
        ``act("drop", amount=3)``, on the reliable channel; ``actions.ActionError``
        (nothing sent) if the module announced at connect does not declare it so."""
        assert self.accepted is not None, "act() before connect()"
        action = actions.encode(self.accepted.game, name_or_id, args)
        self.transport.send(relay_pb2.ClientMessage(action=action))

    def ping(self) -> None:
        self.transport.send(
            relay_pb2.ClientMessage(ping=relay_pb2.Ping(id=1, client_time_ms=time.time() * 1000))
        )

    async def _receive(self) -> None:
        while True:
            message = await self.transport.recv()
            if message is None:
                if self.disconnected is None:
                    self.disconnected = relay_pb2.Disconnected(reason="CONNECTION_CLOSED")
                return
            kind = message.WhichOneof("msg")
            if kind == "snapshot":
                self._snapshot(message.snapshot)
            elif kind == "disconnected":
                self.disconnected = message.disconnected
                return
            elif kind == "pong":
                self.pongs.append(time.time() * 1000.0 - message.pong.client_time_ms)
            elif kind == "event":
                self.events.append(message)
            elif kind == "notice":
                self.notices.append(message.notice)
            elif kind == "game":
                self._game(message.game)

    def _game(self, game: common_pb2.GameSchema) -> None:
        """The session moved to a zone with another game module: its actions and
        components from now on. A malformed schema is ignored (counted in
        ``world.decode_errors``): the snapshots that need it then fail to decode."""
        assert self.accepted is not None and self.world is not None
        try:
            schema = announced(game.components)
        except SnapshotError:
            self.world.decode_errors += 1
            return
        self.accepted.game.CopyFrom(game)
        self.world.rescheme(schema)

    def _snapshot(self, snap: relay_pb2.Snapshot) -> None:
        world = self.world
        assert world is not None
        self.received += 1
        if self.received % self.decode_every and world.applied and snap.stream == world.stream:
            return  # skipped: a later delta refers to an acked baseline, still held
        decoded = world.apply(snap)
        if decoded is None:
            return
        self.snapshots += 1
        offset = snap.server_time_ms - time.time() * 1000.0
        if self.clock_offset_ms is None or offset < self.clock_offset_ms:
            self.clock_offset_ms = offset
        self.transport.send(world.ack())
        if world.last_input_seq > self.sequence:
            # The zone restored the player with an earlier connection's inputs (a
            # reconnect, a transfer): continue above them, or ours count as old.
            self.sequence = world.last_input_seq
            self.recent.clear()
        if not self.predict:
            return
        own = world.own_state()
        if own is not None and snap.sequence == world.latest_sequence:
            self.predictor.reconcile(own[0], world.last_input_seq, own[1])

    def others(self) -> dict[int, npt.NDArray[np.float64]]:
        """Interpolated positions of the other visible entities, now."""
        if self.world is None:
            return {}
        server_now = time.time() * 1000.0 + (self.clock_offset_ms or 0.0)
        return self.world.interpolated(server_now)

    async def close(self, reason: str = "bye") -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.transport.close(reason)
