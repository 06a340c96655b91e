"""Front-end workers: more processes serving one matchmaker's API on the same port.

The front end is stateless (every ticket lives in Redis) and a Python process
spends most of a ``CreateTicket`` inside gRPC, so one process tops out at one
core. With ``TESSERA_MM_FRONTEND_WORKERS=N`` the process started by
``python -m tessera.matchmaking`` serves the API (and runs the matching loop, of
which there stays one per replica) and starts ``N-1`` children that only serve
the API (:class:`tessera.common.workers.Workers`). Every process binds the gRPC
port with ``SO_REUSEPORT``, so the kernel spreads new connections over them; a
connection, with every call on it, stays with the process that accepted it.

Children log through the parent (each record tagged ``frontend_worker``), serve
``/metrics`` on the parent's metrics port + their number (any free port when it
is 0), get SIGTERM when the parent stops, and are started again if one exits on
its own.
"""

from __future__ import annotations

from tessera.common.workers import Workers
from tessera.matchmaking import metrics

KIND = "frontend worker"
TAG = "frontend_worker"


def worker_env(grpc_port: int, metrics_port: int, number: int) -> dict[str, str]:
    """Settings of child ``number`` (1..N-1): the API only, on the parent's port."""
    return {
        "TESSERA_GRPC_PORT": str(grpc_port),
        "TESSERA_METRICS_PORT": str(metrics_port + number if metrics_port else 0),
        "TESSERA_MM_FRONTEND": "true",
        "TESSERA_MM_MATCHING": "false",
        "TESSERA_MM_CONNECT_TOKENS": "false",
        "TESSERA_MM_FRONTEND_WORKERS": "1",
    }


def frontend_workers(count: int, grpc_port: int, metrics_port: int) -> Workers:
    """The ``count - 1`` child processes of a matchmaker with ``count`` front ends."""
    return Workers(
        "tessera.matchmaking",
        [worker_env(grpc_port, metrics_port, number) for number in range(1, count)],
        kind=KIND,
        tag=TAG,
        restarted=metrics.FRONTEND_WORKER_RESTARTS.inc,
    )
