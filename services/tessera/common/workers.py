"""Worker processes: more copies of a service sharing its ports (``SO_REUSEPORT``).

A Python service tops out at one core. A service that can run as several
processes (matchmaking's front end, the relay) starts ``N-1`` children of its
own module from its parent process; every process binds the same port with
``SO_REUSEPORT`` and the kernel spreads the traffic over them.

:class:`Workers` supervises the children: they log through the parent (each
record tagged with their number, their ``serving`` line renamed so that whoever
waits for the parent's is not misled), get SIGKILL when the parent dies (see
:func:`tessera.common.process.die_with_parent`), SIGTERM when it stops, and are
started again, backing off, when one exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence

from tessera.common.process import ServiceProcess

log = logging.getLogger(__name__)

# How often the parent checks that its children are alive.
WATCH_INTERVAL_S = 1.0
# A child that keeps exiting is started again after 1, 2, 4 ... up to 30 s; one
# that has run for RESTART_RESET_S since its last start is back to 1 s.
RESTART_MAX_DELAY_S = 30.0
RESTART_RESET_S = 60.0


def tagged(tag: str, kind: str, number: int, write: Callable[[str], None]) -> Callable[[str], None]:
    """Pass a child's log lines on, each JSON record with ``tag: number``. Its
    ``serving`` line becomes ``<kind> serving``."""

    def line(text: str) -> None:
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if isinstance(record, dict):
            record[tag] = number
            if record.get("msg") == "serving":
                record["msg"] = f"{kind} serving"
            text = json.dumps(record, separators=(",", ":")) + "\n"
        write(text)

    return line


def _stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


class Workers:
    """Children 1..N-1 of a service process: ``python -m <module>`` with ``envs[i]``
    added to the parent's environment. ``kind`` names them in logs ("frontend
    worker"), ``tag`` is the log field carrying their number, ``restarted`` is
    called for every restart (a metric)."""

    def __init__(
        self,
        module: str,
        envs: Sequence[Mapping[str, str]],
        *,
        kind: str,
        tag: str,
        restarted: Callable[[], None],
        write: Callable[[str], None] = _stderr,
    ) -> None:
        self.kind = kind
        self.restarted = restarted
        self.children = [
            ServiceProcess(
                module,
                env,
                name=f"{kind.replace(' ', '-')}-{number}",
                echo=tagged(tag, kind, number, write),
            )
            for number, env in enumerate(envs, start=1)
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
                    f"{self.kind} exited; starting it again",
                    extra={"worker": child.name, "exit_code": child.proc.returncode},
                )
                self.restarted()
                self._delay[i] = min(RESTART_MAX_DELAY_S, max(1.0, 2 * self._delay[i]))
                self._started[i] = now
                try:
                    child.start()
                except OSError:
                    log.exception(f"starting a {self.kind} failed", extra={"worker": child.name})

    def begin_stop(self) -> None:
        """SIGTERM every child, so they stop gracefully while the parent does too."""
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
