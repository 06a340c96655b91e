"""Zone tick benchmark: N players (plus NPCs) in crowds, every player receiving snapshots.

Runs the zone's real simulation (tessera.zone.simulation) in-process: inputs
are validated and applied (one relay batch per tick, as ZoneLink does), NPCs
think, movement, combat, AOI and the batched delta encoder run every tick, and
every player acknowledges its snapshots three ticks later (about 100 ms of
round trip at 30 Hz), as a relay would. Inputs are stamped with simulated time,
so the run (and every payload) is the same however fast the code is.

Players gather around a few points of interest (town squares, a fight, a
queue), wander between waypoints near their crowd's centre and now and then
walk over to another crowd, so densities are uneven and views stay full.

    python bench/zone_tick.py --json PATH [--quick] [--players 250,500,1000,2000,4000]
        [--hz 30,60] [--snapshot-every 1,2] [--game MODULE]

``--game`` runs a game module (docs/GAME.md), e.g. tessera.examples.resources;
its systems are timed (thread CPU) so the record separates the game's own work
(``game_cpu_ms_*``) from the tick around it (``tick_cpu_less_game_ms_*``: the
engine plus the module framework, to compare with a run of the default module),
and the framework's own share, ``framework_cpu_ms_*``: the CPU of running the
module's actions and systems (``Game.run``) less the systems' own.
``encode_cpu_ms_*`` is the thread CPU of the tick's encoding (quantize, the
module's replicated components included, tiers and delta encode:
``Frame.encode_cpu_s``); ``encode_ms_p50`` is its wall time.

The overload ladder is held at level 0 (a 1 s tick budget) so every row measures
the full AOI settings, however far over budget it runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tessera.common.config import Env
from tessera.game import Events, Module, System, View, load
from tessera.v1 import zone_pb2
from tessera.wire.snapshot import full_size
from tessera.zone import messages
from tessera.zone.config import ZoneConfig
from tessera.zone.game import Game
from tessera.zone.simulation import Simulation

ACK_LAG_TICKS = 3
HOTSPOTS = 8


def pct(values: Any, q: float, digits: int = 3) -> float:
    """The ``q``-th percentile of ``values``, rounded for the report."""
    return round(float(np.percentile(values, q)), digits)


def timed(module: Module, spent: list[float]) -> Module:
    """``module`` with each system's thread CPU time added to ``spent[-1]``."""

    def wrap(system: System) -> System:
        def run(view: View, dt: float, events: Events) -> None:
            began = time.thread_time()
            try:
                system.run(view, dt, events)
            finally:
                spent[-1] += time.thread_time() - began

        return System(system.name, run)

    return Module(
        module.name,
        components=module.components,
        systems=tuple(wrap(s) for s in module.systems),
        actions=module.actions,
        events=module.events,
    )


class TimedGame(Game):
    """A Game adding the thread CPU of each ``run`` to ``spent[-1]``."""

    def __init__(self, module: Module, *, disable_after: int, spent: list[float]) -> None:
        super().__init__(module, disable_after=disable_after)
        self.spent = spent

    def run(self, *args: Any, **kwargs: Any) -> None:
        began = time.thread_time()
        super().run(*args, **kwargs)
        self.spent[-1] += time.thread_time() - began


