"""``python -m tessera.demo`` (``make demo``): see docs/DEMO.md.

Starts redis-server, auth, relay, matchmaking and the operator's local runtime
(which runs the zones), with auth, matchmaking and the relay serving gRPC over
TLS from a CA made for the run (``--plaintext``: no TLS); then a bot swarm
following the demo scenario, a probe client (one ordinary player in a process
of its own, :mod:`tessera.load.probe`) and, beside them, arena matches played
in instance zones (:mod:`tessera.demo.arena`); shows a live dashboard; writes
a summary, a JSON file and a PNG to the output folder. Exits 1 if a bot was
disconnected (or could not connect), an entity was lost or duplicated, a
zone's tick p99 exceeded its budget or the probe has no figures; 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from tessera.authclient.credentials import ServiceCredentials
from tessera.common.process import ServiceProcess
from tessera.demo import dashboard, picture
from tessera.demo.arena import Arena
from tessera.demo.monitor import Monitor
from tessera.demo.stack import MONITOR_CLIENT, WORLD, Stack
from tessera.demo.timeline import (
    Sample,
    Scan,
    Timeline,
    arena_line,
    failed,
    summary,
    summary_text,
)
from tessera.demo.world import DemoSettings
from tessera.load import scenario as sc
from tessera.load.probe import ProbeConfig
from tessera.load.swarm import Swarm, SwarmConfig, latest_stats

SAMPLE_S = 0.5
SCAN_EVERY_S = 5.0
PLAIN_EVERY_S = 5.0


class Interrupted(Exception):
    """SIGINT or SIGTERM."""


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: expected a number") from None


async def watch(
    stack: Stack,
    swarm: Swarm,
    arena: Arena,
    settings: DemoSettings,
    *,
    output: Path,
    console: Console,
    live: bool,
) -> Timeline:
    """Sample the world until the swarm is done; scan invariants on the way."""
    tl = Timeline()
    credentials = ServiceCredentials(stack.auth_address, MONITOR_CLIENT, stack.monitor_secret)
    monitor = Monitor(stack.redis.url, WORLD, stack.relay_address, credentials)
    stop = asyncio.Event()
    arena_stop = asyncio.Event()
    # Matches that would end after the swarm's run are not started.
    until = time.monotonic() + max(0.0, swarm.start_at + settings.duration_s - time.time())
    arena_task = asyncio.create_task(arena.run(arena_stop, until=until))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    scan_task: asyncio.Task[None] | None = None
    last_scan = last_line = 0.0

    async def scan(t: float) -> None:
        report = await monitor.invariants()
        tl.scans.append(
            Scan(t, report.lost, report.duplicates, report.misrouted, report.unreachable)
        )

    view = Live(console=console, refresh_per_second=4, transient=False) if live else None
    try:
        if view is not None:
            view.start()
        while not stop.is_set():
            t = time.time() - swarm.start_at
            load = swarm.report()
            zones = await monitor.zones()
            tl.add_events(t, await monitor.events())
            tl.samples.append(
                Sample(
                    t,
                    load.phase,
                    zones,
                    load.connected,
                    load.disconnects,
                    await monitor.relay_status(),
                    load.rtt_ms_p50,
                )
            )
            if (
                0 < t < settings.duration_s - 0.5
                and t - last_scan >= SCAN_EVERY_S
                and (scan_task is None or scan_task.done())
            ):
                last_scan = t
                scan_task = asyncio.create_task(scan(t))
            if view is not None:
                view.update(
                    dashboard.render(
                        tl, bots=settings.bots, duration_s=settings.duration_s, output=str(output)
                    )
                )
            elif time.monotonic() - last_line >= PLAIN_EVERY_S:
                last_line = time.monotonic()
                print(dashboard.line(tl, bots=settings.bots), flush=True)
            dead = stack.dead()
            if dead:
                raise RuntimeError(f"service process exited: {', '.join(dead)}")
            if swarm.finished():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_S)
        if scan_task is not None:
            await scan_task
        if stop.is_set():
            raise Interrupted("signal")  # the arena's match is cancelled, not awaited
        # No new match; the one under way plays to its end (by the zone's rules).
        arena_stop.set()
        await arena_task
        return tl
    finally:
        arena_task.cancel()
        if view is not None:
            view.stop()
        await monitor.close()


def start_probe(
    stack: Stack, swarm: Swarm, settings: DemoSettings, scenario: str
) -> ServiceProcess:
    """The probe client's process (from the calling thread: it dies with it)."""
    cfg = ProbeConfig(
        auth=stack.auth_address,
        scenario=scenario,
        world=settings.bounds_text,
        duration_s=settings.duration_s,
        start_at=swarm.start_at,
        max_speed=settings.max_speed,
        input_hz=settings.input_hz,
    )
    proc = ServiceProcess("tessera.load.probe", args=[json.dumps(asdict(cfg))], name="probe")
    proc.start().wait_serving()
    return proc


