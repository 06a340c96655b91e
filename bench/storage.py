"""Storage benchmark: the game event log and player data on a real PostgreSQL, and
the zone tick with and without the event log.

Starts a throwaway PostgreSQL cluster (tessera.harness.postgres) and measures, in
one process:

- event log: events offered at ``--rate`` (then 4 x ``--rate``, to find the
  ceiling) per second in 30 Hz bursts into the zone's spool
  (tessera.common.spool.Spool) and written by COPY (tessera.common.eventlog);
  writes/s sustained, batch latency p50/p99, drops;
- player data: read (``load``), API conditional write (``put``) and a zone's
  write-behind batch of 500 rows (``save_newer``), p50/p99;
- zone tick: the real simulation (``--players`` bots shooting, as bench/zone_tick.py)
  ticked at 30 Hz on the event loop for ``--seconds``, alternately without and
  with the event log (its real combat events plus synthetic ones up to ``--rate``
  per second, written by the spool on the same loop); tick duration and CPU time
  p50/p99 (the tick's own work, including queuing the events) and tick start
  lateness p99 (what the spool's writes on the same loop delay) per run.

    python bench/storage.py --json PATH [--rate 25000] [--seconds 8] [--players 500]
        [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from zone_tick import Crowd

from tessera.common import eventlog, playerdata
from tessera.common.config import Env
from tessera.common.database import Pool, open_database
from tessera.common.playerdata import PlayerData
from tessera.common.spool import Spool
from tessera.harness.postgres import LocalPostgres
from tessera.zone import messages
from tessera.zone import metrics as zone_metrics
from tessera.zone.config import ZoneConfig
from tessera.zone.events import HIT_DEALT, Event
from tessera.zone.persistence import Persistence
from tessera.zone.simulation import Simulation

HZ = 30


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else 0.0


def row(i: int) -> eventlog.EventRow:
    at = datetime.now(UTC)
    return (at, "bench", "zone-0", "", "hit", f"bot-{i % 1000}", i, "ranged", 20.0, 1.0, 2.0)


async def event_log(pool: Pool, *, rate: int, seconds: float) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``seconds``; written/s until the spool is empty."""
    batches_ms: list[float] = []
    written = 0

    async def write(batch: list[eventlog.EventRow]) -> None:
        nonlocal written
        began = time.perf_counter()
        await eventlog.append(pool, batch)
        batches_ms.append((time.perf_counter() - began) * 1000)
        written += len(batch)

    spool = Spool(
        "bench",
        write,
        capacity=200_000,
        batch=1000,
        interval_s=0.25,
        metrics=zone_metrics.spool("bench"),
    )
    task = asyncio.create_task(spool.run())
    per_tick = rate // HZ
    offered = dropped = 0
    began = time.perf_counter()
    for t in range(int(seconds * HZ)):
        dropped += spool.offer(row(offered + i) for i in range(per_tick))
        offered += per_tick
        await asyncio.sleep(max(0.0, began + (t + 1) / HZ - time.perf_counter()))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await spool.flush()  # what is left, including a batch the cancel cut short
    elapsed = time.perf_counter() - began
    return {
        "offered_per_s": rate,
        "seconds": round(elapsed, 2),
        "written": written,
        "dropped": dropped,
        "written_per_s": round(written / elapsed),
        "batches": len(batches_ms),
        "batch_ms_p50": pct(batches_ms, 50),
        "batch_ms_p99": pct(batches_ms, 99),
    }


def data(player: str, version: int) -> PlayerData:
    return PlayerData("bench", player, (1.0, 0.0, 2.0), 0.5, 90.0, b"x" * 200, 0, 0, version, "b")


async def player_data(pool: Pool, *, players: int) -> dict[str, Any]:
    names = [f"p{i}" for i in range(players)]
    put_ms, read_ms, batch_ms = [], [], []
    for name in names:
        began = time.perf_counter()
        await playerdata.put(pool, data(name, 0), 0, now=time.time())
        put_ms.append((time.perf_counter() - began) * 1000)
    for name in names * 2:
        began = time.perf_counter()
        await playerdata.load(pool, "bench", name)
        read_ms.append((time.perf_counter() - began) * 1000)
    for version in range(2, 22):
        for start in range(0, players, 500):
            chunk = [data(n, version) for n in names[start : start + 500]]
            began = time.perf_counter()
            await playerdata.save_newer(pool, chunk, now=time.time())
            batch_ms.append((time.perf_counter() - began) * 1000)
    return {
        "players": players,
        "read_ms_p50": pct(read_ms, 50),
        "read_ms_p99": pct(read_ms, 99),
        "put_ms_p50": pct(put_ms, 50),
        "put_ms_p99": pct(put_ms, 99),
        "save_batch_500_ms_p50": pct(batch_ms, 50),
        "save_batch_500_ms_p99": pct(batch_ms, 99),
    }


