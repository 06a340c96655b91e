"""What a publish costs a Redis Cluster: classic PUBLISH (every node gets every
message over the cluster bus) against sharded SPUBLISH (only the channel's
shard: its master and replicas), on a real local cluster of 3 masters and 3
replicas.

A subscriber listens on a world's ghost channel on the node that owns the
channel's slot (SUBSCRIBE, then SSUBSCRIBE); the production client
(``tessera.common.store.connect`` with the cluster's ``redis+cluster://``
address) sends M messages of B bytes with PUBLISH, then with SPUBLISH. Each
node's CPU (``INFO cpu``), commands and bytes are read before and after each
mode, and CLUSTER INFO's bus message counters, so the cost the other shards pay
for classic publish shows per message.

``--rate`` paces the messages (e.g. at a world's ghost rate) and the bench
reports each other node's CPU share of a core at that rate.

    python bench/cluster_pubsub.py --json PATH [--messages 20000] [--bytes 400] [--rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import redis

from tessera.common import store
from tessera.common.store import WorldKeys
from tessera.harness.redis import LocalRedisCluster, ServerLoad, server_load

CHANNEL = WorldKeys("w").zone_ghosts("z0")
CONCURRENCY = 50


class Subscriber:
    """One subscription on the channel's master, read by a thread."""

    def __init__(self, port: int, sharded: bool) -> None:
        self.client = redis.Redis(port=port)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        if sharded:
            self.pubsub.ssubscribe(CHANNEL)
        else:
            self.pubsub.subscribe(CHANNEL)
        self.received = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            if self.pubsub.get_message(timeout=0.2) is not None:
                self.received += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.pubsub.close()
        self.client.close()


def bus_messages(client: redis.Redis) -> int:
    """Cluster bus messages this node sent so far (all types)."""
    info: dict[str, Any] = client.cluster("INFO")
    return int(info["cluster_stats_messages_sent"])


async def send(url: str, command: str, messages: int, payload: bytes, rate: float) -> float:
    """Publish ``messages`` times with ``command``, ``rate`` a second (0: as fast
    as the client goes); wall seconds."""
    client = store.connect(url)
    began = time.monotonic()
    chunk = min(CONCURRENCY, max(1, round(rate / 20))) if rate else CONCURRENCY
    try:
        for start in range(0, messages, chunk):
            count = min(chunk, messages - start)
            await asyncio.gather(
                *(client.execute_command(command, CHANNEL, payload) for _ in range(count))
            )
            if rate:
                await asyncio.sleep(max(0.0, began + (start + count) / rate - time.monotonic()))
    finally:
        await client.aclose()
    return time.monotonic() - began


def mode(
    cluster: LocalRedisCluster, owner: int, command: str, payload: bytes, args: argparse.Namespace
) -> dict[str, Any]:
    messages = args.messages
    clients = [redis.Redis(port=n.port) for n in cluster.nodes]
    subscriber = Subscriber(cluster.nodes[owner].port, sharded=command == "SPUBLISH")
    try:
        before = [server_load(c) for c in clients]
        bus_before = [bus_messages(c) for c in clients]
        wall = asyncio.run(send(cluster.url, command, messages, payload, args.rate))
        deadline = time.monotonic() + 30
        while subscriber.received < messages and time.monotonic() < deadline:
            time.sleep(0.05)
        loads: list[ServerLoad] = [
            server_load(c).since(b) for c, b in zip(clients, before, strict=True)
        ]
        bus = [bus_messages(c) - b for c, b in zip(clients, bus_before, strict=True)]
    finally:
        subscriber.close()
        for c in clients:
            c.close()
    roles = ["owner" if i == owner else "other" for i in range(len(cluster.nodes))]
    other_cpu = sum(load.cpu_s for load, role in zip(loads, roles, strict=True) if role == "other")
    return {
        "command": command,
        "messages": messages,
        "received": subscriber.received,
        "wall_s": round(wall, 2),
        "rate_per_s": round(messages / wall, 1),
        "other_nodes_cpu_share_each": round(other_cpu / (len(cluster.nodes) - 1) / wall, 5),
        "owner_cpu_us_per_message": round(loads[owner].cpu_s / messages * 1e6, 2),
        "other_nodes_cpu_us_per_message": round(other_cpu / messages * 1e6, 2),
        "all_nodes_cpu_us_per_message": round(sum(x.cpu_s for x in loads) / messages * 1e6, 2),
        "bus_messages_sent_per_message": round(sum(bus) / messages, 3),
        "nodes": [
            {
                "port": n.port,
                "role": role,
                "cpu_s": round(load.cpu_s, 4),
                "calls": dict(load.calls),
                "net_in": load.net_in,
                "net_out": load.net_out,
                "bus_sent": sent,
            }
            for n, role, load, sent in zip(cluster.nodes, roles, loads, bus, strict=True)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--bytes", type=int, default=400)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s (0: unpaced)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    payload = os.urandom(args.bytes)
    with LocalRedisCluster() as cluster:
        master = cluster.master_of(CHANNEL)
        owner = cluster.nodes.index(master)
        results = [mode(cluster, owner, c, payload, args) for c in ("PUBLISH", "SPUBLISH")]
    print(
        f"{'command':<9} {'received':>8} {'owner us/msg':>12} {'others us/msg':>13} "
        f"{'all us/msg':>10} {'bus msgs/msg':>12} {'msgs/s':>8} {'other node core':>15}"
    )
    for r in results:
        print(
            f"{r['command']:<9} {r['received']:>8} {r['owner_cpu_us_per_message']:>12.2f} "
            f"{r['other_nodes_cpu_us_per_message']:>13.2f} "
            f"{r['all_nodes_cpu_us_per_message']:>10.2f} "
            f"{r['bus_messages_sent_per_message']:>12.3f} {r['rate_per_s']:>8.0f} "
            f"{r['other_nodes_cpu_share_each']:>15.5f}"
        )
    loadavg = {"before": load_before, "after": os.getloadavg()}
    print(f"load average before {load_before}, after {loadavg['after']}")
    out = {
        "bench": "cluster_pubsub",
        "bytes": args.bytes,
        "load_average": loadavg,
        "modes": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
