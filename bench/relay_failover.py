"""Relay failover benchmark: N SDK clients (GameClient over UdpTransport) play
through relay A of two; relay A gets SIGTERM (they are told to move), then,
after A is back, relay B (where they now are) is killed with -9 (they notice the
silence). Real processes: redis-server, auth, one zone, two relays.

    python bench/relay_failover.py --json PATH [--clients 100] [--hz 10]

Reports per phase: resumes, resume gap p50/p99/max (last packet from the old
relay -> Accepted from the new one, measured by the clients), disconnects, lost
entities (a client whose entity changed) and duplicated ones (players the zone
holds more than once), and resumes counted by the relays. The churn soak (players
logging out and in) is bench/relay_churn.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tessera.client.client import GameClient, Intent
from tessera.client.login import guest_connect_token
from tessera.client.transport import UdpTransport
from tessera.common.process import free_udp_port
from tessera.harness.postgres import LocalPostgres
from tessera.harness.relays import RelayWorld, metric, ordered, zone_players

WORLD = "bench"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 3)


def walker(heading: float) -> Callable[[GameClient], Intent]:
    return lambda _client: Intent(move_x=0.2 * heading)


def udp(client: GameClient) -> UdpTransport:
    assert isinstance(client.transport, UdpTransport)
    return client.transport


async def settle(clients: list[GameClient], want: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(udp(c).resumes >= want or not c.connected for c in clients):
            return
        await asyncio.sleep(0.05)


def phase_report(
    clients: list[GameClient], entities: dict[int, int], players: list[str], resumes: int
) -> dict[str, Any]:
    gaps = [udp(c).resume_gaps[-1] for c in clients if udp(c).resume_gaps]
    return {
        "resumes": len(gaps),
        "resume_gap_s_p50": percentile(gaps, 50),
        "resume_gap_s_p99": percentile(gaps, 99),
        "resume_gap_s_max": round(max(gaps), 3) if gaps else None,
        "disconnects": sum(not c.connected for c in clients),
        "disconnect_reasons": dict(
            Counter(c.disconnected.reason for c in clients if c.disconnected is not None)
        ),
        "lost_entities": sum(
            c.accepted is None or c.accepted.entity_id != entities[id(c)] for c in clients
        ),
        "duplicated_entities": sum(n - 1 for n in Counter(players).values() if n > 1),
        "relay_resumes_accepted": resumes,
    }


async def run(args: argparse.Namespace, tmp: Path, database_url: str) -> dict[str, Any]:
    stack = RelayWorld(
        tmp,
        {"a": free_udp_port(), "b": free_udp_port()},
        database_url=database_url,
        world=WORLD,
    )
    procs, address, relay = stack.procs, stack.address, stack.relay
    clients: list[GameClient] = []
    try:
        stack.start()
        procs["relay-a"], procs["relay-b"] = relay("a"), relay("b")
        procs["relay-a"].wait_serving()
        procs["relay-b"].wait_serving()
        for i in range(args.clients):
            token = await guest_connect_token(
                procs["auth"].grpc_address, f"bench-failover-{i:06d}-device"
            )
            client = GameClient(UdpTransport(), input_hz=args.hz)
            await client.connect(ordered(token, address["a"]))
            client.start(walker(1.0 if i % 2 else -1.0))
            clients.append(client)
        deadline = time.monotonic() + 15.0
        while any(udp(c).credential is None for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("clients got no resume credential")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # both relays' presence heartbeats name their addresses
        entities = {id(c): c.accepted.entity_id for c in clients if c.accepted is not None}
        zone_address = procs["zone"].grpc_address

        await asyncio.to_thread(procs["relay-a"].terminate)
        await settle(clients, 1, 10.0)
        await asyncio.sleep(1.0)
        sigterm = phase_report(
            clients,
            entities,
            await zone_players(zone_address),
            int(metric(procs["relay-b"], "tessera_relay_resumes_total", result="accepted")),
        )

        procs["relay-a"] = relay("a")
        procs["relay-a"].wait_serving()
        await asyncio.sleep(1.5)
        procs["relay-b"].kill()
        await settle(clients, 2, 10.0)
        await asyncio.sleep(1.0)
        kill = phase_report(
            clients,
            entities,
            await zone_players(zone_address),
            int(metric(procs["relay-a"], "tessera_relay_resumes_total", result="accepted")),
        )
        return {
            "clients": args.clients,
            "input_hz": args.hz,
            **{f"sigterm_{k}": v for k, v in sigterm.items()},
            **{f"kill9_{k}": v for k, v in kill.items()},
        }
    finally:
        for client in clients:
            await client.close()
        stack.stop()


def report(result: dict[str, Any], path: Path) -> None:
    """Print ``result`` as a table and write it to ``path`` as JSON."""
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="write results here")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--hz", type=float, default=10.0, help="client input rate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalPostgres() as postgres:
        result = asyncio.run(run(args, Path(tmp), postgres.create_database("bench")))
    report(result, args.json)
    if result["sigterm_disconnects"] or result["kill9_disconnects"]:
        print("some clients were disconnected", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
