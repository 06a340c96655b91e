"""Relay worker processes: several full relays on one UDP port (docs/RELAY.md,
"Worker processes").

With ``TESSERA_RELAY_WORKERS=N`` the process started by ``python -m
tessera.relay`` is worker 0 and starts ``N-1`` more (:class:`Workers`). Each is
a whole relay with its own relay id (``<relay id>-w<number>``), zone links and
sessions; all bind the UDP and gRPC ports with ``SO_REUSEPORT``, so Linux hands
each datagram to one of them by a hash of its 4-tuple (a client stays on one
worker while its address and port stay), and a client that lands on another
worker resumes there with its resume credential like on any other relay.
"""

from __future__ import annotations

from tessera.common.workers import Workers
from tessera.relay import metrics

KIND = "relay worker"
TAG = "relay_worker"


def worker_env(
    *, relay_id: str, number: int, udp_port: int, grpc_port: int, metrics_port: int, address: str
) -> dict[str, str]:
    """Settings of worker ``number`` (1..N-1): the parent's ports and public address,
    its own relay id, and ``/metrics`` on the parent's metrics port + ``number``
    (any free port when that is 0)."""
    return {
        "TESSERA_RELAY_WORKERS": "1",
        "TESSERA_RELAY_WORKER": str(number),
        "TESSERA_RELAY_ID": f"{relay_id}-w{number}",
        "TESSERA_UDP_PORT": str(udp_port),
        "TESSERA_GRPC_PORT": str(grpc_port),
        "TESSERA_METRICS_PORT": str(metrics_port + number if metrics_port else 0),
        "TESSERA_RELAY_PUBLIC_ADDRESS": address,
    }


def relay_workers(
    count: int, *, relay_id: str, udp_port: int, grpc_port: int, metrics_port: int, address: str
) -> Workers:
    """Workers 1..``count``-1 of a relay process."""
    return Workers(
        "tessera.relay",
        [
            worker_env(
                relay_id=relay_id,
                number=number,
                udp_port=udp_port,
                grpc_port=grpc_port,
                metrics_port=metrics_port,
                address=address,
            )
            for number in range(1, count)
        ],
        kind=KIND,
        tag=TAG,
        restarted=metrics.WORKER_RESTARTS.inc,
    )
