"""What receiving one ghost batch costs a zone's loop: the zone's own reader
(``tessera.zone.store.GhostFeed``, hiredis on the subscription's socket, with
the address and credentials of the production client) against the floor of any
asyncio reader woken once per message (a bare ``asyncio`` stream).

A publisher process sends ``--bytes`` payloads at ``--rate`` a second for
``--seconds``, as a neighbour's ghost batches come (one per wake-up, not in
bursts): first on a world's ghost channel of a local redis-server, which the
feed reads as a zone's ``Neighbours.run_in`` does (following its
neighbours after each tick, here every ``FOLLOW_S``, batches handed over as
they are read); then over a plain TCP socket to an asyncio stream. The figure
is the reading thread's CPU time per message (thread CPU includes its system
calls). The two alternate ``--repeat`` times.

    python bench/ghost_feed.py --json PATH [--rate 200] [--seconds 5] [--bytes 1200] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tessera.common import store
from tessera.common.store import WorldKeys
from tessera.harness.redis import LocalRedis
from tessera.zone.store import GhostFeed

KEYS = WorldKeys("w")
FOLLOW_S = 0.1  # a 10 Hz zone's ticks, after each of which it follows its neighbours


def publisher(code: str, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """A process sending ``rate x seconds`` payloads, paced; ``code`` defines send()."""
    loop = (
        f"{code}\nimport time\np = b'x' * {args.bytes}\n"
        f"for i in range({int(args.rate * args.seconds)}):\n"
        f"    send(p); time.sleep({1.0 / args.rate})\n"
    )
    return subprocess.Popen([sys.executable, "-c", loop])


async def feed(url: str, args: argparse.Namespace) -> dict[str, float]:
    got = 0

    def deliver(_zone: str, _batch: bytes) -> None:
        nonlocal got
        got += 1

    reader = GhostFeed(store.connect(url), KEYS, deliver)
    zones = {"z1", "z2"}
    await reader.follow(zones)
    channel = KEYS.zone_ghosts("z1")
    pub = publisher(
        f"import redis\nr = redis.Redis.from_url({url!r})\ndef send(p): r.publish({channel!r}, p)",
        args,
    )
    cpu0 = time.thread_time()
    while pub.poll() is None:
        await reader.follow(zones)
        await asyncio.sleep(FOLLOW_S)
    await asyncio.sleep(FOLLOW_S)  # what was still on its way
    cpu = time.thread_time() - cpu0
    await reader.close()
    return {"messages": got, "us_per_message": round(cpu / max(got, 1) * 1e6, 1)}


async def floor(args: argparse.Namespace) -> dict[str, float]:
    reads, cpu = 0, 0.0
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal reads, cpu
        cpu0 = time.thread_time()
        while await reader.read(65536):
            reads += 1
        cpu = time.thread_time() - cpu0
        writer.close()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pub = publisher(
        f"import socket\ns = socket.create_connection(('127.0.0.1', {port}))\n"
        "def send(p): s.sendall(p)",
        args,
    )
    await done.wait()
    pub.wait()
    server.close()
    return {"reads": reads, "us_per_read": round(cpu / max(reads, 1) * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=200.0, help="messages/s")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--bytes", type=int, default=1200)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs: list[dict[str, Any]] = []
    with LocalRedis() as redis:
        for _ in range(args.repeat):
            runs.append({"ghost_feed": asyncio.run(feed(redis.url, args))})
            runs.append({"stream_floor": asyncio.run(floor(args))})
    for run in runs:
        print(json.dumps(run))
    out = {
        "rate": args.rate,
        "seconds": args.seconds,
        "bytes": args.bytes,
        "runs": runs,
        "loadavg": {"before": load_before, "after": os.getloadavg()},
    }
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