class Crowd:
    """Bots gathered around hotspots; produce one input per bot per tick."""

    def __init__(self, n: int, half: float, rng: np.random.Generator) -> None:
        self.rng = rng
        self.centres = rng.uniform(-half * 0.6, half * 0.6, (HOTSPOTS, 2))
        weights = rng.dirichlet(np.ones(HOTSPOTS) * 2.0)
        self.group = rng.choice(HOTSPOTS, n, p=weights)
        self.target = self._near(self.group)
        self.start = self._near(self.group)
        self.seq = np.zeros(n, np.int64)
        self.idle = rng.random(n) < 0.2

    def _near(self, group: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.centres[group] + self.rng.normal(0.0, 25.0, (group.size, 2))
        return out

    def inputs(self, pos: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Yaw, forward intent and action bits for every bot."""
        d = self.target - pos
        dist = np.linalg.norm(d, axis=1)
        arrived = dist < 2.0
        if arrived.any():
            self.target[arrived] = self._near(self.group[arrived])
        roam = self.rng.random(self.group.size) < 0.02 * dt  # ~ every 50 s
        if roam.any():
            self.group[roam] = self.rng.integers(0, HOTSPOTS, int(roam.sum()))
            self.target[roam] = self._near(self.group[roam])
        yaw = np.arctan2(d[:, 0], d[:, 1])
        # a fifth of the crowd stands around at any time, switching every few seconds
        flip = self.rng.random(self.group.size) < 0.3 * dt
        self.idle ^= flip
        forward = np.where(self.idle, 0.0, np.where(dist < 5.0, 0.5, 1.0))
        actions = np.where(self.rng.random(self.group.size) < 0.01, 2, 0)
        self.seq += 1
        return yaw, forward, actions

    def messages(self, names: list[str], pos: np.ndarray, dt: float) -> zone_pb2.InputBatch:
        """This tick's input of every bot, as the relay would send it (one batch)."""
        yaw, forward, actions = self.inputs(pos, dt)
        return zone_pb2.InputBatch(
            inputs=[
                zone_pb2.PlayerInput(
                    player_id=name,
                    sequence=int(self.seq[i]),
                    move_z=float(forward[i]),
                    yaw=float(yaw[i]),
                    actions=int(actions[i]),
                    rtt_ms=100.0,
                    interp_delay_ms=100.0,
                )
                for i, name in enumerate(names)
            ]
        )


def run(
    players: int,
    *,
    ticks: int,
    warmup: int,
    hz: int,
    npcs: int,
    seed: int,
    every: int,
    game: str = "",
) -> dict[str, Any]:
    half = 500.0
    cfg = ZoneConfig.from_env(
        Env(
            {
                "TESSERA_ZONE_BOUNDS": f"{-half},{-half},{half},{half}",
                "TESSERA_TICK_HZ": str(hz),
                "TESSERA_SNAPSHOT_EVERY": str(every),
                "TESSERA_TICK_BUDGET_MS": "1000",
            }
        )
    )
    assert cfg.bounds is not None
    game_s: list[float] = []  # per tick: the game module's systems' own CPU
    module = timed(load(game), game_s)
    sim = Simulation(cfg, area=cfg.bounds, seed=seed, module=module)
    run_s: list[float] = []  # per tick: Game.run, the game's systems included
    sim.game = TimedGame(module, disable_after=cfg.game_disable_after, spent=run_s)
    rng = np.random.default_rng(seed)
    crowd = Crowd(players, half, rng)
    sim.spawn_npcs(list(range(1, npcs + 1)))
    names = [f"bot-{i}" for i in range(players)]
    for i, name in enumerate(names):
        x, z = crowd.start[i]
        sim.add_player(entity_id=npcs + 1 + i, player_id=name, pos=(x, 0.0, z), team=0)
        sim.attach(name)
    rows = np.array([sim.ents.index[npcs + 1 + i] for i in range(players)])

    pending: list[tuple[list[str], np.ndarray, np.ndarray]] = []
    # Inputs arrive on simulated time, one per player per tick: on the wall clock a
    # run faster than real time would trip the input rate limit and change the run.
    clock = time.monotonic() + 1.0
    tick_ms, cpu_ms, aoi_ms, encode_ms, input_ms = [], [], [], [], []
    encode_cpu_ms: list[float] = []
    own_ms: list[float] = []
    framework_ms: list[float] = []
    delta_bytes = full_bytes = 0
    total_bytes = snapshots = visible = 0
    for t in range(warmup + ticks):
        msgs = crowd.messages(names, sim.ents.pos[rows][:, [0, 2]], cfg.dt)
        began = time.perf_counter()
        cpu = time.thread_time()
        game_s.append(0.0)
        run_s.append(0.0)
        sim.submit_many(messages.input_batch(msgs)[0], clock + t * cfg.dt)
        submitted = time.perf_counter()
        frame = sim.step()
        ended = time.perf_counter()
        cpu_used = time.thread_time() - cpu
        rows = np.array([sim.ents.index[npcs + 1 + i] for i in range(players)])
        batch = frame.batch
        pending.append((frame.players, batch.stream, batch.sequence))
        if len(pending) > ACK_LAG_TICKS:
            acked_players, streams, seqs = pending.pop(0)
            for p, s, q in zip(acked_players, streams.tolist(), seqs.tolist(), strict=True):
                sim.ack(p, s, q)
        if t < warmup:
            continue
        tick_ms.append((ended - began) * 1000)
        cpu_ms.append(cpu_used * 1000)
        own_ms.append(game_s[-1] * 1000)
        framework_ms.append((run_s[-1] - game_s[-1]) * 1000)
        input_ms.append((submitted - began) * 1000)
        aoi_ms.append(frame.aoi_s * 1000)
        encode_ms.append(frame.encode_s * 1000)
        encode_cpu_ms.append(frame.encode_cpu_s * 1000)
        sizes = np.array([len(p) for p in batch.payloads])
        total_bytes += int(sizes.sum())
        snapshots += sizes.size
        visible += int(batch.entities.sum())
        delta = ~batch.full
        delta_bytes += int(sizes[delta].sum())
        full_bytes += sum(full_size(int(n)) for n in batch.entities[delta].tolist())
        sim.counts.clear()
    less_game = np.array(cpu_ms) - np.array(own_ms)
    return {
        "game": module.name,
        "game_cpu_ms_p50": pct(own_ms, 50),
        "game_cpu_ms_p99": pct(own_ms, 99),
        "tick_cpu_less_game_ms_p50": pct(less_game, 50),
        "tick_cpu_less_game_ms_p99": pct(less_game, 99),
        "framework_cpu_ms_p50": pct(framework_ms, 50, 4),
        "framework_cpu_ms_p99": pct(framework_ms, 99, 4),
        "players": players,
        "npcs": npcs,
        "tick_hz": hz,
        "snapshot_hz": round(hz / every, 2),
        "ticks": ticks,
        "tick_ms_p50": pct(tick_ms, 50),
        "tick_ms_p99": pct(tick_ms, 99),
        "tick_cpu_ms_p50": pct(cpu_ms, 50),
        "tick_cpu_ms_p99": pct(cpu_ms, 99),
        "input_ms_p50": pct(input_ms, 50),
        "aoi_ms_p50": pct(aoi_ms, 50),
        "encode_ms_p50": pct(encode_ms, 50),
        "encode_cpu_ms_p50": pct(encode_cpu_ms, 50),
        "encode_cpu_ms_p99": pct(encode_cpu_ms, 99),
        "visible_per_client": round(visible / max(snapshots, 1), 1),
        "bytes_per_client_per_s": round(total_bytes / max(snapshots, 1) * hz / every, 1),
        "delta_vs_full_ratio": round(delta_bytes / max(full_bytes, 1), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the records")
    parser.add_argument("--players", default="250,500,1000,2000,4000")
    parser.add_argument("--hz", default="30", help="tick rates (comma-separated: one run each)")
    parser.add_argument("--npcs", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=150)
    parser.add_argument("--quick", action="store_true", help="fewer ticks (smoke run)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--game", default="", help="game module (default: tessera.game.default)")
    parser.add_argument(
        "--snapshot-every",
        default="1,2",
        help="snapshot every Nth tick per client (comma-separated: one run each)",
    )
    args = parser.parse_args()
    ticks = 45 if args.quick else args.ticks
    warmup = 15 if args.quick else 30
    records = []
    header = (
        f"{'players':>7} {'hz':>3} {'snap':>4} {'tick p50':>9} {'tick p99':>9} {'aoi p50':>8} "
        f"{'enc p50':>8} {'enc cpu p50':>11} {'cpu p50':>8} {'cpu p99':>8} {'visible':>7} "
        f"{'B/client/s':>10} {'delta/full':>10} {'game p99':>8} {'cpu-game p99':>12} "
        f"{'frame p99':>9}"
    )
    print(header)
    runs = [
        (int(hz), int(e), int(p))
        for hz in args.hz.split(",")
        for e in args.snapshot_every.split(",")
        for p in args.players.split(",")
    ]
    for hz, every, n in runs:
        r = run(
            n,
            ticks=ticks,
            warmup=warmup,
            hz=hz,
            npcs=args.npcs,
            seed=args.seed,
            every=every,
            game=args.game,
        )
        records.append(r)
        print(
            f"{r['players']:>7} {r['tick_hz']:>3} {r['snapshot_hz']:>4.0f} "
            f"{r['tick_ms_p50']:>9.2f} "
            f"{r['tick_ms_p99']:>9.2f} {r['aoi_ms_p50']:>8.2f} {r['encode_ms_p50']:>8.2f} "
            f"{r['encode_cpu_ms_p50']:>11.2f} "
            f"{r['tick_cpu_ms_p50']:>8.2f} {r['tick_cpu_ms_p99']:>8.2f} "
            f"{r['visible_per_client']:>7.1f} "
            f"{r['bytes_per_client_per_s']:>10.0f} "
            f"{r['delta_vs_full_ratio']:>10.3f} "
            f"{r['game_cpu_ms_p99']:>8.2f} {r['tick_cpu_less_game_ms_p99']:>12.2f} "
            f"{r['framework_cpu_ms_p99']:>9.3f}",
            flush=True,
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": sys.version.split()[0], "machine": platform.machine()}
    args.json.write_text(json.dumps({"bench": "zone_tick", **meta, "records": records}, indent=2))


if __name__ == "__main__":
    main()
