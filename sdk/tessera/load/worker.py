"""One bot process: ``python -m tessera.load.worker CONFIG_JSON``.

Logs in (guest accounts, or tokens issued by auth on the players' behalf with a
service client), connects its bots to the relay named in their connect tokens,
steers them through the scenario's phases (fighting on the way, see
:class:`tessera.client.bot.Arms`; one timer sends every bot's input, the bots
neither predict nor decode every snapshot) and prints one JSON line with its
figures to stderr every second (``{"msg": "stats", ...}``), the last one when
it ends (scenario over, or SIGTERM: every bot logs out first). Started by
:class:`tessera.load.swarm.Swarm` as a :class:`ServiceProcess`; it dies with
its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tessera.client.bot import Arms, Bot
from tessera.client.client import GameClient
from tessera.client.prediction import Motion
from tessera.client.transport import UdpTransport
from tessera.common import tls
from tessera.common.process import die_with_parent
from tessera.load import scenario as sc
from tessera.load.report import Counters
from tessera.v1 import auth_pb2, auth_pb2_grpc, zone_pb2

CONNECT_ATTEMPTS = 3


@dataclass(kw_only=True)
class BotSettings:
    """What every bot of a swarm shares: the swarm's settings and each worker's."""

    auth: str
    scenario: str
    world: str
    duration_s: float
    ramp_s: float = 5.0
    max_speed: float = 6.0
    input_hz: float = 10.0
    fight: bool = True
    decode_every: int = 6
    seed: int = 1
    prefix: str = "bot"
    service_client: str = ""


@dataclass(kw_only=True)
class WorkerConfig(BotSettings):
    """What one worker runs (passed as JSON on the command line): bots
    ``first .. first + bots - 1`` of ``total``, from ``start_at``."""

    bots: int
    first: int
    total: int
    start_at: float
    connect_timeout_s: float = 5.0


@dataclass
class BotFigures:
    """One session's figures when it ended."""

    rtt_ms: float = 0.0
    pred_p95_m: float | None = None  # None: the bot did not predict
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0


@dataclass
class Stats(Counters):
    """A worker's figures, printed as one JSON line."""

    msg: str = "stats"
    worker: int = 0
    phase: str = ""
    rtt_ms: list[float] = field(default_factory=list)
    pred_p95_m: list[float] = field(default_factory=list)
    bytes_per_s: list[float] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    # Events the bots received, by kind (HIT_DEALT, HIT_TAKEN, DIED, ...;
    # INPUT_DROPPED:<reason>; GAME:<the game module's event name>).
    events: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    done: bool = False


class Tokens:
    """Connect tokens from auth over one shared channel."""

    def __init__(self, address: str, service_client: str) -> None:
        self.channel = tls.channel(address)
        self.stub: Any = auth_pb2_grpc.AuthStub(self.channel)
        self.service_client = service_client
        self._service_token: str | None = None

    async def issue(self, device: str) -> auth_pb2.ConnectToken:
        if self.service_client:
            if self._service_token is None:
                client_id, _, secret = self.service_client.partition("=")
                session = await self.stub.ServiceLogin(
                    auth_pb2.ServiceLoginRequest(client_id=client_id, client_secret=secret),
                    timeout=10.0,
                )
                self._service_token = session.access_token
            request = auth_pb2.ConnectTokenRequest(player_id=device)
            metadata = (("authorization", f"Bearer {self._service_token}"),)
        else:
            session = await self.stub.GuestLogin(
                auth_pb2.GuestLoginRequest(device_id=device), timeout=10.0
            )
            request = auth_pb2.ConnectTokenRequest()
            metadata = (("authorization", f"Bearer {session.access_token}"),)
        token: auth_pb2.ConnectToken = await self.stub.IssueConnectToken(
            request, metadata=metadata, timeout=10.0
        )
        return token

    async def close(self) -> None:
        await self.channel.close(None)


