"""The probe: one ordinary player in a process of its own, for an honest latency
figure beside a bot swarm: ``python -m tessera.load.probe CONFIG_JSON``.

It plays as a real client does (the SDK's prediction on, every snapshot decoded
and acknowledged, one input per tick), follows the scenario's phases like a bot
but does not attack and walks at an ordinary player's speed (``walk_mps``, the
zone's default top speed, whatever cap the world sets), pings the relay twice a
second, and prints one JSON line
to stderr every second (``{"msg": "probe", ...}``): RTT p50/p95 (ping to pong),
prediction error p50/p95 in metres (every reconciliation: the predicted position
for an input against the server's), the last line when the scenario ends.
It tries to connect 5 times, 1-5 s apart (the world may have no active zone
yet). Started by the demo as a :class:`ServiceProcess`; it dies with its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from tessera.client.bot import Bot, BotState, Pattern, Vec
from tessera.client.client import GameClient, Intent
from tessera.client.prediction import Motion
from tessera.client.transport import UdpTransport
from tessera.common.process import die_with_parent
from tessera.load import scenario as sc
from tessera.load.worker import Tokens

PING_EVERY_S = 0.5
CONNECT_ATTEMPTS = 5
PROBE_BOT = 1_000_003  # the probe's home point and pattern seed, apart from any bot's


@dataclass(kw_only=True)
class ProbeConfig:
    """What the probe plays (passed as JSON on the command line)."""

    auth: str
    scenario: str
    world: str
    duration_s: float
    start_at: float
    max_speed: float = 6.0
    walk_mps: float = 6.0
    input_hz: float = 30.0
    seed: int = 1
    device: str = "probe-device-0001"
    service_client: str = ""
    connect_timeout_s: float = 10.0


@dataclass
class ProbeFigures:
    """The probe's figures so far (one JSON line)."""

    msg: str = "probe"
    connected: bool = False
    rtt_ms_p50: float = 0.0
    rtt_ms_p95: float = 0.0
    rtt_samples: int = 0
    prediction_error_m_p50: float = 0.0
    prediction_error_m_p95: float = 0.0
    prediction_samples: int = 0
    snapshots: int = 0
    input_hz: float = 0.0
    disconnected: str = ""
    error: str = ""
    done: bool = False


def percentiles(values: list[float] | deque[float]) -> tuple[float, float]:
    """(p50, p95) of ``values``, rounded; (0, 0) with none."""
    if not values:
        return 0.0, 0.0
    p50, p95 = np.percentile(np.asarray(values, float), [50, 95])
    return round(float(p50), 3), round(float(p95), 3)


def walking(pattern: Pattern, share: float) -> Pattern:
    """``pattern`` at ``share`` of the top speed."""

    def walk(state: BotState, position: Vec, others: Sequence[Vec]) -> Intent:
        move = pattern(state, position, others)
        return replace(move, move_x=move.move_x * share, move_z=move.move_z * share)

    return walk


class Probe:
    """The probe's one client; see the module docstring."""

    def __init__(self, cfg: ProbeConfig) -> None:
        self.cfg = cfg
        self.scenario = sc.load(Path(cfg.scenario))
        self.world = sc.parse_rect(cfg.world)
        self.client = self._new_client()
        self.rtt_ms: list[float] = []
        self.figures = ProbeFigures(input_hz=cfg.input_hz)
        self.stop = asyncio.Event()

    def _new_client(self) -> GameClient:
        client = GameClient(
            UdpTransport(),
            input_hz=self.cfg.input_hz,
            motion=Motion(max_speed=self.cfg.max_speed),
        )
        # Every reconciliation of the run, not the SDK's recent window.
        client.predictor.errors_m = deque()
        return client

    def fraction(self) -> float:
        return min(1.0, max(0.0, (time.time() - self.cfg.start_at) / self.cfg.duration_s))

    def pattern(self) -> Pattern:
        phase = self.scenario.phases[self.scenario.phase_index(self.fraction())]
        return walking(
            sc.pattern_for(phase, self.world, self.cfg.seed, PROBE_BOT),
            min(1.0, self.cfg.walk_mps / self.cfg.max_speed),
        )

    def measure(self) -> ProbeFigures:
        f, client = self.figures, self.client
        self.rtt_ms.extend(client.pongs)
        client.pongs.clear()
        errors = client.predictor.errors_m
        f.connected = client.connected
        f.rtt_ms_p50, f.rtt_ms_p95 = percentiles(self.rtt_ms)
        f.rtt_samples = len(self.rtt_ms)
        f.prediction_error_m_p50, f.prediction_error_m_p95 = percentiles(errors)
        f.prediction_samples = len(errors)
        f.snapshots = client.snapshots
        if client.disconnected is not None:
            f.disconnected = client.disconnected.reason or "?"
        return f

    def emit(self) -> None:
        print(json.dumps(asdict(self.measure())), file=sys.stderr, flush=True)

    async def run(self) -> None:
        cfg = self.cfg
        await asyncio.sleep(max(0.0, cfg.start_at - time.time()))
        tokens = Tokens(cfg.auth, cfg.service_client)
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                await self.client.connect(await tokens.issue(cfg.device), cfg.connect_timeout_s)
                break
            except Exception as err:  # e.g. no zone active yet: retried, then reported
                self.figures.error = f"{type(err).__name__}: {err}"[:200]
                with contextlib.suppress(Exception):
                    await self.client.close("connect failed")
                self.client = self._new_client()
                await asyncio.sleep(1.0 + attempt)
        else:
            self.figures.done = True
            self.emit()
            await tokens.close()
            return
        self.figures.error = ""
        bot = Bot(self.client, self.pattern(), seed=PROBE_BOT, sees_others=False)
        self.client.start(bot)
        end = cfg.start_at + cfg.duration_s
        last_emit = 0.0
        while not self.stop.is_set() and time.time() < end and self.client.connected:
            bot.pattern = self.pattern()
            self.client.ping()
            if time.monotonic() - last_emit >= 1.0:
                last_emit = time.monotonic()
                self.emit()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), PING_EVERY_S)
        self.measure()
        await self.client.close("logout")
        await tokens.close()
        self.figures.done = True
        self.emit()


async def _main(cfg: ProbeConfig) -> None:
    probe = Probe(cfg)
    run = asyncio.create_task(probe.run())

    def stop() -> None:
        probe.stop.set()
        if not probe.client.connected:
            run.cancel()  # still waiting or connecting: nothing to report, go at once

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    print(json.dumps({"msg": "serving"}), file=sys.stderr, flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await run


def main() -> None:
    die_with_parent()
    asyncio.run(_main(ProbeConfig(**json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
