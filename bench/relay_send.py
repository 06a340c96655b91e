"""The relay's down path per message, in isolation: CPU to seal a snapshot-sized
ServerMessage and send its datagrams on loopback, through the relay's own
``UdpEndpoint`` sender, on asyncio's event loop and on uvloop's.

    python bench/relay_send.py --json PATH [--bytes 1300] [--messages 3000] [--repeats 7]

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
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvloop

from tessera.relay.metrics import Counters
from tessera.relay.session import Session
from tessera.relay.udp import UdpEndpoint, UdpLimits
from tessera.v1 import relay_pb2
from tessera.wire.connection import Connection


def drain(sink: socket.socket) -> None:
    try:
        while True:
            sink.recv(2048)
    except BlockingIOError:
        pass


async def measure(size: int, messages: int, repeats: int) -> dict[str, float]:
    """Best CPU µs per message and per datagram over ``repeats`` rounds."""
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
    session = Session(
        player_id="bench",
        transport="udp",
        token_id=b"bench",
        timeout_s=10.0,
        created=0.0,
        last_seen=0.0,
        send=lambda _payload: None,
        post=lambda _payload: None,
        address=sink.getsockname(),
        accepted=b"accepted",
    )
    session.connection = Connection(os.urandom(32), os.urandom(32), counters.tally)
    send, _post = endpoint.senders(session)
    message = relay_pb2.ServerMessage(
        snapshot=relay_pb2.Snapshot(stream=1, sequence=7, baseline=4, payload=os.urandom(size))
    ).SerializeToString()
    best = float("inf")
    for _ in range(repeats):
        sent = counters.packets_out
        start = time.process_time()
        for i in range(messages):
            send(message)
            if i % 64 == 63:
                drain(sink)
        best = min(best, (time.process_time() - start) / messages)
        datagrams = (counters.packets_out - sent) / messages
        await asyncio.sleep(0.05)
        drain(sink)
    transport.close()
    sink.close()
    return {
        "cpu_us_per_message": round(best * 1e6, 2),
        "datagrams_per_message": datagrams,
        "cpu_us_per_datagram": round(best * 1e6 / datagrams, 2),
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
    args = parser.parse_args()
    if args.bytes < 0 or args.messages < 1 or args.repeats < 1:
        parser.error("--bytes must be ≥ 0, --messages and --repeats ≥ 1")
    result: dict[str, Any] = {"payload_bytes": args.bytes}
    # Alternately, twice each, so a change in the machine's load shows as spread.
    for round_ in (1, 2):
        for loop_name in ("asyncio", "uvloop"):
            measured = run(loop_name, measure(args.bytes, args.messages, args.repeats))
            result[f"{loop_name}_{round_}"] = measured
            print(f"{loop_name:<8} round {round_}  {measured}")
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(f"load average (1 min)  {result['load_average_1m']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