async def zone_tick(
    pool: Pool, *, players: int, seconds: float, log_on: bool, rate: int
) -> dict[str, Any]:
    """Tick a simulation at 30 Hz on this loop; with the log on, every tick queues its
    combat events plus synthetic hits up to ``rate`` per second."""
    half = 300.0
    cfg = ZoneConfig.from_env(
        Env(
            {
                "TESSERA_ZONE_BOUNDS": f"{-half},{-half},{half},{half}",
                "TESSERA_TICK_BUDGET_MS": "1000",
            }
        )
    )
    assert cfg.bounds is not None
    sim = Simulation(cfg, area=cfg.bounds, seed=1)
    rng = np.random.default_rng(1)
    crowd = Crowd(players, half, rng)
    names = [f"bot-{i}" for i in range(players)]
    for i, name in enumerate(names):
        x, z = crowd.start[i]
        sim.add_player(entity_id=1 + i, player_id=name, pos=(x, 0.0, z), team=i % 2)
        sim.attach(name)
    persistence = Persistence(
        pool,
        world="bench",
        zone="zone-0",
        match="",
        capacity=20_000,
        event_capacity=200_000,
        interval_s=5.0,
        event_interval_s=0.25,
    )
    writer = asyncio.create_task(persistence.events.run()) if log_on else None
    synthetic = [Event(names[i % players], HIT_DEALT, i, 20.0, "ranged") for i in range(rate // HZ)]
    tick_ms, cpu_ms, late_ms, real_events = [], [], [], 0
    clock = time.monotonic() + 1.0
    ticks = int(seconds * HZ)
    began = time.perf_counter()
    for t in range(ticks):
        due = began + t / HZ
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        start, cpu = time.perf_counter(), time.thread_time()
        late_ms.append((start - due) * 1000)
        rows = np.array([sim.ents.index[1 + i] for i in range(players)])
        msgs = crowd.messages(names, sim.ents.pos[rows][:, [0, 2]], cfg.dt)
        sim.submit_many(messages.input_batch(msgs)[0], clock + t * cfg.dt)
        frame = sim.step()
        if log_on:
            events = [e for e in frame.events if e.kind == HIT_DEALT]
            real_events += len(events)
            persistence.log(events + synthetic[: max(0, len(synthetic) - len(events))], {})
        for p, s, q in zip(
            frame.players, frame.batch.stream.tolist(), frame.batch.sequence.tolist(), strict=True
        ):
            sim.ack(p, s, q)
        sim.counts.clear()
        tick_ms.append((time.perf_counter() - start) * 1000)
        cpu_ms.append((time.thread_time() - cpu) * 1000)
    if writer is not None:
        await persistence.events.flush()
        writer.cancel()
    skip = HZ  # the first second warms up
    return {
        "event_log": log_on,
        "players": players,
        "ticks": ticks,
        "events_per_s": round((real_events + len(synthetic) * ticks) / seconds) if log_on else 0,
        "tick_ms_p50": pct(tick_ms[skip:], 50),
        "tick_ms_p99": pct(tick_ms[skip:], 99),
        "tick_cpu_ms_p50": pct(cpu_ms[skip:], 50),
        "tick_cpu_ms_p99": pct(cpu_ms[skip:], 99),
        "late_ms_p99": pct(late_ms[skip:], 99),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with LocalPostgres() as server:
        pool = await open_database(server.create_database("bench"), max_size=4)
        try:
            log = [
                await event_log(pool, rate=rate, seconds=args.seconds)
                for rate in (args.rate, args.rate * 4)
            ]
            print(f"event log: {log}")
            pdata = await player_data(pool, players=args.data_players)
            print(f"player data: {pdata}")
            ticks = []
            for _ in range(args.rounds):
                for on in (False, True):
                    r = await zone_tick(
                        pool, players=args.players, seconds=args.seconds, log_on=on, rate=args.rate
                    )
                    print(f"zone tick: {r}")
                    ticks.append(r)
        finally:
            await pool.close()
    return {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "event_log": log,
        "player_data": pdata,
        "zone_tick": ticks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--rate", type=int, default=25_000, help="events offered per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="each timed run")
    parser.add_argument("--players", type=int, default=500, help="bots in the ticked zone")
    parser.add_argument("--data-players", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs of tick runs")
    parser.add_argument("--quick", action="store_true", help="short runs (smoke)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.data_players, args.players = 2.0, 1, 200, 200
    results = asyncio.run(run(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
