"""Relay churn soak: N SDK clients (GameClient over UdpTransport) play through one
relay while a share of them log out and in again every second; the relay's
resident memory is sampled over the soak. Real processes: redis-server,
PostgreSQL, auth, one zone, one relay.

    python bench/relay_churn.py --json PATH [--clients 100] [--rate 0.05] [--seconds 300]

A re-login is what a player's client does: say Disconnect to the relay, log in as
a guest (the same device, so the same player, in a new auth session), fetch a
connect token and handshake. The login and the token are fetched ahead (each
client fetches its next one after it connects, and re-logs about ``1 / rate``
seconds later), so the rate is not bounded by auth's latency on a loaded machine;
re-logins run concurrently. Reports the relay's RSS every ``--sample-s`` seconds,
its least-squares slope over the second half, sessions opened and ended as the
relay counts them, and the re-logins per second reached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relay_failover import WORLD, report, walker

from tessera.client.client import GameClient
from tessera.client.login import guest_connect_token
from tessera.client.transport import ConnectError, UdpTransport
from tessera.common.process import ServiceProcess, free_udp_port
from tessera.harness.postgres import LocalPostgres
from tessera.harness.relays import RelayWorld, ordered
from tessera.v1 import auth_pb2

# A handshake the loaded machine did not answer in time is tried again with a new
# token (the first may have been spent); counted as a retry, never silently.
CONNECT_ATTEMPTS = 3


def counter_sum(proc: ServiceProcess, family: str, **labels: str) -> float:
    """The sum of a counter family's samples (those with ``labels``) on /metrics."""
    url = f"http://127.0.0.1:{proc.ports['metrics_port']}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == family and all(w in line for w in want):
            total += float(line.rsplit(" ", 1)[1])
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS")


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in samples)
    return round(60.0 * cov / var, 3) if var else 0.0


class Bot:
    """One player: its current client and the login fetched for its next session."""

    def __init__(self, index: int, auth: str, address: str, hz: float) -> None:
        self.device = f"bench-churn-{index:06d}-device"
        self.auth, self.address, self.hz = auth, address, hz
        self.client: GameClient | None = None
        self.retries = 0  # handshakes not answered in time, tried again with a new token
        self.next_token = self._fetch()

    def _fetch(self) -> asyncio.Task[auth_pb2.ConnectToken]:
        return asyncio.create_task(guest_connect_token(self.auth, self.device))

    async def relog(self) -> None:
        """Leave (if connected) and connect again with the token fetched ahead."""
        if self.client is not None:
            await self.client.close()
            self.client = None
        for attempt in range(CONNECT_ATTEMPTS):
            token = await self.next_token
            self.next_token = self._fetch()
            client = GameClient(UdpTransport(), input_hz=self.hz)
            try:
                await client.connect(ordered(token, self.address))
            except ConnectError:
                await client.close()
                if attempt == CONNECT_ATTEMPTS - 1:
                    raise
                self.retries += 1
                continue
            client.start(walker(1.0))
            self.client = client
            return

    async def close(self) -> None:
        self.next_token.cancel()
        if self.client is not None:
            await self.client.close()


async def soak(bots: list[Bot], relay: ServiceProcess, args: argparse.Namespace) -> dict[str, Any]:
    """Re-log ``rate * clients`` bots per second (round robin) for ``args.seconds``,
    sampling the relay's RSS every ``args.sample_s``."""
    per_s = args.rate * len(bots)
    pending: set[asyncio.Task[None]] = set()
    failures: list[str] = []
    started = 0
    opened0 = counter_sum(relay, "tessera_relay_handshakes_total", result="accepted")
    ended0 = counter_sum(relay, "tessera_relay_session_ends_total")
    load0 = os.getloadavg()
    retries0 = sum(bot.retries for bot in bots)
    print(f"soak started; relay pid {relay.pid}", flush=True)
    t0 = time.monotonic()
    samples: list[tuple[float, float]] = [(0.0, rss_mb(relay.pid))]
    next_sample = args.sample_s

    def done(task: asyncio.Task[None]) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(type(task.exception()).__name__)

    while (elapsed := time.monotonic() - t0) < args.seconds:
        for _ in range(int(elapsed * per_s) - started):
            task = asyncio.create_task(bots[started % len(bots)].relog())
            task.add_done_callback(done)
            pending.add(task)
            started += 1
        if elapsed >= next_sample:
            samples.append((round(elapsed, 1), rss_mb(relay.pid)))
            next_sample += args.sample_s
        await asyncio.sleep(0.05)
    if pending:
        await asyncio.wait(pending, timeout=30.0)
    await asyncio.sleep(2.0)
    samples.append((round(time.monotonic() - t0, 1), rss_mb(relay.pid)))
    second_half = [s for s in samples if s[0] >= args.seconds / 2]
    return {
        "clients": len(bots),
        "seconds": args.seconds,
        "relogs_started": started,
        "relogs_per_s": round(started / args.seconds, 2),
        "relog_failures": len(failures),
        "relog_failure_kinds": sorted(set(failures)),
        "relog_connect_retries": sum(bot.retries for bot in bots) - retries0,
        "relay_sessions_opened": int(
            counter_sum(relay, "tessera_relay_handshakes_total", result="accepted") - opened0
        ),
        "relay_sessions_ended": int(
            counter_sum(relay, "tessera_relay_session_ends_total") - ended0
        ),
        "relay_sessions_end": int(counter_sum(relay, "tessera_relay_sessions", transport="udp")),
        "relay_rss_mb_start": samples[0][1],
        "relay_rss_mb_end": samples[-1][1],
        "relay_rss_mb_max": max(m for _, m in samples),
        "relay_rss_slope_mb_per_min_second_half": slope_mb_per_min(second_half),
        "relay_rss_mb_samples": samples,
        "load_average_start": [round(x, 1) for x in load0],
        "load_average_end": [round(x, 1) for x in os.getloadavg()],
    }


async def run(args: argparse.Namespace, tmp: Path, database_url: str) -> dict[str, Any]:
    # A token is fetched about 1 / rate seconds before it is used.
    stack = RelayWorld(
        tmp,
        {"churn": free_udp_port()},
        database_url=database_url,
        world=WORLD,
        auth_env={"TESSERA_AUTH_CONNECT_TTL_S": str(int(3 / args.rate) + 60)},
    )
    bots: list[Bot] = []
    try:
        stack.start()
        relay = stack.procs["relay"] = stack.relay("churn")
        relay.wait_serving()
        auth, address = stack.procs["auth"].grpc_address, stack.address["churn"]
        bots = [Bot(i, auth, address, args.hz) for i in range(args.clients)]
        for first in range(0, len(bots), 10):
            await asyncio.gather(*(bot.relog() for bot in bots[first : first + 10]))
        await asyncio.sleep(args.warm_s)
        return await soak(bots, relay, args)
    finally:
        await asyncio.gather(*(bot.close() for bot in bots))
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="write results here")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.05, help="share re-logging per second")
    parser.add_argument("--seconds", type=float, default=300.0, help="soak duration")
    parser.add_argument("--sample-s", type=float, default=10.0, help="RSS sampling period")
    parser.add_argument("--warm-s", type=float, default=5.0, help="play before the soak")
    parser.add_argument("--hz", type=float, default=10.0, help="client input rate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalPostgres() as postgres:
        result = asyncio.run(run(args, Path(tmp), postgres.create_database("bench")))
    report(result, args.json)


if __name__ == "__main__":
    main()