class Worker:
    """The bots of one process."""

    def __init__(self, cfg: WorkerConfig, index: int) -> None:
        self.cfg = cfg
        self.index = index
        self.scenario = sc.load(Path(cfg.scenario))
        self.world = sc.parse_rect(cfg.world)
        self.tokens = Tokens(cfg.auth, cfg.service_client)
        self.clients: dict[int, GameClient] = {}
        self.bots: dict[int, Bot] = {}
        self.connected_at: dict[int, float] = {}
        self.generation: dict[int, int] = {}
        self.stats = Stats(worker=index, bots=cfg.bots)
        self.ended: list[BotFigures] = []
        self.phase = -1
        self.rng = random.Random(cfg.seed * 7919 + index)
        self.stop = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def fraction(self) -> float:
        return min(1.0, max(0.0, (time.time() - self.cfg.start_at) / self.cfg.duration_s))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def connect(self, bot: int, delay_s: float) -> None:
        await asyncio.sleep(max(0.0, delay_s))
        gen = self.generation.get(bot, 0)
        device = f"{self.cfg.prefix}-device-{self.cfg.seed:04d}-{bot:06d}-{gen:04d}"
        for attempt in range(CONNECT_ATTEMPTS):
            if self.stop.is_set():
                return
            client = GameClient(
                UdpTransport(),
                input_hz=self.cfg.input_hz,
                motion=Motion(max_speed=self.cfg.max_speed),
                predict=False,
                decode_every=self.cfg.decode_every,
            )
            try:
                token = await self.tokens.issue(device)
                await client.connect(token, self.cfg.connect_timeout_s)
            except Exception as err:  # auth or relay refused or timed out: retry, then count
                self.stats.last_error = f"{type(err).__name__}: {err}"[:200]
                with contextlib.suppress(Exception):
                    await client.close("connect failed")
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            if self.scenario.logged_out(self.fraction(), self.cfg.total, bot):
                await client.close("logout")
                return
            phase = self.scenario.phases[max(self.phase, 0)]
            pattern = sc.pattern_for(phase, self.world, self.cfg.seed, bot)
            arms = Arms() if self.cfg.fight else None
            handle = Bot(client, pattern, seed=bot, sees_others=False, arms=arms)
            self.clients[bot] = client
            self.bots[bot] = handle
            self.connected_at[bot] = time.monotonic()
            self.stats.connects += 1
            return
        self.stats.connect_failures += 1

    async def logout(self, bot: int) -> None:
        client = self.clients.pop(bot, None)
        self.bots.pop(bot, None)
        if client is None:
            return
        self._record(bot, client)
        self.stats.logouts += 1
        await client.close("logout")

    def _record(self, bot: int, client: GameClient) -> None:
        stats = client.transport.stats if isinstance(client.transport, UdpTransport) else None
        started = self.connected_at.get(bot, time.monotonic())
        self.ended.append(
            BotFigures(
                rtt_ms=stats.rtt_ms if stats else 0.0,
                pred_p95_m=client.predictor.error_stats()["p95_m"] if client.predict else None,
                bytes_in=stats.bytes_in if stats else 0,
                bytes_out=stats.bytes_out if stats else 0,
                seconds=time.monotonic() - started,
            )
        )

    async def play(self) -> None:
        """Every bot's input at ``input_hz`` from one timer (not a task and a sleep
        per bot), and the events they received."""
        period = 1.0 / self.cfg.input_hz
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self.stop.is_set():
            for bot, handle in list(self.bots.items()):
                client = self.clients.get(bot)
                if client is None or not client.connected:
                    continue
                client.send_intent(handle(client), period)
                if client.events:
                    self._count_events(client)
            next_at = max(next_at + period, loop.time() - period)
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def _count_events(self, client: GameClient) -> None:
        counts = self.stats.events
        for message in client.events:
            event = message.event
            kind = zone_pb2.PlayerEvent.Kind.Name(event.kind)
            if event.kind in (zone_pb2.PlayerEvent.INPUT_DROPPED, zone_pb2.PlayerEvent.GAME):
                kind = f"{kind}:{event.detail}"  # the reason, the game event's name
            counts[kind] = counts.get(kind, 0) + 1
        client.events.clear()

    def steer(self) -> None:
        """Follow the scenario: phase changes, logouts, churn, lost connections."""
        fraction = self.fraction()
        index = self.scenario.phase_index(fraction)
        phase = self.scenario.phases[index]
        if index != self.phase:
            self.phase = index
            self.stats.phase = phase.name
            for bot, handle in self.bots.items():
                handle.pattern = sc.pattern_for(phase, self.world, self.cfg.seed, bot)
        self._count_lost()
        for bot in list(self.clients):
            if self.scenario.logged_out(fraction, self.cfg.total, bot):
                self._spawn(self.logout(bot))
        if phase.churn:
            for _ in range(sc.churn_due(phase.churn, len(self.clients), 0.25, self.rng)):
                if not self.clients:
                    break
                bot = self.rng.choice(sorted(self.clients))
                self.generation[bot] = self.generation.get(bot, 0) + 1
                self._spawn(self._cycle(bot))

    async def _cycle(self, bot: int) -> None:
        await self.logout(bot)
        await self.connect(bot, 0.5)

    def snapshot(self) -> Stats:
        s = self.stats
        s.connected = sum(1 for c in self.clients.values() if c.connected)
        s.rtt_ms, s.pred_p95_m, s.bytes_per_s = [], [], []
        s.bytes_in = s.bytes_out = 0
        now = time.monotonic()
        for bot, client in self.clients.items():
            t = client.transport
            if isinstance(t, UdpTransport):
                s.rtt_ms.append(round(t.stats.rtt_ms, 2))
                s.bytes_in += t.stats.bytes_in
                s.bytes_out += t.stats.bytes_out
                secs = max(1e-3, now - self.connected_at.get(bot, now))
                s.bytes_per_s.append(round((t.stats.bytes_in + t.stats.bytes_out) / secs, 1))
            if client.predict:
                s.pred_p95_m.append(round(client.predictor.error_stats()["p95_m"], 3))
        for fig in self.ended:
            s.bytes_in += fig.bytes_in
            s.bytes_out += fig.bytes_out
            s.rtt_ms.append(round(fig.rtt_ms, 2))
            if fig.pred_p95_m is not None:
                s.pred_p95_m.append(round(fig.pred_p95_m, 3))
            s.bytes_per_s.append(round((fig.bytes_in + fig.bytes_out) / max(1e-3, fig.seconds), 1))
        return s

    def emit(self) -> None:
        print(json.dumps(asdict(self.snapshot())), file=sys.stderr, flush=True)

    async def run(self) -> None:
        cfg = self.cfg
        for i in range(cfg.bots):
            bot = cfg.first + i
            delay = cfg.start_at - time.time() + cfg.ramp_s * bot / max(1, cfg.total)
            self._spawn(self.connect(bot, delay))
        self._spawn(self.play())
        last_emit = 0.0
        end = cfg.start_at + cfg.duration_s
        while not self.stop.is_set() and time.time() < end:
            self.steer()
            if time.monotonic() - last_emit >= 1.0:
                last_emit = time.monotonic()
                self.emit()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.25)
        self.stop.set()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self._count_lost()
        await asyncio.gather(*(self.logout(bot) for bot in list(self.clients)))
        await self.tokens.close()
        self.stats.done = True
        self.emit()

    def _count_lost(self) -> None:
        """Count (and forget) bots whose connection ended without them leaving."""
        for bot in list(self.clients):
            client = self.clients[bot]
            if client.disconnected is None:
                continue
            self._record(bot, client)
            reason = client.disconnected.reason or "?"
            self.stats.disconnects += 1
            self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1
            del self.clients[bot]
            self.bots.pop(bot, None)


async def _main(cfg: WorkerConfig, index: int) -> None:
    worker = Worker(cfg, index)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop.set)
    print(json.dumps({"msg": "serving", "worker": index}), file=sys.stderr, flush=True)
    await worker.run()


def main() -> None:
    die_with_parent()
    raw = json.loads(sys.argv[1])
    index = int(raw.pop("index", 0))
    asyncio.run(_main(WorkerConfig(**raw), index))


if __name__ == "__main__":
    main()
