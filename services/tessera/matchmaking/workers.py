"""Front-end workers: more processes serving one matchmaker's API on the same port.

The front end is stateless (every ticket lives in Redis) and a Python process
spends most of a ``CreateTicket`` inside gRPC, so one process tops out at one
core. With ``TESSERA_MM_FRONTEND_WORKERS=N`` the process started by
``python -m tessera.matchmaking`` serves the API (and runs the matching loop, of
which there stays one per replica) and starts ``N-1`` children that only serve
the API. Every process binds the gRPC port with ``SO_REUSEPORT``, so the kernel
spreads new connections over them; a connection, with every call on it, stays
with the process that accepted it.

Children log through the parent (each record tagged ``frontend_worker``), serve
``/metrics`` on the parent's metrics port + their number (any free port when it
is 0), get SIGTERM when the parent dies, stop with it, and are started again if
one exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable

from tessera.common.process import ServiceProcess
from tessera.matchmaking import metrics

log = logging.getLogger(__name__)

# How often the parent checks that its children are alive.
WATCH_INTERVAL_S = 1.0
# A child that keeps exiting is started again after 1, 2, 4 ... up to 30 s; one
# that has run for RESTART_RESET_S since its last start is back to 1 s.
RESTART_MAX_DELAY_S = 30.0
RESTART_RESET_S = 60.0


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


def relay(number: int, write: Callable[[str], None]) -> Callable[[str], None]:
    """Pass a child's log lines on, tagged with its number. Its ``serving`` line
    becomes ``frontend worker serving``, so whoever waits for the parent's
    ``serving`` line is not misled by a child's."""

    def line(text: str) -> None:
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if isinstance(record, dict):
            record["frontend_worker"] = number
            if record.get("msg") == "serving":
                record["msg"] = "frontend worker serving"
            text = json.dumps(record, separators=(",", ":")) + "\n"
        write(text)

    return line


def _stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


class FrontendWorkers:
    """The ``count - 1`` child processes of a matchmaker with ``count`` front ends."""

    def __init__(
        self,
        count: int,
        grpc_port: int,
        metrics_port: int,
        *,
        write: Callable[[str], None] = _stderr,
    ) -> None:
        self.children = [
            ServiceProcess(
                "tessera.matchmaking",
                worker_env(grpc_port, metrics_port, number),
                name=f"matchmaking-frontend-{number}",
                echo=relay(number, write),
            )
            for number in range(1, count)
        ]
        self._stopping = False
        self._delay = [0.0] * len(self.children)
        self._started = [0.0] * len(self.children)

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start every child and wait until each serves (raises if one does not)."""
        for child in self.children:
            child.start()
        try:
            for child in self.children:
                await asyncio.to_thread(child.wait_serving, timeout_s)
        except RuntimeError:
            await self.stop()
            raise

    async def watch(self) -> None:
        """Start again any child that exited on its own (backing off while it keeps
        exiting), until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = loop.time()
            for i, child in enumerate(self.children):
                if self._stopping:
                    return
                if child.alive():
                    if now - self._started[i] >= RESTART_RESET_S:
                        self._delay[i] = 0.0
                    continue
                if now < self._started[i] + self._delay[i]:
                    continue
                assert child.proc is not None
                log.error(
                    "frontend worker exited; starting it again",
                    extra={"worker": child.name, "exit_code": child.proc.returncode},
                )
                metrics.FRONTEND_WORKER_RESTARTS.inc()
                self._delay[i] = min(RESTART_MAX_DELAY_S, max(1.0, 2 * self._delay[i]))
                self._started[i] = now
                try:
                    child.start()
                except OSError:
                    log.exception("starting a frontend worker failed", extra={"worker": child.name})

    def begin_stop(self) -> None:
        """SIGTERM every child, so they drain their calls while the parent drains its own."""
        self._stopping = True
        for child in self.children:
            if child.proc is not None and child.alive():
                with contextlib.suppress(ProcessLookupError):
                    child.proc.terminate()

    async def stop(self, timeout_s: float = 15.0) -> None:
        """Stop every child (SIGTERM, then SIGKILL after ``timeout_s``) and wait for it."""
        self.begin_stop()
        await asyncio.gather(*(asyncio.to_thread(c.terminate, timeout_s) for c in self.children))

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children if c.proc is not None]
