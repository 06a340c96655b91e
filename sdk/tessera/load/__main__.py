"""``python -m tessera.load``: N bots against any Tessera endpoint.

    python -m tessera.load --auth HOST:PORT --bots 200 --scenario hotspot \\
        [--duration 60] [--processes 2] [--world minX,minZ,maxX,maxZ] [--relay HOST:PORT]

Bots log in at auth (guest accounts, or ``--service-client id=secret`` to have
auth issue tokens on the players' behalf) and connect to the relay their
connect token names. A progress bar while it runs (plain lines without a
terminal), then a report; ``--json PATH`` writes it as JSON. Exit status 1 if a
bot was disconnected or could not connect.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from tessera.common import tls
from tessera.load import scenario as sc
from tessera.load.swarm import Swarm, SwarmConfig
from tessera.v1 import auth_pb2, auth_pb2_grpc, relay_pb2, relay_pb2_grpc


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tessera.load", description="Tessera bot swarm")
    p.add_argument("--auth", required=True, help="auth gRPC address host:port")
    p.add_argument("--relay", default="", help="relay gRPC host:port: its counters in the report")
    p.add_argument(
        "--relay-client",
        default="",
        help="id=secret: the service client that reads the relay's counters (GetStatus "
        "needs role service or admin)",
    )
    p.add_argument("--bots", type=int, default=100)
    p.add_argument(
        "--scenario", default="spread", help=f"file or built-in: {', '.join(sc.names())}"
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds")
    p.add_argument("--processes", type=int, default=2, help="bot processes")
    p.add_argument(
        "--world", default="-1000,-1000,1000,1000", help="world bounds minX,minZ,maxX,maxZ"
    )
    p.add_argument("--max-speed", type=float, default=6.0, help="the zones' max speed (prediction)")
    p.add_argument("--input-hz", type=float, default=10.0)
    p.add_argument("--ramp", type=float, default=5.0, help="seconds over which bots connect")
    p.add_argument(
        "--service-client", default="", help="id=secret: tokens issued by auth for the bots"
    )
    p.add_argument(
        "--prefix", default="load", help="device id prefix (accounts are reused per prefix)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    args = p.parse_args(argv)
    if args.bots < 1 or args.duration <= 0 or args.processes < 1:
        p.error("--bots, --duration and --processes must be positive")
    try:
        args.scenario_path = sc.resolve(args.scenario)
        sc.load(args.scenario_path)
        sc.parse_rect(args.world)
    except sc.ScenarioError as err:
        p.error(str(err))
    return args


def relay_counters(address: str, auth: str, client: str) -> dict[str, Any]:
    """The relay's own counters (``Relay.GetStatus``, as service ``client`` =
    ``id=secret`` logged in at ``auth``); {} if they cannot be read."""
    return asyncio.run(_relay_counters(address, auth, client))


async def _relay_counters(address: str, auth: str, client: str) -> dict[str, Any]:
    client_id, _, secret = client.partition("=")
    try:
        async with tls.channel(auth) as channel:
            login: Any = auth_pb2_grpc.AuthStub(channel)
            session = await login.ServiceLogin(
                auth_pb2.ServiceLoginRequest(client_id=client_id, client_secret=secret),
                timeout=15.0,
            )
        async with tls.channel(address) as channel:
            stub: Any = relay_pb2_grpc.RelayStub(channel)
            s = await stub.GetStatus(
                relay_pb2.GetRelayStatusRequest(),
                metadata=(("authorization", f"Bearer {session.access_token}"),),
                timeout=5.0,
            )
    except grpc.aio.AioRpcError:
        return {}
    return {
        "sessions": sum(s.sessions.values()),
        "packets_in": s.packets_in,
        "packets_out": s.packets_out,
        "reroutes": s.reroutes,
        "drops": dict(s.drops),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    swarm = Swarm(
        SwarmConfig(
            auth=args.auth,
            scenario=str(args.scenario_path),
            world=args.world,
            bots=args.bots,
            duration_s=args.duration,
            processes=args.processes,
            ramp_s=args.ramp,
            max_speed=args.max_speed,
            input_hz=args.input_hz,
            seed=args.seed,
            prefix=args.prefix,
            service_client=args.service_client,
        )
    )
    signal.signal(signal.SIGTERM, _stop)
    console = Console(stderr=True)
    interrupted = False
    try:
        swarm.start()
        with Progress(
            TextColumn("[bold]{task.fields[phase]:<10}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        ) as progress:
            task = progress.add_task("run", total=1.0, phase="", info="")
            last_line = 0.0
            while not swarm.finished():
                r = swarm.report()
                info = (
                    f"connected {r.connected}/{args.bots}  disconnects {r.disconnects}  "
                    f"rtt p50 {r.rtt_ms_p50:.1f} ms"
                )
                progress.update(task, completed=swarm.elapsed_fraction(), phase=r.phase, info=info)
                if not console.is_terminal and time.monotonic() - last_line > 5:
                    last_line = time.monotonic()
                    print(
                        f"{swarm.elapsed_fraction():4.0%} {r.phase} {info}",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(0.25)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        swarm.stop()
    report = swarm.report()
    print(report.text())
    result: dict[str, Any] = {"scenario": args.scenario, **report.as_dict()}
    if args.relay:
        result["relay"] = relay_counters(args.relay, args.auth, args.relay_client)
        print(f"relay              {json.dumps(result['relay'])}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    if interrupted:
        return 130
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