def tls_line(stack: Stack) -> str:
    """Which gRPC endpoints serve TLS, and the CA their callers trust."""
    servers = stack.tls_servers()
    if not servers:
        return "tls: off (--plaintext): every gRPC call in plaintext"
    listed = ", ".join(f"{name} {address}" for name, address in servers.items())
    return f"tls: {listed} (CA {stack.ca_file}); zones in plaintext"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tessera.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--bots", type=int, default=int(_env_number("BOTS", 100)))
    parser.add_argument(
        "--duration", type=float, default=_env_number("DURATION", 150.0), help="seconds of scenario"
    )
    parser.add_argument("--world-size", type=float, default=2000.0, help="metres (square world)")
    parser.add_argument("--speed", type=float, default=50.0, help="players' max speed, m/s")
    parser.add_argument("--processes", type=int, default=2, help="bot processes")
    parser.add_argument("--scenario", default="demo", help="scenario file or built-in name")
    parser.add_argument("--output", type=Path, default=None, help="default demo-output/<timestamp>")
    parser.add_argument("--plain", action="store_true", help="log lines instead of the dashboard")
    parser.add_argument(
        "--plaintext", action="store_true", help="gRPC without TLS (default: TLS, a CA per run)"
    )
    args = parser.parse_args()
    if args.bots < 2 or args.duration < 10:
        raise SystemExit("need at least 2 bots and 10 s")
    settings = DemoSettings(
        bots=args.bots,
        duration_s=args.duration,
        world_m=args.world_size,
        max_speed=args.speed,
        processes=args.processes,
    )
    scenario_path = sc.resolve(args.scenario)
    output = args.output or Path("demo-output") / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    output.mkdir(parents=True, exist_ok=True)
    console = Console()
    live = console.is_terminal and not args.plain
    print(f"output folder: {output}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    stack = Stack(settings, tls=not args.plaintext)
    swarm: Swarm | None = None
    probe: ServiceProcess | None = None
    code = 0
    try:
        print(
            "starting redis-server, PostgreSQL, auth, matchmaking, operator (local runtime), "
            "relay, console ...",
            flush=True,
        )
        stack.start()
        # The demo's monitor (its channels follow this process's TESSERA_TLS_*) and
        # the processes it starts from here (bots, probe) trust the run's CA.
        os.environ.update(stack.client_env())
        print(f"console: {stack.console_url}", flush=True)
        print(tls_line(stack), flush=True)
        print(
            f"world {settings.world_m:g} m x {settings.world_m:g} m: split above "
            f"{settings.split_threshold} players, merge below {settings.merge_threshold}; "
            f"{settings.bots} bots for {settings.duration_s:g} s ({scenario_path.stem} scenario)",
            flush=True,
        )
        swarm = Swarm(
            SwarmConfig(
                auth=stack.auth_address,
                scenario=str(scenario_path),
                world=settings.bounds_text,
                bots=settings.bots,
                duration_s=settings.duration_s,
                processes=settings.processes,
                ramp_s=min(10.0, 0.08 * settings.duration_s),
                max_speed=settings.max_speed,
                input_hz=settings.input_hz,
            )
        )
        swarm.start()
        probe = start_probe(stack, swarm, settings, str(scenario_path))
        pids = stack.pids() + swarm.pids() + [probe.pid]
        (output / "pids.json").write_text(json.dumps({"pids": pids}))
        arena = Arena.for_stack(stack)
        timeline = asyncio.run(
            watch(stack, swarm, arena, settings, output=output, console=console, live=live)
        )
        swarm.wait(20.0)
        probe.terminate(10.0)
        figures = summary(
            timeline,
            swarm.report().as_dict(),
            duration_s=settings.duration_s,
            bots=settings.bots,
            arena=arena.figures(),
            probe=latest_stats(probe, "probe"),
            grpc_tls=stack.tls_servers(),
        )
        (output / "summary.json").write_text(json.dumps(figures, indent=2))
        (output / "summary.txt").write_text(summary_text(figures) + "\n")
        picture.draw(
            timeline,
            output / "world.png",
            world_m=settings.world_m,
            arena_note=arena_line(figures["arena"]),
        )
        print(summary_text(figures), flush=True)
        problems = failed(figures)
        if problems:
            print("FAILED: " + ", ".join(problems), flush=True)
            code = 1
    except Interrupted as why:
        print(f"interrupted ({why}); stopping everything", flush=True)
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if swarm is not None:
            swarm.stop()
        if probe is not None:
            probe.terminate(10.0)
        stack.stop()
    print(f"outputs: {output}/summary.txt, summary.json, world.png", flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
