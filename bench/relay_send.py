"""The relay's down path per message, in isolation: CPU to seal a snapshot-sized
ServerMessage and send its datagrams on loopback, through the relay's own
``UdpEndpoint`` sender, on asyncio's event loop and on uvloop's; and per snapshot
of a zone's ``SnapshotBatch`` (``--chunk`` snapshots, one per session) fanned out
by ``Gateway.on_snapshots``: building each client's message, sealing, sending.

    python bench/relay_send.py --json PATH [--bytes 1300] [--messages 3000] [--repeats 7]
        [--chunk 32]

A sink socket in the same process drains the datagrams every 64 messages (its
receive buffer is 1 MiB), so the kernel's loopback delivery is in the figure as
it is in a relay. Reports the best of ``--repeats`` rounds (CPU time of this
process per message and per datagram): the floor the added latency of one
snapshot batch is made of, without the zone, the clients and other processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop
from redis.asyncio import Redis

from tessera.relay.admission import Grant
from tessera.relay.errors import Rejected
from tessera.relay.gateway import Gateway, GatewayConfig
from tessera.relay.metrics import Counters
from tessera.relay.routing import Route
from tessera.relay.session import Session
from tessera.relay.store import RelayStore
from tessera.relay.udp import UdpEndpoint, UdpLimits
from tessera.v1 import relay_pb2, zone_pb2
from tessera.wire.connection import Connection


def drain(sink: socket.socket) -> None:
    try:
        while True:
            sink.recv(2048)
    except BlockingIOError:
        pass


def refuse(token: bytes, now: float) -> Grant:
    raise Rejected("malformed", "the bench opens no sessions by token")


def udp_session(endpoint: UdpEndpoint, player: str, address: Any, counters: Counters) -> Session:
    """An accepted UDP session to ``address`` with its own keys, sending through
    ``endpoint``."""
    session = Session(
        player_id=player,
        transport="udp",
        token_id=player.encode(),
        timeout_s=10.0,
        created=0.0,
        last_seen=0.0,
        send=lambda _payload: None,
        post=lambda _payload: None,
        address=address,
        accepted=b"accepted",
        zone="zone",
    )
    session.connection = Connection(os.urandom(32), os.urandom(32), counters.tally)
    session.send, session.post = endpoint.senders(session)
    return session


def best_round(
    repeats: int, work: Callable[[], None], sink: socket.socket, counters: Counters
) -> tuple[float, int]:
    """The least CPU seconds of ``repeats`` runs of ``work``, and the datagrams one sent."""
    best = float("inf")
    sent = 0
    for _ in range(repeats):
        before = counters.packets_out
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
        sent = counters.packets_out - before
        drain(sink)
    return best, sent


async def measure(size: int, messages: int, repeats: int, chunk: int) -> dict[str, float]:
    """Best CPU µs per message and per datagram over ``repeats`` rounds, and per
    snapshot of a fanned-out batch."""
    loop = asyncio.get_running_loop()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sink.setblocking(False)
    counters = Counters()
    # The sender needs no gateway: only the endpoint's transport and counters.
    endpoint = UdpEndpoint(None, counters, UdpLimits())  # type: ignore[arg-type]
    transport, _ = await loop.create_datagram_endpoint(
        lambda: endpoint, local_addr=("127.0.0.1", 0)
    )
    session = udp_session(endpoint, "bench", sink.getsockname(), counters)
    message = relay_pb2.ServerMessage(
        snapshot=relay_pb2.Snapshot(stream=1, sequence=7, baseline=4, payload=os.urandom(size))
    ).SerializeToString()

    def send_all() -> None:
        for i in range(messages):
            session.send(message)
            if i % 64 == 63:
                drain(sink)

    per_message, datagrams = best_round(repeats, send_all, sink, counters)

    # The gateway's Redis is never reached: on_snapshots reads only its sessions.
    gateway = Gateway(
        GatewayConfig(relay_id="bench", world="bench"),
        store=RelayStore(Redis(), "bench"),
        opener=refuse,
        counters=counters,
    )
    link = gateway.link("zone")
    players = [f"player-{i}" for i in range(chunk)]
    for player in players:
        gateway.sessions.add(udp_session(endpoint, player, sink.getsockname(), counters))
        gateway.routes.update(player, Route("zone", 1))
    batch = zone_pb2.SnapshotBatch(
        tick=1,
        server_time_ms=1.0,
        snapshots=[
            zone_pb2.PlayerSnapshot(
                player_id=p, stream=1, sequence=7, baseline=4, payload=os.urandom(size)
            )
            for p in players
        ],
    )
    batches = max(1, messages // chunk)

    def fan_out() -> None:
        for _ in range(batches):
            gateway.on_snapshots(link, batch, time.perf_counter())
            drain(sink)

    per_batch, _ = best_round(repeats, fan_out, sink, counters)
    await link.close()
    transport.close()
    sink.close()
    return {
        "cpu_us_per_message": round(per_message * 1e6 / messages, 2),
        "datagrams_per_message": datagrams / messages,
        "cpu_us_per_datagram": round(per_message * 1e6 / datagrams, 2),
        "fan_out_cpu_us_per_snapshot": round(per_batch * 1e6 / (batches * chunk), 2),
    }


def run(loop_name: str, coroutine: Coroutine[Any, Any, dict[str, float]]) -> dict[str, float]:
    if loop_name == "uvloop":
        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="write results here")
    parser.add_argument("--bytes", type=int, default=1300, help="snapshot payload size")
    parser.add_argument("--messages", type=int, default=3000, help="messages per round")
    parser.add_argument("--repeats", type=int, default=7, help="rounds (the best is kept)")
    parser.add_argument("--chunk", type=int, default=32, help="snapshots per fanned-out batch")
    args = parser.parse_args()
    if args.bytes < 0 or args.messages < 1 or args.repeats < 1 or args.chunk < 1:
        parser.error("--bytes must be ≥ 0, --messages, --repeats and --chunk ≥ 1")
    result: dict[str, Any] = {"payload_bytes": args.bytes, "chunk": args.chunk}
    # Alternately, twice each, so a change in the machine's load shows as spread.
    for round_ in (1, 2):
        for loop_name in ("asyncio", "uvloop"):
            measured = run(loop_name, measure(args.bytes, args.messages, args.repeats, args.chunk))
            result[f"{loop_name}_{round_}"] = measured
            print(f"{loop_name:<8} round {round_}  {measured}")
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(f"load average (1 min)  {result['load_average_1m']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
